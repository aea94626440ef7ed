"""A run's driver is recognised by its pid, its start time and its environment mark, even when the clock moves."""

import json
import os
import subprocess
import sys

import psutil
import pytest
from conftest import wait_for

from doggos.base.config import RunConfig
from doggos.base.processes import alive, how_it_ended, process_start, spawn_detached
from doggos.base.records import update_status
from doggos.base.rundir import RunDir
from doggos.runs.manager import RUN_ENV, RunManager

HOUR_S = 3600.0


@pytest.fixture
def sleeper():
    """A child process that carries a mark in its environment, as a run's driver carries its run id."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                             env=dict(os.environ, DOGGOS_TEST_MARK="this-one"))
    yield child
    child.kill()
    child.wait()


@pytest.mark.skipif(not psutil.LINUX, reason="psutil adds /proc/stat's boot time to a start only on Linux")
def test_a_process_is_still_itself_when_the_boot_time_moves_by_a_second(sleeper, monkeypatch):
    start = process_start(sleeper.pid)
    platform = psutil._psplatform
    boot_time = platform.boot_time
    # What NTP or a VM's clock does to /proc/stat's whole-second btime during a long run.
    monkeypatch.setattr(platform, "boot_time", lambda: boot_time() + 1.0)
    assert process_start(sleeper.pid) == pytest.approx(start + 1.0)
    assert alive(sleeper.pid, start)


def test_a_start_far_off_names_another_process_unless_the_environment_mark_matches(sleeper):
    start = process_start(sleeper.pid)
    assert alive(sleeper.pid, start)
    assert not alive(sleeper.pid, start - HOUR_S)  # a reused pid
    assert not alive(sleeper.pid, start - HOUR_S, environment=("DOGGOS_TEST_MARK", "another-one"))
    assert alive(sleeper.pid, start - HOUR_S, environment=("DOGGOS_TEST_MARK", "this-one"))


def test_an_ended_process_is_not_alive(sleeper):
    start = process_start(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    assert not alive(sleeper.pid, start, environment=("DOGGOS_TEST_MARK", "this-one"))


def test_a_child_started_here_says_how_it_ended_as_soon_as_it_is_seen_gone(tmp_path):
    killed = spawn_detached(["-c", "import time; time.sleep(120)"], tmp_path / "killed.txt")
    failed = spawn_detached(["-c", "raise SystemExit(3)"], tmp_path / "failed.txt")
    assert how_it_ended(killed.pid) is None  # still running
    killed.kill()  # as the OOM killer would
    for child, ending in ((killed, "killed by SIGKILL"), (failed, "exit code 3")):
        wait_for(lambda: not alive(child.pid), timeout_s=30)  # a zombie not yet reaped counts as gone
        assert how_it_ended(child.pid) == ending
    assert how_it_ended(os.getpid()) is None  # not a child of this process


def test_a_live_driver_is_not_marked_failed_when_its_recorded_start_is_off(tmp_path):
    """The manager kills what it believes is a dead run's leftovers: a clock step must never make it do that."""
    run_id = "20250105-000000-clock"
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                              env=dict(os.environ, **{RUN_ENV: run_id}))
    try:
        run = RunDir(tmp_path / run_id)
        run.path.mkdir()
        run.config.write_text(json.dumps(RunConfig(source="/data/dogs", model="m").to_dict()))
        update_status(run, state="running", pid=driver.pid, pid_start=process_start(driver.pid) + HOUR_S)
        assert RunManager(tmp_path).get(run_id).state == "running"
        assert driver.poll() is None
        driver.kill()
        driver.wait()
        info = RunManager(tmp_path).get(run_id)
        assert info.state == "failed" and "exited unexpectedly" in info.status.error
    finally:
        driver.kill()
