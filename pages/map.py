"""Map page: a 2-D UMAP (or PCA) of the run's embeddings; box or lasso a region to see its images below."""

import functools

import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from dashboard import frame, quality_view, ui
from doggos.base import store
from doggos.base.rundir import run_dir_of
from doggos.explore import projection, search
from doggos.explore.projection import MAP
from doggos.explore.quality import DEFAULT_PARAMS as QUALITY_DEFAULTS
from doggos.explore.quality_step import QUALITY

PALETTE = qualitative.Dark24 + qualitative.Light24  # 48 distinct colours before any repeats
SELECTION_PAGE_SIZE = 36
NEIGHBOURS_SHOWN = 8  # beside the map for a clicked point; Search shows more

run = frame.start_page(__file__, "Map")
frame.random_weights_warning(run, "where points land")


@st.cache_data(max_entries=16, show_spinner="Reading the projection…")
def projection_of(path: str, mtime_ns: int):
    return projection.load(path)


params = st.session_state.get("map_params", projection.DEFAULT_PARAMS)
with st.form("map_params_form"):
    method_col, neighbors_col, dist_col, metric_col, apply_col = st.columns([1.3, 2, 2, 1.2, 0.8], vertical_alignment="bottom")
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
    units=("UMAP computes", "UMAPs compute"))
points, info = projection_of(str(state.path), state.path.stat().st_mtime_ns)
seconds = info.get("seconds")


@st.cache_data(max_entries=8, show_spinner=False)
def agreement_of(folder: str, quality_name: str, mtime_ns: int, _quality_params):
    return quality_view.read_agreement(folder, _quality_params)


# "label agreement" colours by the Quality page's current parameters (its defaults until it applies others).
quality_params = st.session_state.get(frame.QUALITY_PARAMS, QUALITY_DEFAULTS)
quality_state = QUALITY.status(run.path, quality_params)
colour_col, caption_col = st.columns([2.4, 3], vertical_alignment="center")
colour = colour_col.segmented_control(
    "Colour by", ["label", "agreement"], default="label", key="map_colour",
    format_func={"label": "Label", "agreement": "Label agreement"
                 + {"ready": "", "running": " (computing…)"}.get(quality_state.state, " (not computed)")}.get,
    help="Label agreement: the share of each image's nearest neighbours filed under its own label (the Quality page's "
         "k). Low agreement, a likely misfiled image, shows in red.")
by_agreement = colour == "agreement" and quality_state.state == "ready"
caption_col.caption(f"{len(points):,} points · {ui.markdown_literal(info.get('method', params.method))}"
                    + (f" · computed in {seconds:.1f} s" if seconds else "")
                    + (" · red: neighbours mostly carry another label; larger: likely mislabeled" if by_agreement
                       else " · click a legend entry to hide a label, double-click to show it alone"))
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

figure = go.Figure()
trace_rows = []
if by_agreement:
    agreement = agreement_of(str(run_dir_of(run).quality), quality_params.name, quality_state.path.stat().st_mtime_ns,
                             quality_params)
    trace, drawn_rows = quality_view.agreement_trace(points, agreement)
    figure.add_trace(trace)
    trace_rows.append(drawn_rows)
else:
    for number, (label, group) in enumerate(points.groupby("label", sort=True)):
        trace_rows.append(group["row"].tolist())
        names = [ui.plotly_literal(store.file_name(path)) for path in group["path"]]
        figure.add_trace(go.Scattergl(
            x=group["x"].to_numpy(), y=group["y"].to_numpy(), mode="markers", name=ui.plotly_literal(label),
            customdata=group["row"].to_numpy(), hovertext=[f"<b>{ui.plotly_literal(label)}</b><br>{n}" for n in names],
            hoverinfo="text", marker={"size": 7, "opacity": 0.85, "color": PALETTE[number % len(PALETTE)]},
        ))
