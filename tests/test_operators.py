"""Workshop mode: Ray Data's per-operator state sampled from a real run, saved, read back, drawn live and replayed."""

from __future__ import annotations

import json
import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import operator_notes
from doggos.base.config import RunConfig
from doggos.pipeline import operators
from doggos.pipeline.operators import NodeSnapshot, OperatorSnapshot, PipelineSnapshot

SAMPLE_EVERY_S = 0.2  # faster than the driver's 1 s, so the short test run still gives several samples

EMBED = "Map(add_label)->MapBatches(Embedder)"  # the embed operator when the labelling is fused into the actors


def _running(now: float) -> PipelineSnapshot:
    """A run held mid-pipeline: reads backpressured ahead of a busy embedder on two nodes."""
    return PipelineSnapshot(
        time=now, elapsed_s=42.0, dataset="dataset_7", state="running",
        operators=[
            OperatorSnapshot(index=0, name="ReadBinary", kinds=["read"], rows_out=300, rows_in=10, rows_per_s=25.0,
                             tasks=1, queued_blocks=2, queued_bytes=3 * 2**20, backpressured=True,
                             backpressure=["tasks (ResourceBudgetBackpressurePolicy)"], object_store_bytes=5 * 2**20,
                             rows_total=300),
            OperatorSnapshot(index=1, name=EMBED, kinds=["label", "embed"], rows_out=120, rows_in=200, rows_per_s=17.5,
                             tasks=2, actors=2, pending_actors=0, pool_size=2, queued_blocks=4, rows_total=300),
            OperatorSnapshot(index=2, name="Write", kinds=["write"], rows_out=3, rows_in=112, rows_per_s=16.0),
        ],
        nodes=[NodeSnapshot(node="a" * 56, name="10.0.0.1 (aaaaaa)", actors=1, busy=1, rows=90),
               NodeSnapshot(node="b" * 56, name="10.0.0.2 (bbbbbb)", actors=1, busy=1, rows=30)],
        object_store_bytes=8 * 2**20, object_store_limit=2**30,
    )


def _write_samples(run, snapshots) -> None:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / operators.OPERATORS_FILE, "a", encoding="utf-8") as handle:
        handle.writelines(s.to_json() + "\n" for s in snapshots)


# ---- the real pipeline ---------------------------------------------------------------------------------------------

@pytest.mark.ray
def test_a_real_run_saves_its_operators_over_time_up_to_every_image(ray_session, image_tree, tiny_clip, tmp_path):
    from doggos.runs import driver

    root, images = image_tree
    watch = tmp_path / "watch"  # the sampler's own folder: the driver may keep one of its own in the run folder
    watch.mkdir()
    sampler = operators.Sampler(watch)
    stop = threading.Event()

    def beat():  # what the driver's heartbeat thread does, faster
        while not stop.wait(SAMPLE_EVERY_S):
            sampler.sample()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        manifest = driver.run(RunConfig(projection=False, source=str(root), output=str(tmp_path / "run"),
                                        model=tiny_clip, batch_size=2), steps=[])  # post-run steps: no plan of ours
    finally:
        stop.set()
        thread.join()
    sampler.close()

    frame = operators.timeline(watch)
    lines = (watch / operators.OPERATORS_FILE).read_text().splitlines()
    assert frame["time"].nunique() >= 3, f"several samples while the pipeline ran; the file held: {lines[:5]}"
    assert {"read", "embed", "write"} <= set(frame["kind"])
    last = operators.latest(watch)
    assert last.state == "finished"
    assert {op.kind: op.rows_done for op in last.operators} == {"read": len(images), "embed": len(images),
                                                                "write": len(images)}
    embed = last.embed_operator()
    # Ray Data fuses the labelling into the read or into the actors, as the plan's CPU requests allow.
    assert embed.name.endswith("MapBatches(Embedder)") and embed.actors is not None
    assert embed.pool_size == manifest.plan.actors
    for _, rows in frame.groupby("index")["rows_done"]:
        assert rows.is_monotonic_increasing, "rows done never step back"
    assert (frame["rows_per_s"].dropna() >= 0).all() and frame["rows_per_s"].max() > 0
    driven = operators.latest(tmp_path / "run")  # the driver's own heartbeat sampled the run too, into the run folder
    assert driven is not None and driven.state == "finished" and driven.embed_operator().rows_done == len(images)
    # The live view's last frame is the Summary's: the whole-run rate, each node's final rows, nothing in flight.
    from doggos.base.records import read_status
    from doggos.base.rundir import RunDir

    status = read_status(RunDir(tmp_path / "run"))
    assert status.progress.run_images_per_s == manifest.images_per_s > 0
    assert {node.node: node.rows for node in driven.nodes} == manifest.ray.embedded_by_node
    assert all(node.busy == 0 for node in driven.nodes) and all(op.tasks == 0 for op in driven.operators)
    assert {"listing", "starting ray", "done"} <= set(status.phase_started)  # a later run's typical phase lengths


