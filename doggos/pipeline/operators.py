"""Ray Data's own per-operator execution state, sampled live in the driver into operators.jsonl, and read back.

What each operator does, for a workshop's learners: `dashboard.operator_notes`."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from doggos.base import units
from doggos.base.records import known_fields
from doggos.base.rundir import run_dir_of
from doggos.pipeline import figures

OPERATORS_FILE = "operators.jsonl"  # in the run folder: one JSON line per operator sample, appended while the run goes
FORMAT_VERSION = 1  # written into every line, so a later reader can tell an older timeline apart
TAIL_BYTES = 256 * 1024  # latest() reads only this much of the file's end: a sample line is a few KB at most
READ_TRIES = 3  # the executor mutates its state while we read it; a read that races with it is simply tried again

log = logging.getLogger("doggos")

# Operator kinds, in the order that picks a fused operator's main kind (the embedder is what a fused operator is for).
KINDS = ("embed", "decode", "write", "read", "label", "map")

@dataclass
class OperatorSnapshot:
    """One operator of the running plan, as Ray Data's executor sees it at one instant."""

    index: int  # position in the plan, 0 = the first operator after the input
    name: str  # Ray Data's name; fused operators read "Map(add_label)->MapBatches(Embedder)"
    kinds: list[str] = field(default_factory=list)  # what it does, one kind per fused part (see KINDS); [] reads as map
    rows_out: int = 0  # rows it has handed on
    rows_in: int = 0  # rows it has received (for a write, the rows it was given to write)
    rows_per_s: float | None = None  # rows done (see rows_done) per second over figures.CURRENT_WINDOW; None at first
    tasks: int = 0  # tasks running now (for an actor pool: batches in flight)
    actors: int | None = None  # actors up; None for an operator that runs tasks
    pending_actors: int | None = None  # actors asked for but not up yet (starting, loading the model)
    pool_size: int | None = None  # the actor pool's largest size; None for tasks
    queued_blocks: int = 0  # blocks waiting at its input
    queued_bytes: int = 0  # their size
    backpressured: bool = False  # Ray Data is holding it back (see BACKPRESSURE_NOTE)
    backpressure: list[str] = field(default_factory=list)  # "tasks (policy)" (no new tasks), "outputs (policy)"
    object_store_bytes: int = 0  # object store memory its blocks hold now
    rows_total: int | None = None  # Ray's estimate of the rows it will hand on; None until it knows
    done: bool = False  # Ray Data says it has completed

    @property
    def kind(self) -> str:
        """The main kind of a fused operator: embed over decode over write over read over label."""
        known = [kind for kind in self.kinds if kind in KINDS]
        return min(known, key=KINDS.index) if known else "map"

    @property
    def rows_done(self) -> int:
        """Rows it has finished: handed on, or for a write (which hands on one row per file) rows given to it."""
        return self.rows_in if self.kind == "write" else self.rows_out


@dataclass
class NodeSnapshot:
    """One node's share of the embedding: its embedder actors now, and the rows they embedded (when known)."""

    node: str  # Ray node id
    name: str  # its address when Ray says, else the id's first characters
    actors: int = 0  # embedder actors on it now
    busy: int = 0  # batches in flight on its actors (0 once the execution finished)
    rows: int | None = None  # rows embedded there, from doggos' own tracker; None when not given


