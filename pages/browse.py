"""Browse page: pick labels, page through the run's stored thumbnails, open one larger with its full path."""

import streamlit as st

from dashboard import frame, ui
from doggos.base import store

run = frame.start_page(__file__, "Browse")
index = frame.run_index(run)
counts = store.label_counts(index)
count_of = dict(zip(counts["label"], counts["images"]))


def back_to_first_page() -> None:
    frame.first_page("browse_page")


labels_col, name_col, size_col = st.columns([4, 2, 1])
chosen = labels_col.multiselect(
    "Labels", sorted(count_of), key="browse_labels", placeholder=f"All {len(count_of)} labels",
    format_func=lambda label: f"{label} ({count_of[label]:,})", on_change=back_to_first_page,
)
name_filter = name_col.text_input("File name contains", key="browse_name", on_change=back_to_first_page)
page_size = size_col.selectbox("Per page", ui.PAGE_SIZES, index=1, key="browse_page_size", on_change=back_to_first_page)

rows = store.filter_index(index, chosen, name_filter)
if rows.empty:
    st.warning("No image matches these filters.")
    st.stop()
window = frame.page_window(len(rows), "browse_page", page_size)
label_total = len(chosen) or len(count_of)
st.caption(f"Images {window.start + 1:,}–{window.stop:,} of {len(rows):,} "
           f"from {label_total} label{'s' if label_total != 1 else ''} · press **View** to see one larger")
frame.thumbnail_grid(run, rows.iloc[window], on_view=lambda row: frame.image_dialog(run, row), key="browse")
frame.pager(len(rows), "browse_page", page_size)