def test_the_sampler_writes_nothing_while_no_dataset_executes(tmp_path):
    sampler = operators.Sampler(tmp_path)
    assert sampler.sample() is None
    sampler.close()
    assert not (tmp_path / operators.OPERATORS_FILE).exists()
    assert operators.latest(tmp_path) is None and operators.timeline(tmp_path).empty


def test_a_ray_whose_executor_changed_gives_one_unavailable_line_and_never_raises(tmp_path, monkeypatch):
    class Executor(threading.Thread):
        """An executor of some other Ray version: a running thread, without the state this Ray's executor keeps."""

    release = threading.Event()
    executor = Executor(target=release.wait, daemon=True)
    sampler = operators.Sampler(tmp_path)
    executor.start()  # after the sampler was made: an execution of this run
    monkeypatch.setattr(operators, "_executors", lambda: [executor])
    try:
        first = sampler.sample()
        assert first.state == "unavailable" and "_topology" in first.note and "2.60" in first.note
        assert sampler.sample() is None  # said once
    finally:
        release.set()
        executor.join()
    lines = (tmp_path / operators.OPERATORS_FILE).read_text().splitlines()
    assert len(lines) == 1 and operators.latest(tmp_path).state == "unavailable"


def test_a_ray_that_moved_its_executor_gives_one_unavailable_line(tmp_path, monkeypatch):
    import sys
    import types

    moved = "ray.data._internal.execution.streaming_executor"
    monkeypatch.setitem(sys.modules, moved, types.ModuleType(moved))  # the module, without StreamingExecutor
    if "ray.data" not in sys.modules:
        monkeypatch.setitem(sys.modules, "ray.data", types.ModuleType("ray.data"))
    sampler = operators.Sampler(tmp_path)
    first = sampler.sample()
    assert first.state == "unavailable" and "StreamingExecutor" in first.note
    assert sampler.sample() is None and len((tmp_path / operators.OPERATORS_FILE).read_text().splitlines()) == 1


def test_executions_already_going_when_the_run_began_are_not_followed(tmp_path, monkeypatch):
    earlier = threading.Thread()
    monkeypatch.setattr(operators, "_executors", lambda: [earlier])
    sampler = operators.Sampler(tmp_path)
    assert sampler.sample() is None and not (tmp_path / operators.OPERATORS_FILE).exists()


# ---- kinds and explanations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kinds, kind", [
    ("ReadBinary", ["read"], "read"),
    ("ReadBinary->Map(add_label)->MapBatches(prepare_images)", ["read", "label", "decode"], "decode"),
    (EMBED, ["label", "embed"], "embed"),
    ("Write", ["write"], "write"),
    ("MapBatches(<lambda>)", ["map"], "map"),
])
def test_a_fused_operator_is_named_by_what_it_is_for(name, kinds, kind):
    op = OperatorSnapshot(index=0, name=name, kinds=operators.kinds_of(name))
    assert op.kinds == kinds and op.kind == kind
    text = operator_notes.explain(op)
    assert text.startswith(operator_notes.EXPLANATIONS[kind])
    assert ("Ray fused" in text) == (len(set(kinds)) > 1)


def test_every_kind_is_explained_and_the_explanations_say_why():
    assert set(operator_notes.EXPLANATIONS) == set(operators.KINDS)
    assert "actor pool" in operator_notes.EXPLANATIONS["embed"] and "batch size" in operator_notes.EXPLANATIONS["embed"]
    assert "tasks" in operator_notes.EXPLANATIONS["read"] and "CPU free" in operator_notes.EXPLANATIONS["read"]


def test_a_write_counts_the_rows_it_was_given_not_the_files_it_made():
    write = OperatorSnapshot(index=2, name="Write", kinds=["write"], rows_out=3, rows_in=112)
    read = OperatorSnapshot(index=0, name="ReadBinary", kinds=["read"], rows_out=300, rows_in=10)
    assert (write.rows_done, read.rows_done) == (112, 300)


# ---- reading the file back ------------------------------------------------------------------------------------------