@dataclass
class PipelineSnapshot:
    """The whole plan at one instant: every operator and node, plus the object store; a line of operators.jsonl."""

    time: float  # seconds since the epoch
    elapsed_s: float  # since this dataset's execution started
    dataset: str  # Ray Data's dataset id (a run executes one; a later step may add another)
    state: str  # "running", "finished", or "unavailable" (see note)
    operators: list[OperatorSnapshot] = field(default_factory=list)
    nodes: list[NodeSnapshot] = field(default_factory=list)
    object_store_bytes: int | None = None  # used by the whole execution
    object_store_limit: int | None = None  # what Ray Data lets the execution use
    note: str | None = None  # why the state cannot be read, when state is "unavailable"

    def to_json(self) -> str:
        return json.dumps({"v": FORMAT_VERSION, **asdict(self)}, separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineSnapshot":
        known = {"time": 0.0, "elapsed_s": 0.0, "dataset": "", "state": "running"}
        known.update((k, v) for k, v in data.items() if k in cls.__dataclass_fields__)
        known["operators"] = [OperatorSnapshot(**known_fields(OperatorSnapshot, o)) for o in data.get("operators", [])]
        known["nodes"] = [NodeSnapshot(**known_fields(NodeSnapshot, n)) for n in data.get("nodes", [])]
        return cls(**known)

    def embed_operator(self) -> OperatorSnapshot | None:
        return next((op for op in self.operators if op.kind == "embed"), None)


def kinds_of(name: str) -> list[str]:
    """What each fused part of a Ray Data operator does, from its name: 'ReadBinary->Map(add_label)' → read, label."""
    found = []
    for part in name.split("->"):
        if part.startswith("Read"):
            kind = "read"
        elif part.startswith("Write"):
            kind = "write"
        elif "Embedder" in part:
            kind = "embed"
        elif "prepare_images" in part:
            kind = "decode"
        elif "add_label" in part:
            kind = "label"
        else:
            kind = "map"
        found.append(kind)
    return found


def rows_done_text(operator: OperatorSnapshot, total: int | None) -> str:
    """What an operator's count counts, for its card: '90 / 300 rows handed on'; a write's rows are those it received.

    Ray counts a row as handed on once its task's output block is complete: the embed operator's count trails doggos'
    own "embedded" (counted as the model returns each batch) by up to a block (see operator_notes.EMBED_COUNT_NOTE)."""
    done = units.count(operator.rows_done)
    what = "rows received" if operator.kind == "write" else "rows handed on"
    return f"{done} / {units.count(total)} {what}" if total else f"{done} {what}"


# ---- reading Ray Data's executor (private API: the one place that knows it) --------------------------------------

def _executors() -> list:
    """Ray Data's streaming executors running in this process, oldest first; [] before Ray Data is in use.

    Written against Ray 2.60: `StreamingExecutor` is a `threading.Thread` (its scheduling loop), so the live ones
    are found among this process's threads, the driver's, where `ds.write_parquet(...)` runs it. Raises
    ModuleNotFoundError or AttributeError on a Ray that moved it.
    """
    if "ray.data" not in sys.modules:  # not imported: nothing can be executing, and importing Ray here would be slow
        return []
    module = importlib.import_module("ray.data._internal.execution.streaming_executor")
    return [t for t in threading.enumerate() if isinstance(t, module.StreamingExecutor)]


def read_executor(executor, now: float) -> dict[str, Any]:
    """One executor's live state as plain data: the numbers the console progress bars print, from the same objects.

    Written against Ray 2.60's private execution state: `executor._topology` (operator → `OpState`), each
    operator's `metrics` (`OpRuntimeMetrics`: rows_task_outputs_generated, num_row_inputs_received, obj_store_mem_used),
    `num_active_tasks()`, `get_actor_info()`, `get_autoscaling_actor_pools()` (pool sizes, actors per node), its
    backpressure flags, `OpState.total_enqueued_input_blocks()`, and the executor's `_resource_manager` (the object
    store's use and limit, when readable). Raises when the rest is missing: the Sampler then records "not available".
    """
    operators, nodes = [], {}
    for op, state in list(executor._topology.items()):
        if type(op).__name__ == "InputDataBuffer":  # the plan's input, not an operator anyone wrote
            continue
        metrics = op.metrics
        pools = op.get_autoscaling_actor_pools()
        info = op.get_actor_info() if pools else None
        backpressure = []
        if op._in_task_submission_backpressure:
            backpressure.append(f"tasks ({op._task_submission_backpressure_policy or 'policy unknown'})")
        if op._in_task_output_backpressure:
            backpressure.append(f"outputs ({op._task_output_backpressure_policy or 'policy unknown'})")
        kinds = kinds_of(op.name)
        if "embed" in kinds:
            for pool in pools:
                for actor_state in list(getattr(pool, "_running_actors", {}).values()):
                    node = nodes.setdefault(actor_state.actor_location, {"actors": 0, "busy": 0})
                    node["actors"] += 1
                    node["busy"] += actor_state.num_tasks_in_flight
        operators.append({
            "index": len(operators), "name": op.name, "kinds": kinds,
            # Rows as the operator's tasks produce them (not as the next operator takes them, which lags by a block).
            "rows_out": int(metrics.rows_task_outputs_generated), "rows_in": int(metrics.num_row_inputs_received),
            "tasks": int(op.num_active_tasks()),
            "actors": info.running if info else None, "pending_actors": info.pending if info else None,
            "pool_size": sum(pool.max_size() for pool in pools) if pools else None,
            "queued_blocks": int(state.total_enqueued_input_blocks()),
            "queued_bytes": int(state.total_enqueued_input_blocks_bytes()),
            "backpressured": bool(backpressure), "backpressure": backpressure,
            "object_store_bytes": int(metrics.obj_store_mem_used or 0),
            "rows_total": op.num_output_rows_total(), "done": bool(op.has_completed()),
        })
    store_used, store_limit = _object_store(getattr(executor, "_resource_manager", None))
    started = getattr(executor, "_start_time", None)  # a time.perf_counter() reading
    return {
        "dataset": str(getattr(executor, "_dataset_id", "dataset")),
        "elapsed_s": round(time.perf_counter() - started, 2) if started else None,
        "operators": operators, "nodes": nodes,
        "object_store_bytes": store_used, "object_store_limit": store_limit, "time": now,
    }


def _object_store(manager) -> tuple[int | None, int | None]:
    """The object store's use and limit as the executor last computed them; (None, None) when unreadable.

    Read from the manager's fields, not its getters: `get_global_usage()` asserts the usage is non-negative (its
    accounting dips below zero for a moment now and then) and `get_global_limits()` refreshes the limits, asking the
    cluster, from our thread. Either could cost the whole sample, and these two numbers are the least of it.
    """
    try:
        return (int(manager._global_usage.object_store_memory), int(manager._global_limits.object_store_memory))
    except Exception:  # no manager, or another Ray's
        return None, None


# ---- the sampler --------------------------------------------------------------------------------------------------

class Sampler:
    """Samples Ray Data's execution state in this process into `<run>/operators.jsonl`, one line per sample.

    The driver's heartbeat calls `sample()` about every second from the run's start: it writes nothing until a
    dataset executes, follows every execution started after the sampler was made, and writes one last line when
    an execution ends (call `close()` at the run's end, so a quick last stretch is not missed). Never raises: a
    Ray that changed its internals gives one "unavailable" line, and the run goes on.
    """

    def __init__(self, run_dir: str | Path, clock=time.time):
        self.path = Path(run_dir) / OPERATORS_FILE
        self._clock = clock
        self._lock = threading.Lock()  # the heartbeat thread samples; close() may come from the driver's thread
        # Executions already going when the run began belong to someone else (an earlier run in this process).
        self._ignored = weakref.WeakSet()
        try:
            self._ignored.update(_executors())
        except (ModuleNotFoundError, AttributeError):  # another Ray: sample() says so
            pass
        self._followed: list = []  # executions seen alive; each gets a last sample after it ends, then is dropped
        # (dataset, operator) → its recent (time, rows_done) samples: rows_per_s over figures.CURRENT_WINDOW_S
        self._history: dict[tuple[str, int], deque] = {}
        self._last_finished: PipelineSnapshot | None = None  # an ended execution's last sample, for its final counts
        self._first_seen: dict[str, float] = {}
        self._unavailable_written = False
        self._node_names: dict[str, str] = {}

    def sample(self, rows_by_node: Mapping[str, int] | None = None) -> PipelineSnapshot | None:
        """Sample every followed execution, append its line, and return the newest; None while nothing executes.

        `rows_by_node`: rows embedded per Ray node id (doggos' tracker), shown beside each node's actors. Once every
        execution has ended, counts that differ from its last sample's (the tracker's final ones, which may land a beat
        after the execution ends) give that sample again with them: the view's last frame holds the final counts."""
        with self._lock:
            try:
                return self._sample(rows_by_node)
            except Exception as error:  # the view is a bonus: it must never cost a run
                log.debug("operator sample failed: %s", error)
                return None

    def close(self, rows_by_node: Mapping[str, int] | None = None) -> None:
        """Take the last samples of executions that ended since the previous call (the run is ending)."""
        self.sample(rows_by_node)

    def _sample(self, rows_by_node) -> PipelineSnapshot | None:
        try:
            running = _executors()
        except (ModuleNotFoundError, AttributeError) as error:  # another Ray: say so once, then stay quiet
            snapshot = self._unavailable(self._clock(), error)
            if snapshot is not None:
                self._append(snapshot)
            return snapshot
        for executor in running:
            if executor not in self._ignored and all(executor is not e for e in self._followed):
                self._followed.append(executor)
        newest = None
        for executor in list(self._followed):
            alive = executor.is_alive()  # asked before reading: a read after the end holds the final numbers
            snapshot = self._snapshot(executor, alive, rows_by_node)
            if snapshot is not None:
                self._append(snapshot)
                newest = snapshot
            if not alive:  # that was its last sample
                self._followed.remove(executor)
                self._ignored.add(executor)
                self._last_finished = snapshot
        if newest is None and not self._followed:
            newest = self._final_counts(rows_by_node)
        return newest

    def _final_counts(self, rows_by_node) -> PipelineSnapshot | None:
        """The last finished sample again, with the tracker's counts when they changed since; else None."""
        last = self._last_finished
        if last is None or not rows_by_node or {n.node: n.rows for n in last.nodes if n.rows is not None} == dict(
                rows_by_node):
            return None
        names = {node.node: node for node in last.nodes}
        nodes = [NodeSnapshot(node=node, name=self._node_name(node), actors=names[node].actors if node in names else 0,
                              busy=0, rows=rows) for node, rows in rows_by_node.items()]
        nodes += [node for node in last.nodes if node.node not in rows_by_node]
        final = dataclasses.replace(last, nodes=nodes)
        self._append(final)
        self._last_finished = final
        return final

    def _snapshot(self, executor, alive: bool, rows_by_node) -> PipelineSnapshot | None:
        now = self._clock()
        raw, failure = None, None
        for _ in range(READ_TRIES):
            try:
                raw = read_executor(executor, now)
                break
            except (RuntimeError, KeyError, IndexError) as error:  # it changed under us ("dict changed size"): again
                failure = error
            except Exception as error:  # missing attributes and the like: this Ray is not the one we know
                failure = error
                break
        if raw is None:
            return self._unavailable(now, failure)
        raw["state"] = "running" if alive else "finished"
        if not alive:  # nothing is in flight once the execution ended, whatever the actors' bookkeeping still says
            for share in raw["nodes"].values():
                share["busy"] = 0
            for values in raw["operators"]:
                values["tasks"] = 0
        dataset = raw["dataset"]
        first = self._first_seen.setdefault(dataset, now)
        operators = []
        for values in raw["operators"]:
            operator = OperatorSnapshot(**values)
            history = self._history.setdefault((dataset, operator.index), deque(maxlen=64))
            if not history or now > history[-1][0]:
                history.append((now, operator.rows_done))
            figures.keep_window(history)
            rate = figures.window_rate(history)
            operator.rows_per_s = None if rate is None else round(rate, 2)
            operators.append(operator)
        by_node = dict(rows_by_node or {})
        nodes = [
            NodeSnapshot(node=node, name=self._node_name(node), actors=share["actors"], busy=share["busy"],
                         rows=by_node.get(node))
            for node, share in raw["nodes"].items()
        ]
        for node in sorted(set(by_node) - set(raw["nodes"])):  # a node whose actors are gone still embedded rows
            nodes.append(NodeSnapshot(node=node, name=self._node_name(node), actors=0, busy=0, rows=by_node[node]))
        elapsed = raw["elapsed_s"] if raw["elapsed_s"] is not None else round(now - first, 2)
        return PipelineSnapshot(time=round(now, 3), elapsed_s=elapsed, dataset=dataset, state=raw["state"],
                                operators=operators, nodes=nodes, object_store_bytes=raw["object_store_bytes"],
                                object_store_limit=raw["object_store_limit"])

    def _unavailable(self, now: float, error: BaseException) -> PipelineSnapshot | None:
        if self._unavailable_written:
            return None
        self._unavailable_written = True
        version = getattr(sys.modules.get("ray"), "__version__", "?")
        log.info("Ray Data's live operator state cannot be read on Ray %s: %s", version, error)
        return PipelineSnapshot(time=round(now, 3), elapsed_s=0.0, dataset="", state="unavailable",
                                note=f"Ray {version}'s execution state could not be read ({type(error).__name__}: "
                                     f"{error}); this view was written against Ray 2.60")

    def _node_name(self, node: str) -> str:
        """A node's address (asked of Ray once per node), else the id's start."""
        if node not in self._node_names:
            name = node[:8]
            try:
                import ray

                address = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node), None)
                name = f"{address} ({node[:6]})" if address else name
            except Exception:  # a name is a nicety
                pass
            self._node_names[node] = name
        return self._node_names[node]

    def _append(self, snapshot: PipelineSnapshot) -> None:
        # One write per line, flushed: a reader sees whole lines, or at worst a last partial one it skips.
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(snapshot.to_json() + "\n")


