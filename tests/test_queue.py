"""The runs queue as its users see it: each queued run's place in line; background drivers at a lower CPU priority."""

import fcntl
import os

import psutil
import pytest
from conftest import wait_for

from dashboard import ui
from doggos.base.config import RunConfig
from doggos.base.processes import process_start
from doggos.base.records import update_status
from doggos.base.rundir import RunDir, write_json_atomic
from doggos.runs.manager import RunManager, run_processes


def _fake_run(root, run_id: str, state: str) -> None:
    """A run folder in `state`, its driver this (live) process: no real driver needed to read the queue."""
    run_dir = RunDir(root / run_id)
    run_dir.path.mkdir(parents=True)
    write_json_atomic(run_dir.config, {"source": "/nowhere"})
    update_status(run_dir, state=state, created_at="2026-01-01T00:00:00+00:00", pid=os.getpid(),
                  pid_start=process_start(os.getpid()))


def test_queued_runs_know_their_place_in_line_oldest_first(tmp_path):
    for number, state in enumerate(["succeeded", "running", "queued", "failed", "queued", "queued"]):
        _fake_run(tmp_path, f"20260101-00000{number}-000000-aa", state)
    manager = RunManager(tmp_path)
    listed = {run.id[-12:-10]: run.queue_position for run in manager.list()}
    assert listed == {"00": None, "01": None, "02": 1, "03": None, "04": 2, "05": 3}
    assert manager.get("20260101-000005-000000-aa").queue_position == 3  # get alone agrees with the listing
    assert manager.get("20260101-000002-000000-aa").to_dict()["queue_position"] == 1
    assert manager.get("20260101-000001-000000-aa").queue_position is None  # running: not in line


def test_the_run_page_says_a_queued_runs_place():
    class Run:
        state, queue_position = "queued", 3

    assert ui.state_text(Run()) == "queued — 3rd in line"
    Run.state, Run.queue_position = "running", None
    assert ui.state_text(Run()) == "running"
    assert [ui.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


@pytest.mark.slow
def test_real_drivers_wait_in_line_at_a_lower_cpu_priority_than_their_launcher(tmp_path):
    """Three drivers behind a queue lock held here: each shows its place, and runs niced (cost: ~1-3 s). They are
    cancelled before their turn, so the source and model are never read."""
    manager = RunManager(tmp_path / "runs")
    manager.root.mkdir()
    config = RunConfig(source=str(tmp_path), model=str(tmp_path), projection=False, quality=False)
    with open(manager.queue_lock_path(), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # no driver gets its turn while the test looks
        ids = [manager.start(config, check=False) for _ in range(3)]
        try:
            assert [manager.get(run_id).queue_position for run_id in ids] == [1, 2, 3]
            mine = psutil.Process().nice()
            for run_id in ids:
                pid = manager.get(run_id).status.pid
                # `nice` sets the priority, then execs python: wait for that instant rather than sleep.
                assert wait_for(lambda: psutil.Process(pid).nice() > mine, timeout_s=30)
        finally:
            for run_id in reversed(ids):
                manager.cancel(run_id)
    assert [manager.get(run_id).state for run_id in ids] == ["cancelled"] * 3
    assert all(run_processes(run_id) == [] for run_id in ids)