def test_latest_and_timeline_skip_a_line_being_written_and_keys_they_do_not_know(tmp_path):
    first, second = _running(1000.0), _running(1001.0)
    second.operators[1].rows_out = 140
    _write_samples(tmp_path, [first, second])
    newer = json.loads(second.to_json())
    newer["operators"][0]["gpu_seconds"] = 3  # a later writer's field
    with open(tmp_path / operators.OPERATORS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(newer) + "\n" + '{"v": 1, "time": 10')  # then a line cut mid-write
    last = operators.latest(tmp_path)
    assert last.time == 1001.0 and last.operators[1].rows_out == 140 and last.nodes[0].rows == 90
    frame = operators.timeline(tmp_path)
    assert list(frame.columns) == operators.TIMELINE_COLUMNS and len(frame) == 9
    assert list(frame[frame["kind"] == "embed"]["rows_done"]) == [120, 140, 140]


# ---- the live view and the replay (AppTest) -----------------------------------------------------------------------

def _draw_live(run_path: str) -> None:
    from dashboard import workshop

    workshop.live_operators(run_path)


def _draw_timeline(run_path: str) -> None:
    from dashboard import workshop

    workshop.timeline_chart(run_path)


def test_the_live_view_shows_each_operator_its_workers_backpressure_and_the_nodes(tmp_path):
    run = tmp_path / "20250105-000000-live"
    _write_samples(run, [_running(time.time())])
    at = AppTest.from_function(_draw_live, args=(str(run),), default_timeout=30).run()
    assert not at.exception
    text = " ".join(e.value for kind in ("markdown", "caption", "text") for e in at.get(kind))
    assert "Read · tasks → Label + Embed · actor pool → Write · tasks" in text
    assert [bar.proto.text for bar in at.get("progress")] == [
        "300 / 300 rows handed on", "120 / 300 rows handed on", "112 / 300 rows received"]
    assert [bar.proto.value for bar in at.get("progress")] == [100, 40, 37]
    assert [m.label for m in at.metric] == ["Rows handed on/s · last 5 s"] * 3
    assert [m.value for m in at.metric] == ["25.0", "17.5", "16.0"]
    assert operator_notes.EMBED_COUNT_NOTE in text  # Ray's count beside doggos' "Embedded": why they differ
    assert "Actors: 2 of 2 up · batches in flight: 2" in text and "Tasks running: 1" in text
    assert "Queued: 2 blocks (3.0 MB)" in text and "Object store: 5.0 MB" in text
    assert sum("backpressured" in e.value for e in at.markdown) == 1 and operator_notes.BACKPRESSURE_NOTE in text
    assert operator_notes.EXPLANATIONS["embed"] in text and "Ray fused the label step into it" in text
    nodes = at.dataframe[0].value
    assert list(nodes["node"]) == ["10.0.0.1 (aaaaaa)", "10.0.0.2 (bbbbbb)"]
    assert list(nodes["share"]) == [75.0, 25.0] and list(nodes["embedder actors"]) == [1, 1]  # percents: SHARE_COLUMN


def test_the_live_view_says_what_it_waits_for_and_when_it_cannot_read_ray(tmp_path):
    from dashboard import workshop

    at = AppTest.from_function(_draw_live, args=(str(tmp_path),), default_timeout=30).run()
    assert [c.value for c in at.caption] == [workshop.NOT_YET] and not at.metric
    _write_samples(tmp_path, [PipelineSnapshot(time=1.0, elapsed_s=0.0, dataset="", state="unavailable",
                                               note="Ray 9.0's execution state could not be read")])
    at.run()
    assert "not available" in at.caption[0].value and "Ray 9" in at.caption[0].value and not at.metric


def test_the_saved_timeline_replays_rows_per_second_per_operator(tmp_path):
    from dashboard import workshop

    samples = []
    for second in range(4):
        snapshot = _running(1000.0 + second)
        snapshot.elapsed_s = float(second)
        snapshot.operators[1].rows_per_s = 10.0 * second
        samples.append(snapshot)
    _write_samples(tmp_path, samples)
    rate, done = workshop.timeline_series(tmp_path)
    assert list(rate.columns) == ["1. Read", "2. Label + Embed", "3. Write"]
    assert list(rate["2. Label + Embed"]) == [0.0, 10.0, 20.0, 30.0] and list(rate.index) == [0.0, 1.0, 2.0, 3.0]
    assert list(done["3. Write"]) == [112] * 4
    at = AppTest.from_function(_draw_timeline, args=(str(tmp_path),), default_timeout=30).run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 2