# ---- reading a run's samples back -------------------------------------------------------------------------------

def _snapshots(path: Path, tail_bytes: int | None = None) -> list[PipelineSnapshot]:
    """The samples in the file (or its last `tail_bytes`); lines that are cut or malformed are skipped."""
    try:
        with open(path, "rb") as handle:
            if tail_bytes is not None:
                handle.seek(0, 2)
                handle.seek(max(0, handle.tell() - tail_bytes))
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    snapshots = []
    for line in data.split(b"\n"):
        try:  # a cut first line (tail read), a last line being written, or a line this reader cannot make sense of
            snapshots.append(PipelineSnapshot.from_dict(json.loads(line)))
        except (ValueError, UnicodeDecodeError, TypeError, AttributeError):
            continue
    return snapshots


def operators_path(run_dir) -> Path:
    """The samples file of a run: a run folder path, a RunDir, or anything with a `.path` (a RunInfo)."""
    return run_dir_of(run_dir).path / OPERATORS_FILE


def latest(run_dir) -> PipelineSnapshot | None:
    """The run's newest sample, None before the first (or for a run from before this view existed)."""
    snapshots = _snapshots(operators_path(run_dir), TAIL_BYTES)
    return snapshots[-1] if snapshots else None


TIMELINE_COLUMNS = ["time", "elapsed_s", "dataset", "state", "index", "operator", "kind", "rows_done", "rows_out",
                    "rows_per_s", "tasks", "actors", "queued_blocks", "backpressured", "object_store_bytes"]


def timeline(run_dir):
    """Every sample of the run as a pandas DataFrame, one row per sample and operator (TIMELINE_COLUMNS)."""
    import pandas as pd

    rows = []
    for snapshot in _snapshots(operators_path(run_dir)):
        for op in snapshot.operators:
            rows.append({
                "time": snapshot.time, "elapsed_s": snapshot.elapsed_s, "dataset": snapshot.dataset,
                "state": snapshot.state, "index": op.index, "operator": op.name, "kind": op.kind,
                "rows_done": op.rows_done, "rows_out": op.rows_out, "rows_per_s": op.rows_per_s, "tasks": op.tasks,
                "actors": op.actors, "queued_blocks": op.queued_blocks, "backpressured": op.backpressured,
                "object_store_bytes": op.object_store_bytes,
            })
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
