"""Browse page: pick labels, page through the run's stored thumbnails, open one larger with its full path."""

import streamlit as st

from dashboard import frame, ui

run = frame.start_page(__file__, "Browse")
counts = frame.label_counts(run)
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

# Positions of the matching rows, cached per filter; only the shown page is put in label, path order (the whole
# order is sorted once per run, when a page past the first few thousand rows asks for it).
matching = frame.matching_rows(run, chosen, name_filter)
total = len(frame.run_index(run)) if matching is None else len(matching)
if not total:
    st.warning("No image matches these filters.")
    st.stop()
window = frame.page_window(total, "browse_page", page_size)
label_total = len(chosen) or len(count_of)
st.caption(f"Images {window.start + 1:,}–{window.stop:,} of {total:,} "
           f"from {label_total} label{'s' if label_total != 1 else ''} · press **View** to see one larger")
frame.thumbnail_grid(run, frame.ordered_page(run, matching, window), on_view=lambda row: frame.image_dialog(run, row),
                     key="browse")
frame.pager(total, "browse_page", page_size)