def test_a_run_without_a_timeline_says_so(tmp_path):
    at = AppTest.from_function(_draw_timeline, args=(str(tmp_path),), default_timeout=30).run()
    assert "No operator timeline" in at.caption[0].value and not at.get("vega_lite_chart")


def _shape(node):
    """The element tree's layout without its contents: nested lists, one entry per element or block."""
    children = getattr(node, "children", None)
    return None if children is None else [_shape(child) for child in children.values()]


def test_every_frame_of_the_live_view_draws_the_same_elements_and_one_per_node_heading(tmp_path):
    """Streamlit replaces elements by position: a frame with an element more or less than the last one shows the last
    one's leftovers until it is drawn in full (the issue's second "Per node")."""
    running = tmp_path / "running"
    _write_samples(running, [_running(time.time())])
    finished = tmp_path / "finished"
    done = _running(time.time())
    done.state = "finished"
    for operator in done.operators:
        operator.backpressured, operator.backpressure, operator.done = False, [], True
    _write_samples(finished, [done])
    frames = [AppTest.from_function(_draw_live, args=(str(run),), default_timeout=30).run()
              for run in (running, finished)]
    assert not any(at.exception for at in frames)
    assert _shape(frames[0].main) == _shape(frames[1].main)
    for at in frames:
        assert [e.value for e in at.markdown].count("**Per node**") == 1


def test_the_live_view_says_how_long_ray_data_ran_and_shows_nothing_in_flight_once_finished(tmp_path, monkeypatch):
    """The sampler's last frame: busy 0 once the execution ended, and the tracker's final counts, even when they land
    a beat after the execution's end (the issue's "rows embedded 90, batches in flight 2" after every operator was
    done)."""
    alive = threading.Event()
    alive.set()

    class Executor(threading.Thread):
        def is_alive(self):
            return alive.is_set()

    executor = Executor()
    clock = {"now": 1000.0}
    sampler = operators.Sampler(tmp_path, clock=lambda: clock["now"])

    def read(executor, now):
        rows = min(300, int(30 * (now - 1000.0)))
        return {"dataset": "dataset_1", "elapsed_s": round(now - 1000.0, 2), "object_store_bytes": 0,
                "object_store_limit": None, "time": now, "nodes": {"node-a": {"actors": 2, "busy": 2}},
                "operators": [{"index": 0, "name": EMBED, "kinds": ["label", "embed"], "rows_out": rows,
                               "rows_in": rows, "tasks": 2, "actors": 2, "pending_actors": 0, "pool_size": 2,
                               "queued_blocks": 0, "queued_bytes": 0, "backpressured": False, "backpressure": [],
                               "object_store_bytes": 0, "rows_total": 300, "done": rows == 300}]}

    monkeypatch.setattr(operators, "_executors", lambda: [executor])
    monkeypatch.setattr(operators, "read_executor", read)
    for second in range(9):  # 30 rows a second, sampled each second
        clock["now"] = 1000.0 + second
        running = sampler.sample({"node-a": 30 * second})
    assert running.operators[0].rows_per_s == 30.0  # over the last 5 s
    clock["now"], alive = 1010.0, threading.Event()  # the execution ends between two beats...
    last = sampler.sample({"node-a": 240})  # ...while the heartbeat still holds the tracker's counts of a beat ago
    assert last.state == "finished" and last.nodes[0].busy == 0 and last.operators[0].tasks == 0
    clock["now"] = 1011.0
    sampler.close({"node-a": 300})  # the tracker's final counts
    final = operators.latest(tmp_path)
    assert final.state == "finished" and [(n.node, n.rows, n.busy) for n in final.nodes] == [("node-a", 300, 0)]
    sampler.close({"node-a": 300})
    assert operators.latest(tmp_path) == final  # said once
    from dashboard import workshop

    assert workshop.heading(final, 2000.0) == "**Ray Data** · finished after 10 s"


def test_a_timeline_without_figures_draws_a_note_not_an_empty_chart(tmp_path):
    samples = []
    for second in range(3):
        snapshot = _running(1000.0 + second)
        snapshot.elapsed_s = float("nan") if second == 0 else float(second)
        for operator in snapshot.operators:
            operator.rows_per_s = None
        samples.append(snapshot)
    _write_samples(tmp_path, samples)
    at = AppTest.from_function(_draw_timeline, args=(str(tmp_path),), default_timeout=30).run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 1  # rows done only: rows/s holds no figure
    assert "No figures to draw here." in [c.value for c in at.caption]
