"""Browse page: pick labels, page through the run's stored thumbnails, open one larger with its full path; select
some to decide their labels in bulk. Labels are the effective ones; excluded images show only on request."""

import streamlit as st

from dashboard import decide, frame, ui
from doggos.base import units

run = frame.start_page(__file__, "Browse")


def back_to_first_page() -> None:
    frame.first_page("browse_page")


labels_col, name_col, size_col, excluded_col = st.columns([3.6, 2, 1, 1.6], vertical_alignment="bottom")
show_excluded = excluded_col.toggle("Show excluded", key="browse_show_excluded", on_change=back_to_first_page,
                                    help="Also show the images a label decision excluded from the dataset")
counts = frame.label_counts(run, include_excluded=show_excluded)
count_of = dict(zip(counts["label"], counts["images"]))
# A label picked earlier stays offered when its images left the view (all relabelled or excluded): no pick is lost.
offered = sorted(set(count_of) | set(st.session_state.get("browse_labels", [])))
chosen = labels_col.multiselect(
    "Labels", offered, key="browse_labels", placeholder=f"All {units.count(len(count_of), 'label')}",
    format_func=lambda label: f"{label} ({units.count(count_of.get(label, 0))})", on_change=back_to_first_page,
)
name_filter = name_col.text_input("File name contains", key="browse_name", on_change=back_to_first_page)
page_size = size_col.selectbox("Per page", ui.PAGE_SIZES, index=1, key="browse_page_size", on_change=back_to_first_page)

# Positions of the matching rows, cached per filter; only the shown page is put in label, path order (the whole
# order is sorted once per run, when a page past the first few thousand rows asks for it).
index = frame.run_index(run)
matching = frame.matching_rows(run, chosen, name_filter, include_excluded=show_excluded)
selected = frame.selection(run, "browse")
if not show_excluded and selected:  # excluded since they were picked (the bulk bar's Exclude): out of view, unpicked
    selected -= {row for row in selected if index["excluded"].iat[row]}
total = len(index) if matching is None else len(matching)
if not total:
    st.warning("No image matches these filters.")
    st.stop()
window = frame.page_window(total, "browse_page", page_size)
page = frame.ordered_page(run, matching, window)
label_total = len(chosen) or len(count_of)
info_col, pick_col, clear_col = st.columns([4, 1, 1], vertical_alignment="center")
info_col.caption(f"Images {units.count(window.start + 1)}–{units.count(window.stop)} of {units.count(total)} "
                 f"from {units.count(label_total, 'label')} · press **View** to see one larger, tick "
                 "images to decide their labels together")
if pick_col.button("Select page", icon=":material/select_all:", width="stretch"):
    selected.update(int(row) for row in page["row"])
if clear_col.button("Clear selection", icon=":material/deselect:", width="stretch", disabled=not selected):
    selected.clear()
if selected:
    rows = sorted(selected)
    head_col, download_col = st.columns([4, 1], vertical_alignment="center")
    head_col.markdown(f"**{units.count(len(rows))} selected {units.plural(len(rows), 'image')}**")
    download_col.download_button("Download CSV", ui.selection_csv(index.iloc[rows]),
                                 file_name=f"browse-selection-{run.id}.csv", mime="text/csv",
                                 icon=":material/download:", width="stretch")
    decide.bulk_bar(run, rows, key="browse-bulk")
frame.thumbnail_grid(run, page, on_view=lambda row: frame.image_dialog(run, row), key="browse", selectable=True)
frame.pager(total, "browse_page", page_size)
