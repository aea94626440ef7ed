"""Browse page: pick labels, page through the run's stored thumbnails, open one larger with its full path."""

import streamlit as st

from doggos import store, ui

if "runs_root" not in st.session_state:  # opened by URL before app.py ever ran (Streamlit's pages/ quirk)
    st.session_state["deep_link"] = "pages/browse.py"
    st.switch_page("app.py")  # app.py draws the frame, then comes back here

st.title("Browse")
run = st.session_state["current_run"]  # app.py shows this page only when there is one


@st.cache_data(max_entries=8, show_spinner="Reading the run's table…")
def index_of(run_path: str, version: int):
    return store.load_index(run_path)


@st.cache_data(max_entries=64, show_spinner=False)
def thumbnails_of(run_path: str, version: int, rows: tuple[int, ...]) -> dict[int, bytes]:
    return dict(zip(rows, store.load_thumbnails(run_path, rows)))


@st.cache_data(max_entries=32)
def detail_of(path: str, thumbnail: bytes) -> tuple[bytes, str, tuple[int, int]]:
    return store.detail_image(path, thumbnail)


def back_to_first_page() -> None:
    st.session_state["browse_page"] = 1


run_path, version = str(run.path), store.run_version(run.path)
index = index_of(run_path, version)
counts = store.label_counts(index)
count_of = dict(zip(counts["label"], counts["images"]))

labels_col, name_col, size_col = st.columns([4, 2, 1])
chosen = labels_col.multiselect(
    "Labels", sorted(count_of), key="browse_labels", placeholder=f"All {len(count_of)} labels",
    format_func=lambda label: f"{label} ({count_of[label]:,})", on_change=back_to_first_page,
)
name_filter = name_col.text_input("File name contains", key="browse_name", on_change=back_to_first_page)
page_size = size_col.selectbox("Per page", ui.PAGE_SIZES, index=1, key="browse_page_size", on_change=back_to_first_page)

rows = store.filter_index(index, chosen, name_filter)
pages = ui.page_count(len(rows), page_size)
if st.session_state.get("browse_page", 1) > pages:
    st.session_state["browse_page"] = 1
window = ui.page_slice(len(rows), st.session_state.get("browse_page", 1), page_size)
shown = rows.iloc[window]
thumbnails = thumbnails_of(run_path, version, tuple(int(r) for r in shown["row"]))



@st.dialog("Image", width="large")
def show_image(row: int) -> None:
    item = index.iloc[row]
    image, origin, size = detail_of(item["path"], thumbnails_of(run_path, version, (row,))[row])
    picture, facts = st.columns(2, gap="medium")
    picture.image(image, width=ui.detail_width(size))
    with facts:
        st.markdown("**Label**")
        st.text(item["label"])
        st.markdown("**Full path**")
        st.code(item["path"], language=None, wrap_lines=True)
        st.caption(f"Original size {item['width']} × {item['height']} px · shown: {origin}")


if rows.empty:
    st.warning("No image matches these filters.")
else:
    label_total = len(chosen) or len(count_of)
    st.caption(f"Images {window.start + 1:,}–{window.stop:,} of {len(rows):,} "
               f"from {label_total} label{'s' if label_total != 1 else ''} · press **View** to see one larger")
    gallery = st.grid(columns="auto", min_column_width=130, gap="small", border=True)
    for item in shown.itertuples():
        with gallery.cell():
            st.image(thumbnails[item.row], caption=ui.caption_for(item.label, item.name), width="stretch")
            if st.button("View", key=f"view-{item.row}", type="tertiary", icon=":material/zoom_in:"):
                show_image(item.row)
if pages > 1:
    st.pagination(pages, key="browse_page", max_visible_pages=9)
