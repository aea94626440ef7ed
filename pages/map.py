"""Map page: a 2-D UMAP (or PCA) of the run's embeddings, its points becoming their images as you zoom in; hover to
see an image, click to open it, box or lasso a region to list its images below and decide their labels in bulk.
Points are coloured by effective labels; images a label decision excluded are left out unless shown on request. An
updated run's map keeps its old run's places (new images join their neighbours) until **Recompute map** asks for a
fresh one."""

import streamlit as st

from dashboard import decide, frame, map_view, ui
from doggos.base import store, units
from doggos.base.rundir import run_dir_of
from doggos.explore import map_serving, projection
from doggos.explore.projection import MAP
from doggos.explore.quality import DEFAULT_PARAMS as QUALITY_DEFAULTS
from doggos.explore.quality_step import QUALITY, result_paths

SELECTION_PAGE_SIZE = 36
NEIGHBOURS_SHOWN = 8  # in a clicked image's dialog; Search shows more

run = frame.start_page(__file__, "Map")
frame.random_weights_warning(run, "where points land")


@st.cache_data(max_entries=16, show_spinner="Reading the map…")
def map_info(path: str, mtime_ns: int) -> dict:
    return projection.info(path)


@st.cache_data(max_entries=16, show_spinner=False)
def map_labels(run_path: str, map_name: str, mtime_ns: int, labels_version: tuple[int, int],
               show_excluded: bool) -> tuple[list[str], list[int]]:
    return map_serving.label_counts(run_dir_of(run_path), map_name, include_excluded=show_excluded)


params = st.session_state.get("map_params", projection.DEFAULT_PARAMS)
with st.form("map_params_form"):
    method_col, neighbors_col, dist_col, metric_col, apply_col = st.columns([1.3, 2, 2, 1.2, 0.8],
                                                                           vertical_alignment="bottom")
    method = method_col.segmented_control("Method", projection.METHODS, default=params.method, key="map_method",
                                          format_func={"umap": "UMAP", "pca": "PCA"}.get,
                                          help="UMAP keeps neighbourhoods; PCA is instant and linear.")
    n_neighbors = neighbors_col.slider("n_neighbors (UMAP)", 2, 100, params.n_neighbors, key="map_n_neighbors",
                                       help="Larger values favour global structure, smaller ones local clusters.")
    min_dist = dist_col.slider("min_dist (UMAP)", 0.0, 0.99, params.min_dist, step=0.01, key="map_min_dist",
                               help="How tightly UMAP may pack points together.")
    metric = metric_col.selectbox("Metric", projection.METRICS, index=projection.METRICS.index(params.metric),
                                  key="map_metric")
    if apply_col.form_submit_button("Apply", type="primary", width="stretch"):
        params = projection.ProjectionParams(n_neighbors, min_dist, metric, method or "umap")
        st.session_state["map_params"] = params

state = frame.ready_step(
    MAP, run, params, what=params.describe(),
    working=f"Computing {params.describe()} in the background{{elapsed}}. This page updates by itself when the map is "
            "ready. The first UMAP in a fresh process takes tens of seconds (numba compiles its code); after that, "
            "results are cached per run and parameters.",
    verbs=("UMAP computes", "UMAPs compute"))
info = map_info(str(state.path), state.path.stat().st_mtime_ns)
total, seconds = info.get("points", 0), info.get("seconds")
if info.get("placed_from"):  # an updated run's map keeps its old run's places (doggos.explore.map_carry)
    placed = info.get("placed", 0)
    carry_col, recompute_col = st.columns([5, 1.2], vertical_alignment="center")
    carry_col.caption(f"Images carried over from run {ui.markdown_literal(info['placed_from'])} keep their places; "
                      + (f"{units.count(placed)} new ones were placed" if placed != 1 else "1 new one was placed")
                      + " by their neighbours.")
    if recompute_col.button("Recompute map", icon=":material/refresh:", width="stretch",
                            help=f"A fresh {ui.markdown_literal(params.describe())} of this run alone, in the "
                                 "background: every point may move."):
        projection.recompute(run.path, params)
        st.rerun()

# "label agreement" colours by the Quality page's current parameters (its defaults until it applies others).
quality_params = st.session_state.get(frame.QUALITY_PARAMS, QUALITY_DEFAULTS)
quality_state = QUALITY.status(run.path, quality_params)
colour_col, caption_col, excluded_col = st.columns([2.4, 3, 1.1], vertical_alignment="center")
colour = colour_col.segmented_control(
    "Colour by", ["label", "agreement"], default="label", key="map_colour",
    format_func={"label": "Label", "agreement": "Label agreement"
                 + {"ready": "", "running": " (computing…)"}.get(quality_state.state, " (not computed)")}.get,
    help="Label agreement: the share of each image's nearest neighbours filed under its own label (the Quality page's "
         "k). Low agreement, a likely misfiled image, shows in red.")
by_agreement = colour == "agreement" and quality_state.state == "ready"
caption_col.caption(f"{units.count(total, 'point')} · {ui.markdown_literal(info.get('method', params.method))}"
                    + (f" · computed in {units.duration(seconds)}" if seconds else "")
                    + (" · red: neighbours mostly carry another label; larger: likely mislabeled" if by_agreement
                       else ""))
