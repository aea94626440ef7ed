"""Workshop mode (the Streamlit side of doggos.pipeline.operators): Ray Data's plan live per operator, its timeline."""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from dashboard import operator_notes, ui
from doggos.base import units
from doggos.pipeline import figures, operators

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


def workers(operator: operators.OperatorSnapshot) -> str:
    """Who does the work now: 'Tasks running: 2', or 'Actors: 1 of 2 up (1 starting) · batches in flight: 2'."""
    if operator.actors is None:
        return f"Tasks running: {units.count(operator.tasks)}"
    text = f"Actors: {units.count(operator.actors)} of {units.count(operator.pool_size)} up"
    if operator.pending_actors:
        text += f" ({units.count(operator.pending_actors)} starting)"
    return f"{text} · batches in flight: {units.count(operator.tasks)}"


def heading(snapshot: operators.PipelineSnapshot, now: float) -> str:
    """'Ray Data · running for 12 s', 'Ray Data · finished after 45 s'; a stale sample says how old it is."""
    if snapshot.state == "finished":
        return f"**Ray Data** · finished after {units.duration(snapshot.elapsed_s)}"
    age = now - snapshot.time
    stale = f" · last sample {units.duration(age)} ago" if age > STALE_AFTER_S else ""
    return f"**Ray Data** · running for {units.duration(snapshot.elapsed_s)}{stale}"


def live_operators(run) -> None:
    """The running plan, one bordered card per operator (rows, rows/s, workers, queue, object store, why it is
    built so), then each node's share of the embedding. Draws no widgets: the Run page refreshes it every second.

    Every frame draws the same elements in the same places (optional ones into placeholders): Streamlit replaces
    elements by position, so a frame with one element more or less shows the last frame's leftovers (a second
    "Per node") until it is drawn in full."""
    snapshot = operators.latest(run)
    if snapshot is None or snapshot.state == "unavailable":
        st.caption(NOT_YET if snapshot is None else
                   f"Ray Data's live operator view is not available: {ui.markdown_literal(snapshot.note or '')}")
        return
    st.markdown(heading(snapshot, time.time()))
    st.caption("What Ray Data's executor reports (the numbers its progress bars print), every second: "
               f"{' → '.join(title(op) for op in snapshot.operators)}.")
    # Every row of the plan passes every operator: the first operator's known total is the others' total too (a
    # write's own total counts files, not rows).
    plan_total = next((op.rows_total for op in snapshot.operators if op.rows_total and op.kind != "write"), None)
    cards = st.columns(max(1, len(snapshot.operators)), gap="small")
    for card, operator in zip(cards, snapshot.operators):
        with card.container(border=True):
            _operator_card(operator, plan_total)
    backpressure = st.empty()
    if any(op.backpressured for op in snapshot.operators):
        backpressure.caption(operator_notes.BACKPRESSURE_NOTE)
    store = f"Object store in use: {units.size(snapshot.object_store_bytes)}"
    if snapshot.object_store_limit:
        store += f" of the {units.size(snapshot.object_store_limit)} Ray Data may use"
    st.caption(store + ": blocks between operators live there until the next operator takes them.")
    _nodes(snapshot, st.empty())


def _operator_card(operator: operators.OperatorSnapshot, total: int | None) -> None:
    st.markdown(f"**{operator.index + 1}. {title(operator)}**")
    st.caption(ui.markdown_literal(operator.name))
    badge = st.empty()
    if operator.backpressured:
        badge.badge("backpressured", icon=":material/traffic:", color="orange")
    elif operator.done:
        badge.badge("done", icon=":material/check:", color="green")
    done = operators.rows_done_text(operator, total)
    if total:
        st.progress(min(1.0, operator.rows_done / total), text=done)
    else:
        st.markdown(done)
    # Ray's count, named as such: the top's Images/s is doggos' (figures), which runs ahead by up to a block.
    st.metric(f"Rows handed on/s · {figures.CURRENT_WINDOW}", units.rate(operator.rows_per_s))
    st.markdown(f"{workers(operator)}  \nQueued: {units.count(operator.queued_blocks, 'block')} "
                f"({units.size(operator.queued_bytes)})  \nObject store: {units.size(operator.object_store_bytes)}")
    st.caption(operator_notes.explain(operator))


def _nodes(snapshot: operators.PipelineSnapshot, slot) -> None:
    """Each node's embedder actors and rows: how much of the embedding it is doing; drawn into `slot` (one heading)."""
    if not snapshot.nodes:
        return
    rows = [node.rows or 0 for node in snapshot.nodes]
    table = pd.DataFrame({
        "node": [node.name for node in snapshot.nodes],
        "embedder actors": [node.actors for node in snapshot.nodes],
        "batches in flight": [node.busy for node in snapshot.nodes],
        "rows embedded": [node.rows for node in snapshot.nodes],
        "share": [units.percent(row / sum(rows)) if sum(rows) else None for row in rows],  # units.SHARE_COLUMN
    })
    with slot.container():
        st.markdown("**Per node**")
        st.dataframe(table, hide_index=True, column_config={
            "share": st.column_config.ProgressColumn("share of the rows", format=units.SHARE_COLUMN, min_value=0.0,
                                                     max_value=100.0),
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
    if rate.empty and done.empty:
        st.caption("No operator timeline was saved for this run (runs from before workshop mode have none).")
        return
    rate, done = _drawable(rate), _drawable(done)
    if rate.empty and done.empty:  # Vega would draw empty axes and warn of an "infinite extent"
        st.caption("The operator timeline of this run holds no figures to draw (its samples carry no rows).")
        return
    st.markdown("**Operators over time**")
    per_second, cumulative = st.tabs(["Rows/s", "Rows done"])
    for tab, series, label in ((per_second, rate, f"rows/s ({figures.CURRENT_WINDOW})"),
                               (cumulative, done, "rows done")):
        with tab:
            if series.empty:
                st.caption("No figures to draw here.")
            else:
                _line_chart(series, label)
    st.caption("Sampled every second from Ray Data's executor while the run went. A flat start is Ray starting "
               "workers and the embedder actors loading the model; the read runs ahead until backpressure holds it.")


def _drawable(series: pd.DataFrame) -> pd.DataFrame:
    """The series' columns and times that hold a finite figure (a chart of nothing but gaps has an infinite extent)."""
    series = series.apply(pd.to_numeric, errors="coerce")
    series = series.loc[[isinstance(t, (int, float)) and math.isfinite(t) for t in series.index]]
    return series.dropna(axis="columns", how="all").dropna(axis="index", how="all")


def _line_chart(series: pd.DataFrame, y_title: str) -> None:
    """One line per operator over the seconds since the pipeline started.

    An Altair chart rather than st.line_chart: the latter's first render has no data yet, and Vega warns of an
    "infinite extent" for every field in the browser's console, whatever the data."""
    import altair as alt

    long = (series.rename_axis("elapsed_s").reset_index()
            .melt("elapsed_s", var_name="operator", value_name="value").dropna())
    chart = alt.Chart(long).mark_line().encode(
        x=alt.X("elapsed_s:Q", title="seconds since the pipeline started"),
        y=alt.Y("value:Q", title=y_title),
        color=alt.Color("operator:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("operator:N"), alt.Tooltip("elapsed_s:Q", title="seconds"),
                 alt.Tooltip("value:Q", title=y_title)],
    )
    st.altair_chart(chart, width="stretch")