figure.update_layout(
    height=640, margin={"l": 10, "r": 10, "t": 36, "b": 10}, dragmode="lasso", hovermode="closest",
    legend={"title": {"text": "Label"}, "itemsizing": "constant"},
    # The axes of a UMAP have no units: no ticks, no grid, just the shape.
    xaxis={"showticklabels": False, "showgrid": False, "title": None, "zeroline": False},
    yaxis={"showticklabels": False, "showgrid": False, "title": None, "zeroline": False},
)


def remember_selection(chart_key: str, rows_by_trace: list[list[int]]) -> None:
    event = st.session_state.get(chart_key) or {}
    chosen = ui.selected_row_ids((event.get("selection") or {}).get("points", []), rows_by_trace)
    st.session_state["map_selection"] = {"run": run.id, "rows": chosen}
    frame.first_page("map_selection_page")


selection = st.session_state.get("map_selection") or {}
chosen_rows = [row for row in selection.get("rows", []) if row < len(points)] if selection.get("run") == run.id else []
chart_key = f"map_chart-{st.session_state.get('map_chart_generation', 0)}"  # a new key clears the drawn selection
chart_col, side = st.columns([3, 1]) if len(chosen_rows) == 1 else (st.container(), None)
chart_col.plotly_chart(figure, key=chart_key, on_select=functools.partial(remember_selection, chart_key, trace_rows),
                       selection_mode=("points", "box", "lasso"), config={"displaylogo": False, "scrollZoom": True})

if side is not None:  # one point clicked: it and its nearest neighbours, beside the map
    row = chosen_rows[0]
    item = frame.run_index(run).iloc[row]
    with side:
        st.image(frame.thumbnails(run, (row,))[row], caption=ui.caption_for(item["label"], item["name"]), width="stretch")
        neighbours = search.by_row(search.load_index(run.path), row, k=NEIGHBOURS_SHOWN)
        st.markdown(f"**Nearest neighbours** · {ui.markdown_literal(search.label_summary(neighbours))}")
        shown = frame.run_index(run).iloc[[hit.row for hit in neighbours]]
        frame.thumbnail_grid(run, shown, captions=[ui.caption_for(f"{hit.score:.3f} · {hit.label}",
                                                                  store.file_name(hit.path)) for hit in neighbours],
                             key="map-neighbours")
        if st.button("More like this", icon=":material/image_search:", key="map-more-like-this", width="stretch"):
            frame.more_like_this(run, row)
    st.caption("Click another point, or draw a lasso around several to list their images.")
    st.stop()
if not chosen_rows:
    st.caption("Click a point to see its nearest neighbours; draw a lasso (or pick the box tool in the chart's toolbar) "
               "around points to see their images here.")
    st.stop()

chosen = points.set_index("row").loc[chosen_rows].reset_index()
head_col, download_col, clear_col = st.columns([3, 1, 1], vertical_alignment="center")
head_col.subheader(f"{len(chosen):,} selected image{'s' if len(chosen) != 1 else ''}")
download_col.download_button("Download CSV", ui.selection_csv(chosen), file_name=f"map-selection-{run.id}.csv",
                             mime="text/csv", icon=":material/download:", width="stretch")
if clear_col.button("Clear selection", icon=":material/deselect:", width="stretch"):
    st.session_state.pop("map_selection", None)
    st.session_state["map_chart_generation"] = st.session_state.get("map_chart_generation", 0) + 1
    st.rerun()
per_label = chosen.groupby("label").size().sort_values(ascending=False)
table_col, _ = st.columns([1, 2])
table_col.dataframe(per_label.rename("images").rename_axis("label").reset_index(), hide_index=True,
                    height=min(35 * len(per_label) + 38, 220))

window = frame.page_window(len(chosen), "map_selection_page", SELECTION_PAGE_SIZE)
frame.thumbnail_grid(run, chosen.iloc[window], key="map")
frame.pager(len(chosen), "map_selection_page", SELECTION_PAGE_SIZE)
