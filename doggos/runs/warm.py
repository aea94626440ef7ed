"""The warm local Ray of one runs root: started by its first background run, joined by the next ones, gone when idle.

A dashboard's runs are launched again and again; starting a local Ray for each costs seconds. The warm Ray is a
detached process (`python -m doggos.runs.warm ROOT --owner PID`) holding a private local Ray; its address is in
`ROOT/.warm-ray.json`. Each run's driver joins it as its own Ray job, with no runtime environment (one costs 1-2 s of
worker start per job), so a cancel still kills one run's driver and its job's workers: Ray ends a job's workers with
its driver. (Killing them here as well, by their RAY_JOB_ID, once hit a worker the raylet was still starting: the
raylet then waited 60 s for it with its start slots taken, stalling the next run.) It stops by itself when
no job has used it for `DOGGOS_WARM_IDLE_S` seconds, or when its owner (the process that launched the runs: the
dashboard's server) is gone and no job is running. Never shared across runs roots, never joined by a cluster run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from doggos.base.processes import alive, process_start, signal_group, spawn_detached
from doggos.base.rundir import write_json_atomic

STATE = ".warm-ray.json"  # under the runs root: the warm Ray's pid, start time, address and owner
OWNER_ENV = "DOGGOS_WARM_OWNER"  # set in a background driver's environment: the pid whose runs may share a warm Ray
ENABLED_ENV = "DOGGOS_WARM_RAY"  # "0": every background run starts its own Ray, as `embed` does
IDLE_ENV = "DOGGOS_WARM_IDLE_S"
IDLE_S = 300.0  # a warm Ray no run has used for this long stops (a workshop's pause between two demos is shorter)
START_TIMEOUT_S = 60.0  # a warm Ray that has not written its address by then is given up: the run starts its own
CHECK_EVERY_S = 0.5  # how often the warm Ray looks for running jobs and its owner
# Variables of the first driver that must not reach the warm Ray: it outlives that run and serves the next ones.
# (The tests' DOGGOS_TEST_HOLD does reach it, and so every later run's actors: runs join with no runtime_env.)
PRIVATE_ENV = ("DOGGOS_RUN_ID", OWNER_ENV, "RAY_ADDRESS")

log = logging.getLogger("doggos")


def spawn_env(ray_address: str | None) -> dict[str, str]:
    """What RunManager adds to a background driver's environment: this process as the owner of the warm Ray its run
    may join. Only for a local run launched by the dashboard's server (a process that stays), unless DOGGOS_WARM_RAY
    says 1 (always) or 0 (never): a one-off `runs start`, or a test's AppTest, would leave a Ray behind for nothing."""
    wanted = os.environ.get(ENABLED_ENV, "")
    if ray_address or os.environ.get("RAY_ADDRESS") or wanted == "0":
        return {}
    if wanted != "1" and not _serving():
        return {}
    return {OWNER_ENV: str(os.getpid())}


def _serving() -> bool:
    """Whether this process is a Streamlit server (`streamlit run`), found without importing Streamlit here."""
    runtime = sys.modules.get("streamlit.runtime")
    return bool(runtime is not None and runtime.exists())


def state_path(root: Path) -> Path:
    return Path(root) / STATE


def read_state(root: Path) -> dict | None:
    """The warm Ray's record, if its process is still alive; else None."""
    try:
        state = json.loads(state_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not alive(state.get("pid"), state.get("pid_start")):
        return None
    return state


def address(root: Path, owner: int, idle_s: float | None = None) -> str | None:
    """The address of the runs root's warm Ray, started now when none is alive; None when it cannot start (the run
    then starts a private local Ray, as before). This process is then set to authenticate as the warm Ray asks."""
    state = _find_or_start(Path(root), owner, idle_s)
    if state is None:
        return None
    if state.get("auth") == "token" and os.environ.get("RAY_AUTH_MODE") != "token":
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()  # sets RAY_AUTH_MODE=token and refreshes Ray's config read at its import
    return state["address"]


def _find_or_start(root: Path, owner: int, idle_s: float | None) -> dict | None:
    with open(root / ".warm-ray.lock", "a") as lock:  # two drivers never start two warm Rays
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(root)
        if state and state.get("address"):
            _adopt(root, state, owner)
            return state
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        idle = idle_s if idle_s is not None else float(os.environ.get(IDLE_ENV) or IDLE_S)
        args = ["-m", "doggos.runs.warm", str(root), "--owner", str(owner), "--idle-s", str(idle)]
        child = spawn_detached(args, root / ".warm-ray.log", env=env, replace_env=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and child.poll() is None:
            state = read_state(root)
            if state and state.get("pid") == child.pid and state.get("address"):
                log.info("started a warm local Ray for this runs root (pid %d)", child.pid)
                return state
            time.sleep(0.05)
        log.warning("the warm local Ray did not start (see %s): this run starts its own", root / ".warm-ray.log")
        if child.poll() is None:
            signal_group(child.pid, signal.SIGKILL)  # its session: the GCS and raylet it may have started too
        return None


def _adopt(root: Path, state: dict, owner: int) -> None:
    """A later dashboard (the first has gone) takes the warm Ray over: it now lives as long as this one."""
    if state.get("owner") != owner:
        write_json_atomic(state_path(root), dict(state, owner=owner, owner_start=process_start(owner)))


def serve(root: Path, owner: int, idle_s: float) -> int:
    """The warm Ray's process: start a private local Ray, publish its address, stop when idle or orphaned."""
    import ray

    from doggos.pipeline.cluster import forbid_implicit_ray

    forbid_implicit_ray()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    mine = ray.get_runtime_context().get_job_id()
    me = os.getpid()
    owner_start = process_start(owner)
    # A new local Ray turns Ray's token authentication on (Ray 2.60), with the user's ~/.ray/auth_token: a driver
    # joining by address must ask for it too (it reads the same token file, or RAY_AUTH_TOKEN).
    write_json_atomic(state_path(root), {"pid": me, "pid_start": process_start(me), "owner": owner,
                                         "owner_start": owner_start, "address": ray.get_runtime_context().gcs_address,
                                         "auth": os.environ.get("RAY_AUTH_MODE", "")})
    last_used = time.monotonic()
    try:
        while not stop["now"]:
            time.sleep(CHECK_EVERY_S)
            state = _own_state(root, me)
            if state is None:  # replaced, or its record deleted (the runs root removed): nobody can find it
                return 0
            if _running_jobs(mine):
                last_used = time.monotonic()
                continue
            if not alive(state.get("owner"), state.get("owner_start")):
                return 0
            if time.monotonic() - last_used > idle_s:
                return 0
    finally:
        _forget(root, me)
        ray.shutdown()
    return 0


def _own_state(root: Path, pid: int) -> dict | None:
    try:
        state = json.loads(state_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if state.get("pid") == pid else None


def _forget(root: Path, pid: int) -> None:
    """Remove the record first, so no driver joins a Ray that is shutting down."""
    if _own_state(root, pid) is not None:
        state_path(root).unlink(missing_ok=True)


def _running_jobs(mine: str) -> int:
    """Drivers connected now, this process's own job aside."""
    from ray._private import state

    return sum(1 for job in state.jobs() if not job.get("IsDead") and job.get("JobID") != mine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doggos.runs.warm", description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--idle-s", type=float, default=IDLE_S)
    args = parser.parse_args(argv)
    return serve(Path(args.root), args.owner, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
