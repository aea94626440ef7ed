"""Run summary page: what the current run produced, with which model, where its Parquet is, and what Ray did."""

import pandas as pd
import streamlit as st

from dashboard import frame, ui, workshop
from doggos.base import store, units
from doggos.pipeline import figures

run = frame.start_page(__file__, "Run summary")
manifest = run.manifest
counts = frame.label_counts(run)
failures = store.read_failures(run.path)
st.caption(f"{ui.markdown_literal(ui.run_name(run))} · finished "
           f"{ui.markdown_literal((run.ended_at or '')[:19].replace('T', ' '))} UTC · run id, for the CLI (copy "
           "button on the right; any part only this run's id has, or the name, works too):")
st.code(run.id, language=None, width="content")  # copyable: the CLI's name for this run
frame.random_weights_warning(run, "its embeddings, and so the map,", many=True)

images, labels, dim, failed = st.columns(4)
images.metric("Images embedded" if manifest.reuse_text() is None else "Images", units.count(manifest.rows))
if manifest.reuse_text():  # an update, or a resumed run: how many rows it carried over rather than embedded
    st.caption(ui.markdown_literal(run.story()))
labels.metric("Labels", units.count(len(counts)))
dim.metric("Dimension", manifest.embedding_dim, help="Length of each embedding vector")
failed.metric("Failed files", units.count(len(failures)))
duration, embedding, rate, _ = st.columns(4)
duration.metric("Duration", ui.format_duration(manifest.duration_s),
                help="The whole run: listing, Ray's start, embedding and the post-run steps")
embedding.metric("Embedding time", ui.format_duration(manifest.embed_s),
                 help="From the start to the published Parquet: listing, Ray's start, model loading and embedding")
rate.metric(figures.RUN_RATE, units.rate(manifest.images_per_s),
            help=figures.RUN_RATE_HELP + ": the figure the live view ended on, History's and Compare's")
if manifest.steps:
    st.caption("Post-run steps: " + ", ".join(
        f"{name} " + (f"in {ui.format_duration(seconds)}" if seconds is not None else "failed (its page retries)")
        for name, seconds in manifest.steps.items()))

model_col, source_col = st.columns(2)
with model_col:
    st.markdown("**Model**")
    st.text(manifest.model_description)
with source_col:
    st.markdown("**Source**")
    st.text(manifest.source)

st.subheader("Images per label")
index = frame.run_index(run)
excluded = index["excluded"].to_numpy(dtype=bool)
relabelled = 0 if frame.labels_version(run) == (0, 0) else int(  # no decisions log: nothing to count
    ((index["label"].fillna("") != index["folder_label"].fillna("")).to_numpy(dtype=bool) & ~excluded).sum())
if relabelled or excluded.any():
    st.caption(f"Labels as decided: {units.count(relabelled, 'image')} relabelled, "
               f"{units.count(excluded.sum())} excluded from the dataset and left out of these counts.")
chart_height = max(160, min(24 * len(counts) + 60, 3000))  # room for every label's name (120 breeds: 2,940 px)
st.bar_chart(counts, x="label", y="images", horizontal=True, sort="-images", height=chart_height)
with st.expander("Counts as a table"):
    st.dataframe(counts, hide_index=True, column_config={"label": "Label", "images": "Images"})

st.subheader("Where the embeddings are")
embeddings_path = manifest.embeddings_path
st.code(embeddings_path, language=None, wrap_lines=True)
snippets = store.loading_snippets(embeddings_path)
pandas_tab, ray_tab = st.tabs(["pandas", "Ray Data"])
pandas_tab.code(snippets["pandas"], language="python")
ray_tab.code(snippets["ray"], language="python")
st.caption("Columns: `path` (full URI or local path), `class` (label), `embedding` (float32 vector), "
           "`thumbnail` (JPEG bytes), `width`, `height`.")

st.subheader(f"Failed files ({units.count(len(failures))})")
if failures:
    st.dataframe(pd.DataFrame(failures, columns=["path", "reason"]), hide_index=True,
                 column_config={"path": st.column_config.TextColumn("Path", width="large"), "reason": "Reason"})
else:
    st.caption("Every image was read and embedded.")

st.subheader("What Ray did")
plan, cluster = manifest.plan, manifest.ray
stats_text = store.read_ray_stats(run.path)
operators = store.parse_operator_stats(stats_text)
plan_text = store.execution_plan(store.read_log(run.path, output=True)) or store.operator_chain(operators)
if plan_text:
    st.markdown("**Execution plan**")
    st.code(plan_text, language=None, wrap_lines=True)
    st.caption("Operators joined by `->` were fused by Ray Data into one task; `→` separates operators.")
plan_col, cluster_col = st.columns(2)
with plan_col:
    st.markdown("**Resource plan**")
    st.caption(plan.describe())
    st.dataframe(pd.DataFrame(ui.settings_rows(plan)), hide_index=True)
with cluster_col:
    st.markdown("**Cluster**")
    rows = [row for row in ui.settings_rows(cluster) if row["setting"] not in ("dashboard_url", "embedded_by_node")]
    st.dataframe(pd.DataFrame(rows + [{"setting": "embedded on", "value": cluster.work_by_node()}]), hide_index=True)
    if cluster.dashboard_url:
        st.link_button("Open the Ray dashboard", cluster.dashboard_url, icon=":material/open_in_new:")
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
            "rows": st.column_config.NumberColumn(
                "Rows", help="Rows each operator handed on; a Write's are the rows it wrote (it hands on one row per "
                             "file, counted under Files)"),
            "files": st.column_config.NumberColumn("Files", help="Parquet files a Write wrote"),
        },
        column_order=store.OPERATOR_COLUMNS,
    )
workshop.timeline_chart(run)
with st.expander("Ray Data statistics (ray_stats.txt)", expanded=not operators):
    st.code(stats_text or "(no ray_stats.txt in this run)", language=None)
with st.expander("Run log (log.txt): what doggos did"):
    st.code(ui.plain_log(store.read_log(run.path)) or "(empty)", language=None, height=400)
with st.expander("Driver output (output.txt): Ray's own messages"):
    st.code(ui.plain_log(store.read_log(run.path, output=True)) or "(none: a foreground run prints to its terminal)",
            language=None, height=400)
with st.expander("Manifest (manifest.json)"):
    st.json(manifest.to_dict(), expanded=1)