show_excluded = excluded_col.toggle("Show excluded", key="map_show_excluded",
                                   help="Also show the images a label decision excluded from the dataset")
if colour == "agreement" and quality_state.state == "running":

    @st.fragment(run_every=1.0)
    def wait_for_agreement() -> None:
        if QUALITY.status(run.path, quality_params).state != "running":
            st.rerun(scope="app")
        st.info(f"Label agreement ({ui.markdown_literal(quality_params.describe())}) is computing in the "
                "background; the colours change by themselves when it is ready.", icon=":material/hourglass_top:")

    wait_for_agreement()
elif colour == "agreement" and quality_state.state in ("missing", "failed"):
    why = (f"Computing it failed: {ui.markdown_literal(quality_state.error or 'unknown error')}. "
           if quality_state.state == "failed" else "")
    ask_col, go_col = st.columns([4, 1], vertical_alignment="center")
    ask_col.info(f"{why}Label agreement needs the run's label check "
                 f"({ui.markdown_literal(quality_params.describe())}), which is not there yet.",
                 icon=":material/info:")
    if go_col.button("Compute label agreement" if quality_state.state == "missing" else "Try again",
                     icon=":material/play_arrow:", width="stretch"):
        QUALITY.start(run.path, quality_params)
        st.rerun()

map_path = state.path
quality_path = result_paths(run_dir_of(run).quality, quality_params)[0] if by_agreement else None
labels_version = frame.labels_version(run)
labels, counts = map_labels(str(run.path), map_path.stem, map_path.stat().st_mtime_ns, labels_version, show_excluded)
# A selection is this run's rows as published: a run republished into the same folder (a new version) drops it.
version = store.run_version(run.path)
selection = st.session_state.get("map_selection") or {}
ours = selection.get("run") == run.id and selection.get("version", version) == version
chosen_rows = [row for row in selection.get("rows", []) if 0 <= row < total] if ours else []
left_out = None if show_excluded else map_serving.excluded_points(run_dir_of(run), map_path.stem)


def in_dataset(rows: list[int]) -> list[int]:
    return rows if left_out is None or not left_out.any() else [row for row in rows if not left_out[row]]


if len(kept := in_dataset(chosen_rows)) < len(chosen_rows):  # excluded since selected (the bulk bar's Exclude)
    chosen_rows = kept
    st.session_state["map_selection"] = {"run": run.id, "version": version, "rows": chosen_rows}
    st.session_state["map_selection_version"] = st.session_state.get("map_selection_version", 0) + 1  # resend it
data = map_view.component_data(run, map_path, labels, counts, "agreement" if by_agreement else "label", quality_path,
                               chosen_rows, st.session_state.get("map_selection_version", 0), labels_version,
                               show_excluded)
event = map_view.draw(data, key=f"map-{run.id}-{version}")
if event.selected is not None:  # a lasso or a box just closed: its rows (none: the selection is cleared)
    chosen_rows = in_dataset([row for row in event.selected if 0 <= row < total])
    st.session_state["map_selection"] = {"run": run.id, "version": version, "rows": chosen_rows}
    frame.first_page("map_selection_page")
if event.clicked is not None:
    frame.image_dialog(run, int(event.clicked), neighbours=NEIGHBOURS_SHOWN)

if not chosen_rows:
    st.caption("Hover a point to see its image; scroll to zoom in until the points become their images; click one to "
               "open it with its nearest neighbours. Pick **Lasso** or **Box** above the map to select a region and "
               "list its images here.")
    st.stop()

chosen = map_serving.map_rows(run_dir_of(run), map_path.stem, chosen_rows)
head_col, download_col, clear_col = st.columns([3, 1, 1], vertical_alignment="center")
head_col.subheader(f"{units.count(len(chosen))} selected {units.plural(len(chosen), 'image')}")
download_col.download_button("Download CSV", ui.selection_csv(chosen), file_name=f"map-selection-{run.id}.csv",
                             mime="text/csv", icon=":material/download:", width="stretch")
if clear_col.button("Clear selection", icon=":material/deselect:", width="stretch"):
    st.session_state.pop("map_selection", None)
    st.session_state["map_selection_version"] = st.session_state.get("map_selection_version", 0) + 1  # see map_view
    st.rerun()
decide.bulk_bar(run, chosen["row"].tolist(), key="map-bulk")
per_label = chosen.groupby("label").size().sort_values(ascending=False)
table_col, _ = st.columns([1, 2])
table_col.dataframe(per_label.rename("images").rename_axis("label").reset_index(), hide_index=True,
                    height=min(35 * len(per_label) + 38, 220))

window = frame.page_window(len(chosen), "map_selection_page", SELECTION_PAGE_SIZE)
frame.thumbnail_grid(run, chosen.iloc[window], key="map", on_view=lambda row: frame.image_dialog(
    run, row, neighbours=NEIGHBOURS_SHOWN))
frame.pager(len(chosen), "map_selection_page", SELECTION_PAGE_SIZE)
