"""A prompt cancel: the state says `stopping` with what is in flight, the run's figures stop where the cancel found
them, status.json has one writer at a time, and a state reads as a word, with no emoji a machine may lack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import unicodedata

import pytest
from _dashboard_fixtures import open_page
from conftest import wait_for

from dashboard import ui
from doggos.base.config import RunConfig
from doggos.base.processes import process_start
from doggos.base.records import Progress, RunStatus, read_status, update_status
from doggos.base.rundir import RunDir
from doggos.pipeline import operators
from doggos.runs import manager as manager_module
from doggos.runs.manager import RunInfo, RunManager, run_processes

STATES = ("queued", "starting", "running", "succeeded", "failed", "cancelled")


def _pictographs(text: str) -> list[str]:
    """Characters only an emoji or symbol font draws (Unicode's 'other symbol' class: ⏳ 🏃 ✅ ⛔, and variation
    selectors): on a machine without one they show as empty boxes."""
    return [c for c in text if unicodedata.category(c) == "So" or "\ufe00" <= c <= "\ufe0f"]


def _run(state: str, tmp_path, stopping: str | None = None, position: int | None = None) -> RunInfo:
    return RunInfo(id="20250101-120000-0001", path=tmp_path, config=RunConfig(source="/data/dogs", model="m"),
                   status=RunStatus(state=state, **({} if stopping is None else {"stopping": stopping})),
                   manifest=None, queue_position=position)


def test_a_state_reads_as_its_word_first_with_no_emoji(tmp_path):
    """History's state column and the live card's header: the word leads, and nothing needs an emoji font."""
    runs = [_run(state, tmp_path, position=3 if state == "queued" else None) for state in STATES]
    for run, row in zip(runs, ui.history_rows(runs)):
        for text in (ui.state_text(run), row["state"]):
            assert text.split()[0] == run.state and not _pictographs(text), text
    assert ui.state_text(runs[0]) == "queued — 3rd in line"


def test_a_cancel_under_way_reads_stopping_with_what_is_in_flight(tmp_path):
    running = _run("running", tmp_path, stopping="2 batches in flight")
    assert ui.state_text(running) == "stopping — 2 batches in flight"
    assert ui.state_text(_run("queued", tmp_path, stopping="", position=1)) == "stopping"
    assert ui.state_text(_run("cancelled", tmp_path, stopping="2 batches in flight")) == "cancelled"  # it has ended
    assert RunStatus(state="running").stopping_text is None  # no cancel asked


def _sample(run_dir: RunDir, at: float, embed_tasks: int, read_tasks: int = 0, pending: int = 0,
            state: str = "running") -> None:
    snapshot = operators.PipelineSnapshot(time=at, elapsed_s=3.0, dataset="ds", state=state, operators=[
        operators.OperatorSnapshot(index=0, name="ReadBinary->Map(add_label)", kinds=["read", "label"],
                                   tasks=read_tasks),
        operators.OperatorSnapshot(index=1, name="MapBatches(Embedder)", kinds=["embed"], tasks=embed_tasks,
                                   actors=2 - pending, pending_actors=pending, pool_size=2),
    ])
    with open(operators.operators_path(run_dir), "a", encoding="utf-8") as handle:
        handle.write(snapshot.to_json() + "\n")


def test_what_is_in_flight_comes_from_the_runs_last_operator_sample(tmp_path):
    run_dir = RunDir(tmp_path)
    assert manager_module._in_flight(run_dir) == ""  # no sample: a run listing, or starting Ray
    _sample(run_dir, time.time(), embed_tasks=2)
    assert manager_module._in_flight(run_dir) == "2 batches in flight"
    _sample(run_dir, time.time(), embed_tasks=1, read_tasks=1)
    assert manager_module._in_flight(run_dir) == "1 batch and 1 task in flight"
    _sample(run_dir, time.time(), embed_tasks=0, pending=2)
    assert manager_module._in_flight(run_dir) == "2 actors loading the model"
    _sample(run_dir, time.time(), embed_tasks=2, state="finished")
    assert manager_module._in_flight(run_dir) == ""  # the execution is over: a post-run step
    _sample(run_dir, time.time() - 60, embed_tasks=2)
    assert manager_module._in_flight(run_dir) == ""  # an old sample says nothing about now


def test_a_status_change_can_wait_on_a_condition_that_is_checked_under_the_lock(tmp_path):
    run_dir = RunDir(tmp_path)
    update_status(run_dir, state="cancelled")
    update_status(run_dir, when=lambda status: status.active, stopping="2 batches in flight")
    assert read_status(run_dir).stopping is None  # a cancel's note never brings back a run that has ended
    update_status(run_dir, state="running", stopping="")
    update_status(run_dir, when=lambda status: status.stopping is None, progress=Progress(embedded=9))
    assert read_status(run_dir).progress.embedded == 0  # a driver's count once a cancel is under way: dropped


def test_two_writers_of_a_status_never_undo_each_other(tmp_path, monkeypatch):
    """A driver's progress is read-merged-written; a cancel's note that lands meanwhile must survive it."""
    from doggos.base import records

    run_dir = RunDir(tmp_path)
    update_status(run_dir, state="running")
    inside, go_on = threading.Event(), threading.Event()
    write = records.write_json_atomic

    def slow_write(path, data):  # the driver's write stalls between its read and its write
        if threading.current_thread().name == "driver":
            inside.set()
            go_on.wait(10)
        write(path, data)

    monkeypatch.setattr(records, "write_json_atomic", slow_write)
    driver = threading.Thread(target=update_status, args=(run_dir,), kwargs={"progress": Progress(embedded=5)},
                              name="driver")
    driver.start()
    assert inside.wait(10)
    cancel = threading.Thread(target=update_status, args=(run_dir,), kwargs={"stopping": "2 batches in flight"})
    cancel.start()
    cancel.join(0.3)
    assert cancel.is_alive()  # it waits for the driver's write: one writer at a time
    go_on.set()
    driver.join(10)
    cancel.join(10)
    status = read_status(run_dir)
    assert status.progress.embedded == 5 and status.stopping == "2 batches in flight"


@pytest.mark.usefixtures("every_run_goes_through_app_py")
def test_the_live_card_says_stopping_while_a_cancel_is_under_way(runs_root):
    driver = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        run = RunDir(runs_root / "20250105-000000-live")
        run.path.mkdir()
        run.config.write_text(json.dumps(RunConfig(source="/data/dogs", model="m").to_dict()))
        update_status(run, state="running", pid=driver.pid, pid_start=process_start(driver.pid),
                      created_at="2025-01-05T00:00:00+00:00", stopping="2 batches in flight",
                      progress=Progress(found=100, embedded=40, phase="embedding"))
        at = open_page("pages/run.py")
        headers = [m.value for m in at.markdown if m.value.startswith("**Run ")]
        assert len(headers) == 1 and headers[0].endswith(" · stopping — 2 batches in flight"), headers
        assert list(at.dataframe[0].value["state"]) == ["stopping — 2 batches in flight"]
    finally:
        driver.kill()
        driver.wait()


@pytest.mark.ray
@pytest.mark.slow
def test_the_cli_says_stopping_with_the_batches_in_flight_then_cancelled(tmp_path, image_tree, tiny_clip,
                                                                          monkeypatch):
    """Each actor holds its second batch (a test hook) until the cancel: batches are in flight for sure."""
    root, _ = image_tree
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"embedding@2={tmp_path / 'never'}")  # inherited by the driver's Ray
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(source=str(root), model=tiny_clip, batch_size=2, projection=False,
                                     quality=False))
    run_dir = RunDir(tmp_path / "runs" / run_id)

    def batches_in_flight():
        snapshot = operators.latest(run_dir)
        embed = snapshot.embed_operator() if snapshot else None
        return (embed is not None and embed.tasks > 0) or not manager.get(run_id).active

    wait_for(batches_in_flight, timeout_s=120)
    result = subprocess.run([sys.executable, "-m", "doggos", "runs", "--runs-dir", str(tmp_path / "runs"), "cancel",
                             run_id], capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2, (result.stdout, result.stderr)
    assert re.fullmatch(rf"run {run_id}: stopping — \d+ batch(es)? (and \d+ tasks? )?in flight", lines[0]), lines
    assert lines[1] == f"run {run_id}: cancelled"
    info = manager.get(run_id)
    assert info.status.stopping is None and info.state == "cancelled"
    # The driver recorded the cancel itself, before Ray's shutdown; it was not killed for being slow to stop.
    assert "run cancelled; nothing was published" in manager.log_tail(run_id)
    assert not any(p.exists() for p in (run_dir.staging, run_dir.embeddings, run_dir.manifest))
    assert run_processes(run_id) == []
