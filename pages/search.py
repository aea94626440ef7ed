"""Search page: the current run's images most like some words, an uploaded image, or one of its own images. Labels
are the effective ones; images a label decision excluded are left out of the results unless shown on request."""

import streamlit as st

from dashboard import frame, ui
from doggos.base import store, units
from doggos.explore import search
from doggos.pipeline import encoders

MODES = {"text": "Words", "upload": "An image file", "row": "An image of this run"}
FIELDS = {"text": "Words", "image": "Image file", "row": "Image of the run", "k": "Results",
          "labels": "Only these labels"}

run = frame.start_page(__file__, "Search")
frame.random_weights_warning(run, "the ranking")
model = run.manifest.model
paths = frame.run_index(run)  # the rows' paths and labels: the page draws from these, without the embeddings


def embeddings() -> search.SearchIndex:
    """The run's embeddings, read when a query first needs them (a 1,000,000-row run's are 2 GB and take seconds):
    the page and its form draw without them. Cached per run version, in doggos.explore.search."""
    with st.spinner("Reading the run's embeddings (once per run)…"):
        return search.load_index(run.path)


@st.cache_resource(show_spinner=False, max_entries=4)
def image_names(run_path: str, version: int) -> tuple[str, ...]:
    """The picker's options, one per row of the run at `run_path`: file names, 'label/name' where two labels share
    one. Once per run version (`version` keys the cache), shared by every session."""
    index = store.folder_index(run_path)  # names need the folders' labels only; at most PICK_BY_NAME_MAX rows
    return tuple(search.image_names(index["name"].tolist(), index["label"].tolist()))


@st.cache_resource(show_spinner="Loading the model's text tower…", max_entries=2)
def text_encoder(model: str):
    return encoders.text_encoder(model)


@st.cache_resource(show_spinner="Loading the model's image tower…", max_entries=2)
def image_encoder(model: str):
    return encoders.image_encoder(model)


# "More like this" from Browse, Map or Quality: a row of this run becomes the query.
request = st.session_state.pop(frame.SEARCH_REQUEST, None)
if request and request.get("run") == run.id:
    st.session_state["search_mode"], st.session_state["search_row"] = "row", int(request["row"])

st.session_state.setdefault("search_mode", "text")
mode = st.segmented_control("Search by", list(MODES), format_func=MODES.get, key="search_mode") or "text"
query_col, k_col, labels_col, excluded_col = st.columns([4, 1, 3, 1.2], vertical_alignment="bottom")
error_at = st.empty()
k = k_col.number_input("Results", min_value=1, max_value=search.MAX_K, value=12, key="search_k",
                       help=f"How many of the nearest images to show (1 to {units.count(search.MAX_K)}).")
# A label picked earlier stays offered when a decision took its last image: the search then says it has none.
offered = sorted(set(frame.label_names(run)) | set(st.session_state.get("search_labels", [])))
labels = labels_col.multiselect("Only these labels", offered, key="search_labels", placeholder="All labels")
show_excluded = excluded_col.toggle("Show excluded", key="search_show_excluded",
                                    help="Also find the images a label decision excluded from the dataset")

hits, query_note = None, ""
try:
    if mode == "text":
        text = query_col.text_input("Words", key="search_text", placeholder="a dog catching a frisbee",
                                    help="Embedded by the run's model's text tower exactly as typed: no template added.")
        if text.strip():
            encoder = text_encoder(model)  # first: a model that cannot load here costs no reading
            hits = search.by_text(embeddings(), encoder, text, k, labels, include_excluded=show_excluded)
            query_note = f"words: {text}"
    elif mode == "upload":
        upload = query_col.file_uploader("Image file", key="search_upload",
                                         help="Embedded with the run's model, exactly as the pipeline does. "
                                              "It is never stored.")
        if upload is not None:
            data = upload.getvalue()
            encoder = image_encoder(model)
            hits = search.by_image(embeddings(), encoder, data, k, labels, include_excluded=show_excluded)
            query_note = f"image file: {upload.name}"
    else:
        if not 0 <= st.session_state.get("search_row", 0) < len(paths):  # a row of a bigger run seen before
            st.session_state.pop("search_row")
        if len(paths) <= search.PICK_BY_NAME_MAX:  # type-ahead over the names: the options travel to the browser
            names = image_names(str(run.path), store.run_version(run.path))
            # required: the browser offers no clear; a cleared pick reaches the page as the first option (row 0),
            # so the page would search an image the empty picker does not show.
            row = query_col.selectbox("Image of the run", range(len(names)), key="search_row", required=True,
                                      format_func=names.__getitem__, placeholder="Type a file name",
                                      help="Type part of a file name to narrow the list (label/name where two labels "
                                           "hold one). Arrive here with More like this from Browse or the Map.")
        else:  # too many names to send to the browser on every rerun: the row, as Browse and the Map give it
            row = query_col.number_input("Row of the run", min_value=0, max_value=len(paths) - 1, step=1,
                                         key="search_row", help="Arrive here with More like this from Browse or the "
                                                                "Map; by name: `doggos search RUN --name FILE`.")
        item = paths.iloc[int(row)]
        picture, facts = query_col.columns([1, 3])
        picture.image(frame.thumbnails(run, (int(row),))[int(row)], width=96, caption="the query")
        facts.text(f"{ui.label_words(item['label'], item['folder_label'], item['excluded'])} · {item['name']}")
        hits = search.by_row(embeddings(), int(row), k, labels, include_excluded=show_excluded)
        query_note = f"this run's image {item['name']} (itself left out)"
except search.SearchError as error:  # bad input or a model that cannot load here: said under the query, nothing lost
    error_at.error(f"**{FIELDS.get(error.field, error.field)}** (`{error.field}`): {ui.markdown_literal(error.message)}")

if hits is None:
    if mode == "text":
        st.caption("Type a few words to find the images CLIP puts closest to them.")
    st.stop()
if not hits:
    st.warning("Nothing to show: no image has these labels.")
    st.stop()

summary_col, download_col = st.columns([4, 1], vertical_alignment="center")
summary_col.markdown(f"**{ui.markdown_literal(search.label_summary(hits))}** · for {ui.markdown_literal(query_note)} · "
                     "scores are cosine similarities")
download_col.download_button("Download CSV", search.hits_csv(hits), file_name=f"search-{run.id}.csv",
                             mime="text/csv", icon=":material/download:", width="stretch")
results = paths.iloc[[hit.row for hit in hits]]
captions = [ui.caption_for(f"{units.score(hit.score)} · {ui.label_words(hit.label, folder, out)}",
                           store.file_name(hit.path))
            for hit, folder, out in zip(hits, results["folder_label"], results["excluded"])]
frame.thumbnail_grid(run, results, captions=captions, on_view=lambda row: frame.image_dialog(run, row), key="search")
