"""Run summary page: what the current run produced, with which model, where its Parquet is, and what Ray did."""

import pandas as pd
import streamlit as st

from doggos import store, ui

if "runs_root" not in st.session_state:  # opened by URL before app.py ever ran (Streamlit's pages/ quirk)
    st.session_state["deep_link"] = "pages/summary.py"
    st.switch_page("app.py")  # app.py draws the frame, then comes back here

st.title("Run summary")
run = st.session_state["current_run"]  # app.py shows this page only when there is one


@st.cache_data(max_entries=8, show_spinner="Reading the run's table…")
def index_of(run_path: str, version: int):
    return store.load_index(run_path)


manifest = run.manifest or store.read_manifest(run.path)
index = index_of(str(run.path), store.run_version(run.path))
counts = store.label_counts(index)
failures = store.read_failures(run.path)
st.caption(f"Run {run.id} · finished {ui.markdown_literal((run.ended_at or '')[:19].replace('T', ' '))}")

if manifest.get("random_weights"):
    st.warning("This run used a model with **random weights** (the demo kit's): it shows how the pipeline works, "
               "but its embeddings, and so the map, carry no meaning. Use a trained CLIP for real results.",
               icon=":material/warning:")

images, labels, dim, duration, rate, failed = st.columns(6)
images.metric("Images embedded", f"{manifest.get('rows', len(index)):,}")
labels.metric("Labels", f"{len(counts):,}")
dim.metric("Embedding dimension", manifest.get("embedding_dim", "–"))
duration.metric("Duration", ui.format_duration(manifest.get("duration_s")),
                help="Start to finish" + (f", of which {manifest['projection_s']:.1f} s for the default map"
                                          if manifest.get("projection_s") else ""))
rate.metric("Images/s", f"{manifest.get('images_per_s', 0):.1f}", help="Images embedded per second, start to finish")
failed.metric("Failed files", f"{len(failures):,}")

model_col, source_col = st.columns(2)
with model_col:
    st.markdown("**Model**")
    st.text(manifest.get("model_description") or manifest.get("model", ""))
with source_col:
    st.markdown("**Source**")
    st.text(manifest.get("source") or run.config.get("source", ""))

st.subheader("Images per label")
chart_height = max(160, min(24 * len(counts) + 60, 3000))  # room for every label's name (120 breeds: 2,940 px)
st.bar_chart(counts, x="label", y="images", horizontal=True, sort="-images", height=chart_height)
with st.expander("Counts as a table"):
    st.dataframe(counts, hide_index=True, column_config={"label": "Label", "images": "Images"})

st.subheader("Where the embeddings are")
embeddings_path = manifest.get("embeddings_path") or str(run.path / "embeddings")
st.code(embeddings_path, language=None, wrap_lines=True)
snippets = store.loading_snippets(embeddings_path)
pandas_tab, ray_tab = st.tabs(["pandas", "Ray Data"])
pandas_tab.code(snippets["pandas"], language="python")
ray_tab.code(snippets["ray"], language="python")
st.caption("Columns: `path` (full URI or local path), `class` (label), `embedding` (float32 vector), "
           "`thumbnail` (JPEG bytes), `width`, `height`.")

st.subheader(f"Failed files ({len(failures):,})")
if failures:
    st.dataframe(pd.DataFrame(failures, columns=["path", "reason"]), hide_index=True,
                 column_config={"path": st.column_config.TextColumn("Path", width="large"), "reason": "Reason"})
else:
    st.caption("Every image was read and embedded.")

st.subheader("What Ray did")
plan, cluster = manifest.get("plan") or {}, manifest.get("ray") or {}
stats_text = store.read_ray_stats(run.path)
operators = store.parse_operator_stats(stats_text)
plan_text = store.execution_plan(store.read_log(run.path)) or store.operator_chain(operators)
if plan_text:
    st.markdown("**Execution plan**")
    st.code(plan_text, language=None, wrap_lines=True)
    st.caption("Operators joined by `->` were fused by Ray Data into one task; `→` separates operators.")
plan_col, cluster_col = st.columns(2)
with plan_col:
    st.markdown("**Resource plan**")
    if plan:
        st.dataframe(pd.DataFrame({"setting": list(plan), "value": [str(v) for v in plan.values()]}), hide_index=True)
    else:
        st.caption("Not recorded.")
with cluster_col:
    st.markdown("**Cluster**")
    if cluster:
        shown = {key: value for key, value in cluster.items() if key not in ("dashboard_url", "embedded_by_node")}
        shown["embedded on"] = store.work_by_node(cluster)
        st.dataframe(pd.DataFrame({"setting": list(shown), "value": [str(v) for v in shown.values()]}), hide_index=True)
    if cluster.get("dashboard_url"):
        st.link_button("Open the Ray dashboard", cluster["dashboard_url"], icon=":material/open_in_new:")
    else:
        st.caption("No Ray dashboard was recorded for this run: the embedded local Ray, and clusters started "
                   "without `ray[default]`, run without one.")
if operators:
    st.markdown("**Per-operator statistics**")
    st.dataframe(
        pd.DataFrame(operators), hide_index=True,
        column_config={
            "operator": st.column_config.NumberColumn("#", width="small"),
            "name": st.column_config.TextColumn("Operator", width="large"),
            "wall_s": st.column_config.NumberColumn("Wall time (s)", format="%.2f"),
            "cpu_s": st.column_config.NumberColumn("Task CPU time (s)", format="%.2f"),
            "tasks": st.column_config.NumberColumn("Tasks"),
            "blocks": st.column_config.NumberColumn("Blocks"),
            "rows_out": st.column_config.NumberColumn("Rows out"),
        },
    )
with st.expander("Ray Data statistics (ray_stats.txt)", expanded=not operators):
    st.code(stats_text or "(no ray_stats.txt in this run)", language=None)
with st.expander("Run log (log.txt)"):
    st.code(ui.plain_log(store.read_log(run.path)) or "(empty)", language=None, height=400)
with st.expander("Manifest (manifest.json)"):
    st.json(manifest, expanded=1)
