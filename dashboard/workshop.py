"""Workshop mode (the Streamlit side of doggos.pipeline.operators): Ray Data's plan live per operator, its timeline."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard import operator_notes, ui
from doggos.pipeline import operators

TITLES = {"read": "Read", "label": "Label", "decode": "Decode", "embed": "Embed", "write": "Write", "map": "Map"}
STALE_AFTER_S = 10.0  # a running pipeline's newest sample older than this: say how old (the driver may be stuck)
NOT_YET = ("Ray Data's operators show here once the pipeline starts executing (after listing the images, starting "
           "Ray and loading the model).")


def steps(kinds: list[str]) -> str:
    """'Label + Embed': the steps a (fused) operator runs, in order."""
    return " + ".join(TITLES.get(kind, kind) for kind in dict.fromkeys(kinds or ["map"]))


def title(operator: operators.OperatorSnapshot) -> str:
    """'Label + Embed · actor pool': what a (fused) operator does and how Ray runs it."""
    return f"{steps(operator.kinds)} · {'actor pool' if operator.actors is not None else 'tasks'}"


def size(count: int | None) -> str:
    """Bytes as people read them: 0 B, 12 KB, 3.4 MB, 1.2 GB; a dash when unknown."""
    if count is None:
        return "–"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def workers(operator: operators.OperatorSnapshot) -> str:
    """Who does the work now: 'Tasks running: 2', or 'Actors: 1 of 2 up (1 starting) · batches in flight: 2'."""
    if operator.actors is None:
        return f"Tasks running: {operator.tasks}"
    text = f"Actors: {operator.actors} of {operator.pool_size if operator.pool_size is not None else '?'} up"
    if operator.pending_actors:
        text += f" ({operator.pending_actors} starting)"
    return f"{text} · batches in flight: {operator.tasks}"


def live_operators(run) -> None:
    """The running plan, one bordered card per operator (rows, rows/s, workers, queue, object store, why it is
    built so), then each node's share of the embedding. Draws no widgets: the Run page refreshes it every second."""
    snapshot = operators.latest(run)
    if snapshot is None:
        st.caption(NOT_YET)
        return
    if snapshot.state == "unavailable":
        st.caption(f"Ray Data's live operator view is not available: {ui.markdown_literal(snapshot.note or '')}")
        return
    age = time.time() - snapshot.time
    status = "finished" if snapshot.state == "finished" else "running"
    stale = f" · last sample {age:.0f} s ago" if snapshot.state == "running" and age > STALE_AFTER_S else ""
    st.markdown(f"**Ray Data, live** · {status} for {snapshot.elapsed_s:.0f} s{stale}")
    st.caption("What Ray Data's executor reports (the numbers its progress bars print), every second: "
               f"{' → '.join(title(op) for op in snapshot.operators)}.")
    # Every row of the plan passes every operator: the first operator's known total is the others' total too (a
    # write's own total counts files, not rows).
    plan_total = next((op.rows_total for op in snapshot.operators if op.rows_total and op.kind != "write"), None)
    cards = st.columns(max(1, len(snapshot.operators)), gap="small")
    for card, operator in zip(cards, snapshot.operators):
        with card.container(border=True):
            _operator_card(operator, plan_total)
    if any(op.backpressured for op in snapshot.operators):
        st.caption(operator_notes.BACKPRESSURE_NOTE)
    store = f"Object store in use: {size(snapshot.object_store_bytes)}"
    if snapshot.object_store_limit:
        store += f" of the {size(snapshot.object_store_limit)} Ray Data may use"
    st.caption(store + ": blocks between operators live there until the next operator takes them.")
    _nodes(snapshot)


def _operator_card(operator: operators.OperatorSnapshot, total: int | None) -> None:
    st.markdown(f"**{operator.index + 1}. {title(operator)}**")
    st.caption(ui.markdown_literal(operator.name))
    if operator.backpressured:
        st.badge("backpressured", icon=":material/traffic:", color="orange")
    elif operator.done:
        st.badge("done", icon=":material/check:", color="green")
    if total:
        st.progress(min(1.0, operator.rows_done / total), text=f"{operator.rows_done:,} / {total:,} rows")
    else:
        st.markdown(f"{operator.rows_done:,} rows")
    st.metric("Rows/s", "–" if operator.rows_per_s is None else f"{operator.rows_per_s:.1f}")
    st.markdown(f"{workers(operator)}  \nQueued: {operator.queued_blocks} blocks ({size(operator.queued_bytes)})  \n"
                f"Object store: {size(operator.object_store_bytes)}")
    st.caption(operator_notes.explain(operator))


def _nodes(snapshot: operators.PipelineSnapshot) -> None:
    """Each node's embedder actors and rows: how much of the embedding it is doing."""
    if not snapshot.nodes:
        return
    rows = [node.rows or 0 for node in snapshot.nodes]
    table = pd.DataFrame({
        "node": [node.name for node in snapshot.nodes],
        "embedder actors": [node.actors for node in snapshot.nodes],
        "batches in flight": [node.busy for node in snapshot.nodes],
        "rows embedded": [node.rows for node in snapshot.nodes],
        "share": [row / sum(rows) if sum(rows) else None for row in rows],
    })
    st.markdown("**Per node**")
    st.dataframe(table, hide_index=True, column_config={
        "share": st.column_config.ProgressColumn("share of the rows", format="percent", min_value=0.0, max_value=1.0),
    })


def timeline_series(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows/s, rows done) per operator over time: index seconds since the pipeline started, a column per operator.

    Cached per version of the samples file: a long run's file holds thousands of lines."""
    path = operators.operators_path(run)
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        version = 0
    return _series(str(path.parent), version)


@st.cache_data(max_entries=8, show_spinner=False)
def _series(run_path: str, version: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = operators.timeline(run_path)
    if frame.empty:
        return frame, frame
    datasets = list(dict.fromkeys(frame["dataset"]))
    titles = {}
    for (dataset, index), group in frame.groupby(["dataset", "index"], sort=False):
        label = f"{index + 1}. {steps(operators.kinds_of(group['operator'].iloc[-1]))}"
        titles[(dataset, index)] = label if len(datasets) == 1 else f"dataset {datasets.index(dataset) + 1}, {label}"
    frame = frame.assign(series=[titles[key] for key in zip(frame["dataset"], frame["index"])])
    rate = frame.pivot_table(index="elapsed_s", columns="series", values="rows_per_s", aggfunc="last", sort=False)
    done = frame.pivot_table(index="elapsed_s", columns="series", values="rows_done", aggfunc="last", sort=False)
    return rate, done


def timeline_chart(run) -> None:
    """The run's saved operator timeline, for the Run summary: rows/s (and rows done) per operator over time."""
    rate, done = timeline_series(run)
    if rate.empty:
        st.caption("No operator timeline was saved for this run (runs from before workshop mode have none).")
        return
    st.markdown("**Operators over time**")
    per_second, cumulative = st.tabs(["Rows/s", "Rows done"])
    with per_second:
        st.line_chart(rate, x_label="seconds since the pipeline started", y_label="rows/s")
    with cumulative:
        st.line_chart(done, x_label="seconds since the pipeline started", y_label="rows done")
    st.caption("Sampled every second from Ray Data's executor while the run went. A flat start is Ray starting "
               "workers and the embedder actors loading the model; the read runs ahead until backpressure holds it.")
