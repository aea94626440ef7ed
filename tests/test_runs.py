"""Background runs through real detached drivers: completion, progress, queueing, cancel, crashes, recovery."""

import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import wait_for
from imagegen import write_image_tree

from doggos.base.config import RunConfig
from doggos.base.records import is_finished
from doggos.base.rundir import RunDir
from doggos.runs.manager import RunManager, run_processes

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    """Enough images that a full-size model takes well over 10 s: time to watch, cancel or kill a run."""
    root = tmp_path_factory.mktemp("big")
    write_image_tree(root, per_label=80, labels=("akita", "boxer", "corgi"))
    return root


@pytest.fixture(scope="module")
def base_clip(tmp_path_factory):
    from doggos.pipeline.demo import save_random_clip

    return str(save_random_clip(tmp_path_factory.mktemp("models") / "vit-b-32", preset="vit-b-32"))


def test_cli_start_returns_at_once_and_a_new_manager_sees_it_finish(tmp_path, image_tree, tiny_clip):
    root, labels = image_tree
    result = subprocess.run(
        [sys.executable, "-m", "doggos", "runs", "--runs-dir", str(tmp_path), "start",
         "--source", str(root), "--model", tiny_clip, "--batch-size", "2", "--no-map"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    assert result.stdout == f"{run_id}\n" and result.stderr == ""  # the id alone: nothing of Ray's on the terminal
    manager = RunManager(tmp_path)  # the launching process is gone: everything comes from disk
    assert manager.get(run_id).active  # it returned while the run goes on
    seen = []

    def finished():
        info = manager.get(run_id)
        seen.append(info.progress)
        return not info.active

    wait_for(finished, timeout_s=RUN_TIMEOUT_S)
    info = manager.get(run_id)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id))
    done = [p.embedded + p.failed for p in seen]
    assert done == sorted(done)
    assert info.progress.embedded == info.progress.found == len(labels)
    assert pq.read_table(RunDir(info.path).embeddings).num_rows == len(labels)
    assert [r.id for r in manager.list()] == [run_id]
    # Succeeded is recorded before the local Ray shuts down; the driver exits once it has (seconds; more on a busy CI).
    wait_for(lambda: run_processes(run_id) == [], timeout_s=90)

    status = subprocess.run([sys.executable, "-m", "doggos", "runs", "--runs-dir", str(tmp_path), "status", run_id],
                            capture_output=True, text=True, timeout=60)
    assert "succeeded" in status.stdout and f"{len(labels)}/{len(labels)}" in status.stdout
    assert status.stderr == "" and not any(mark in status.stdout for mark in ("INFO", "WARNING", "pid="))
    output = RunDir(info.path).output.read_text(errors="replace")  # the background driver's own output
    assert "Started a local Ray" not in output and "Can't find actor" not in output, output
    manager.delete(run_id)
    assert manager.list() == []


def test_two_runs_queue_and_both_finish_with_their_own_rows(tmp_path, image_tree, tiny_clip):
    root, labels = image_tree
    manager = RunManager(tmp_path)
    config = RunConfig(projection=False, quality=False, source=str(root), model=tiny_clip)
    first = manager.start(config)
    second = manager.start(config.replace(limit=5))
    wait_for(lambda: manager.get(first).state == "running")
    assert manager.get(second).state == "queued"  # one run at a time per runs root
    assert [r.id for r in manager.list()] == [second, first]  # newest first
    for run_id, rows in ((first, len(labels)), (second, 5)):
        info = manager.wait(run_id, RUN_TIMEOUT_S)
        assert info.state == "succeeded", (info.error, manager.log_tail(run_id))
        assert pq.read_table(RunDir(info.path).embeddings).num_rows == rows
    assert manager.cancel(first).state == "succeeded"  # cancelling a finished run changes nothing


def test_cancel_stops_a_running_run_fast_and_leaves_nothing_behind(tmp_path, big_tree, base_clip):
    manager = RunManager(tmp_path)
    run_id = manager.start(RunConfig(projection=False, quality=False, source=str(big_tree), model=base_clip, batch_size=4))
    wait_for(lambda: manager.get(run_id).progress.embedded > 0 or not manager.get(run_id).active, timeout_s=120)
    assert manager.get(run_id).active, "the run ended before it could be cancelled"
    stopping = []
    info = manager.cancel(run_id, on_stopping=stopping.append)  # returns once the run has stopped
    assert info.state == "cancelled"
    # At once, what the cancel waits for; from then on nothing is counted: the figures stop where it found them.
    assert stopping[0].status.stopping_text.startswith("stopping") and stopping[0].active
    assert info.progress == stopping[0].progress
    # The driver recorded the cancel itself (before Ray's shutdown): it was not killed for being slow to stop.
    assert "run cancelled; nothing was published" in manager.log_tail(run_id)
    run_dir = RunDir(info.path)
    assert not run_dir.embeddings.exists() and not run_dir.staging.exists() and not is_finished(run_dir)
    assert run_processes(run_id) == []


