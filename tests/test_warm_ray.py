"""The warm local Ray of a runs root: joined by every run after the first, cancel still immediate, replaced when
killed, gone when idle or orphaned."""

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import wait_for

from doggos.base.config import RunConfig
from doggos.base.processes import alive, with_environment
from doggos.base.rundir import RunDir
from doggos.runs import warm
from doggos.runs.manager import RunManager, run_processes

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RUN_TIMEOUT_S = 180


@pytest.fixture
def warm_runs(tmp_path, monkeypatch):
    """A runs root whose runs this test process launches as the dashboard would: sharing a warm Ray."""
    monkeypatch.setenv(warm.ENABLED_ENV, "1")
    monkeypatch.setenv(warm.IDLE_ENV, "120")
    manager = RunManager(tmp_path / "runs")
    manager.root.mkdir()
    yield manager
    state = warm.read_state(manager.root)
    if state:  # never leave a Ray behind for the rest of the suite
        os.killpg(state["pid"], signal.SIGKILL)


def _finish(manager: RunManager, config: RunConfig) -> str:
    run_id = manager.start(config)
    info = manager.wait(run_id, RUN_TIMEOUT_S)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id), manager.log_tail(run_id, output=True))
    return run_id


def _joined_warm(manager: RunManager, run_id: str) -> bool:
    return "connecting to the warm local Ray" in RunDir(manager.root / run_id).log.read_text()


def test_runs_share_the_warm_ray_a_cancel_spares_it_and_a_killed_one_is_replaced(warm_runs, image_tree, tiny_clip,
                                                                                  monkeypatch, tmp_path):
    """Cost: two small runs and a cancelled one, ~60-120 s on 2 cores."""
    manager, (root, _) = warm_runs, image_tree
    config = RunConfig(source=str(root), model=tiny_clip, batch_size=2, projection=False, quality=False)
    gate = tmp_path / "gate"  # while it exists, the test hook lets every run through its embedding
    gate.touch()
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"embedding={gate}")
    first = _finish(manager, config)
    state = warm.read_state(manager.root)
    assert state and state["owner"] == os.getpid() and _joined_warm(manager, first)

    # The next run joins the same Ray; cancelled while its actors embed there, its driver and its job's workers go,
    # and the Ray stays. (The hold reaches the warm Ray's workers from the first run's environment: the gate was open.)
    gate.unlink()
    held = manager.start(config)
    wait_for(lambda: manager.get(held).progress.phase == "embedding" or not manager.get(held).active, timeout_s=120)
    assert manager.get(held).progress.phase == "embedding", manager.log_tail(held)
    assert warm.read_state(manager.root)["pid"] == state["pid"] and _joined_warm(manager, held)
    job = re.search(r"Ray job (\w+)", RunDir(manager.root / held).log.read_text()).group(1)
    workers = with_environment("RAY_JOB_ID", job)  # found as the warm Ray finds them: by Ray's own job id
    assert workers  # its actors, held
    assert manager.cancel(held).state == "cancelled"
    assert run_processes(held) == []
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout_s=10)
    assert alive(state["pid"], state["pid_start"])
    gate.touch()

    # A warm Ray killed outright (its whole group: GCS, raylet, workers) is replaced by the next run.
    os.killpg(state["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["pid"]), timeout_s=30)
    after = _finish(manager, config)
    replaced = warm.read_state(manager.root)
    assert replaced and replaced["pid"] != state["pid"] and _joined_warm(manager, after)


def test_a_warm_ray_stops_when_idle_and_when_its_owner_is_gone(tmp_path):
    """Cost: two Ray starts, ~10-20 s on 2 cores."""
    idle_root, orphan_root = tmp_path / "idle", tmp_path / "orphan"
    idle_root.mkdir(), orphan_root.mkdir()
    assert warm.address(idle_root, owner=os.getpid(), idle_s=1)
    first = warm.read_state(idle_root)
    wait_for(lambda: not alive(first["pid"]), timeout_s=60)
    assert not warm.state_path(idle_root).exists()

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert warm.address(orphan_root, owner=owner.pid, idle_s=600)
        second = warm.read_state(orphan_root)
        assert alive(second["pid"])
    finally:
        owner.kill()
        owner.wait()
    wait_for(lambda: not alive(second["pid"]), timeout_s=60)
    assert not warm.state_path(orphan_root).exists()


def test_only_a_dashboards_local_runs_ask_for_a_warm_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(warm.ENABLED_ENV, "1")
    assert warm.spawn_env(None) == {warm.OWNER_ENV: str(os.getpid())}
    assert warm.spawn_env("10.0.0.1:6379") == {}  # a cluster run joins its cluster, never the warm Ray
    monkeypatch.setenv(warm.ENABLED_ENV, "0")
    assert warm.spawn_env(None) == {}
    monkeypatch.delenv(warm.ENABLED_ENV)
    assert warm.spawn_env(None) == {}  # not a Streamlit server (`runs start`, this test): no Ray left behind
    from streamlit.runtime import Runtime

    monkeypatch.setattr(Runtime, "_instance", object())  # as `streamlit run` makes it
    assert warm.spawn_env(None) == {warm.OWNER_ENV: str(os.getpid())}