def test_a_killed_driver_is_detected_and_its_run_marked_failed(tmp_path, big_tree, base_clip):
    manager = RunManager(tmp_path)
    run_id = manager.start(RunConfig(projection=False, quality=False, source=str(big_tree), model=base_clip, batch_size=4))
    wait_for(lambda: manager.get(run_id).progress.embedded > 0, timeout_s=120)
    os.kill(manager.get(run_id).status.pid, signal.SIGKILL)  # as the OOM killer would
    info = wait_for(lambda: (i := manager.get(run_id)).state != "running" and i, timeout_s=30)
    assert info.state == "failed" and "exited unexpectedly (killed by SIGKILL)" in info.error  # we launched it
    wait_for(lambda: run_processes(run_id) == [], timeout_s=30)
    assert not is_finished(RunDir(info.path))


def test_cancel_a_queued_run(tmp_path, image_tree, tiny_clip):
    root, _ = image_tree
    manager = RunManager(tmp_path)
    first = manager.start(RunConfig(projection=False, quality=False, source=str(root), model=tiny_clip))
    queued = manager.start(RunConfig(projection=False, quality=False, source=str(root), model=tiny_clip))
    assert manager.cancel(queued).state == "cancelled"
    assert manager.wait(first, RUN_TIMEOUT_S).state == "succeeded"
    assert manager.get(queued).state == "cancelled" and run_processes(queued) == []


def test_relative_paths_are_resolved_where_the_run_was_started(tmp_path, image_tree, tiny_clip, monkeypatch):
    root, labels = image_tree
    monkeypatch.chdir(root.parent)  # the driver runs in the project folder, not here
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(projection=False, quality=False, source=root.name, model=tiny_clip))
    info = manager.wait(run_id, RUN_TIMEOUT_S)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id))
    assert info.config.source == str(root) and info.manifest.rows == len(labels)


def test_bad_settings_are_refused_before_anything_launches(tmp_path, tiny_clip):
    manager = RunManager(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        manager.start(RunConfig(projection=False, quality=False, source=str(tmp_path / "missing"), model=tiny_clip))
    assert manager.list() == []


PHASES = ["listing", "starting ray", "loading model", "embedding", "writing", "projecting"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_run_cancelled_at_any_phase_ends_cancelled_with_nothing_published(phase, tmp_path, image_tree, tiny_clip,
                                                                            monkeypatch):
    """The driver (or its actors) waits at `phase` (a test hook) until the cancel lands there: no sleep decides it."""
    root, _ = image_tree
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"{phase}={tmp_path / 'never'}")  # inherited by the driver and its Ray
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(source=str(root), model=tiny_clip, batch_size=2))
    wait_for(lambda: manager.get(run_id).progress.phase == phase or not manager.get(run_id).active, timeout_s=120)
    assert manager.get(run_id).progress.phase == phase, (manager.get(run_id), manager.log_tail(run_id))
    info = manager.cancel(run_id)
    assert info.state == "cancelled", (info.error, manager.log_tail(run_id))
    assert "run cancelled; nothing was published" in manager.log_tail(run_id)  # the driver's own word: not killed
    run_dir = RunDir(info.path)
    assert not any(p.exists() for p in (run_dir.staging, run_dir.embeddings, run_dir.projections, run_dir.manifest))
    assert run_processes(run_id) == []
    status = subprocess.run([sys.executable, "-m", "doggos", "runs", "--runs-dir", str(tmp_path / "runs"), "status", run_id],
                            capture_output=True, text=True, timeout=60)
    assert f"run {run_id}: cancelled" in status.stdout
    assert manager.get(run_id).state == "cancelled"  # and stays so: nobody marks it failed afterwards


def test_a_queued_run_behind_a_held_one_cancels_cleanly(tmp_path, image_tree, tiny_clip, monkeypatch):
    root, _ = image_tree
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"loading model={tmp_path / 'never'}")
    manager = RunManager(tmp_path / "runs")
    first = manager.start(RunConfig(source=str(root), model=tiny_clip, projection=False, quality=False))
    queued = manager.start(RunConfig(source=str(root), model=tiny_clip, projection=False, quality=False))
    wait_for(lambda: manager.get(first).progress.phase == "loading model", timeout_s=120)
    assert manager.get(queued).state == "queued"
    assert manager.cancel(queued).state == "cancelled"
    assert manager.cancel(first).state == "cancelled"
    assert [manager.get(r).state for r in (first, queued)] == ["cancelled", "cancelled"]
    assert run_processes(first) == [] and run_processes(queued) == []
