"""Processes, portably (psutil): spawn detached ones, tell whether one is still alive, find a run's, signal and measure them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: doggos/base/processes.py → ../../..
_children: list[subprocess.Popen] = []  # processes this one started; reaped so none lingers as a zombie that looks alive
_exit_codes: dict[int, int] = {}  # pid -> returncode of those reaped: says how a driver ended


def process_start(pid: int) -> float | None:
    """The process's start time (seconds since the epoch): with the pid, it names one process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# How far a process's start time may move between two looks. On Linux psutil adds /proc/stat's boot time, whole
# seconds that step by one when NTP or a VM's clock moves the wall clock across a second, so a live driver can seem
# to have started a second later. A reused pid cannot have started within seconds of the process that held it.
START_SLACK_S = 5.0


def alive(pid: int | None, start: float | None = None, environment: tuple[str, str] | None = None) -> bool:
    """True while `pid` runs and is still the process meant; a zombie has exited.

    Given `start`, the process must have started then (within START_SLACK_S). Given `environment` (name, value), a
    process whose environment holds it is the one meant whatever its start time: that mark cannot drift.
    """
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        if start is None or abs(process.create_time() - start) < START_SLACK_S:
            return True
        return environment is not None and process.environ().get(environment[0]) == environment[1]
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: it exists
        return True


def signal_group(pid: int, sig: int = signal.SIGTERM) -> None:
    """Signal the process group that `pid` leads (a detached driver and all it started), else `pid` alone:
    a foreground `embed` shares its group with the user's shell, which must not be hit."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def with_environment(name: str, value: str) -> list[int]:
    """Live processes whose environment has `name=value` (this one excluded): a run's driver and the Ray it started."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(name) == value and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def tree_pss(root: int | None = None) -> int:
    """Bytes of proportional set size (shared pages split fairly) of a process and all its descendants."""
    try:
        top = psutil.Process(root or os.getpid())
        processes = [top, *top.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)  # PSS where the OS reports it (Linux), else RSS
        except psutil.Error:
            continue
    return total


def return_free_memory() -> None:
    """Hand memory this process has freed back to the system: Arrow's allocator and glibc's both keep freed pages for
    reuse, and a long-lived process (a Ray worker between tasks, a driver between steps) would hold them (Linux: glibc's
    `malloc_trim`, as Dask's workers do; elsewhere only Arrow's)."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


class PeakMemory:
    """Peak proportional set size (PSS: shared pages split fairly) of this process and all its descendants."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, tree_pss())


def spawn_detached(args: list[str], log_path: Path, env: dict | None = None, replace_env: bool = False,
                   nice: int = 0) -> subprocess.Popen:
    """Start `python …` in its own session (so signals reach its whole group), output to `log_path`; returns at once.

    The project root leads PYTHONPATH, so `doggos` imports from any working directory. `env` is added to this
    process's environment, or with `replace_env` is the whole of it. `nice` > 0 lowers its CPU priority (and so that
    of everything it starts) by that much from the start, imports included: through `nice`, not a preexec function,
    which is unsafe in a process with threads (the dashboard's server).
    """
    base = {} if replace_env else dict(os.environ)
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), (env or {}).get("PYTHONPATH", base.get("PYTHONPATH"))]))
    command = [sys.executable, *args]
    if nice > 0 and shutil.which("nice"):
        command = [shutil.which("nice"), "-n", str(nice), *command]  # nice execs python: the pid stays the child's
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT, env={**base, **(env or {}), "PYTHONPATH": path}, start_new_session=True,
        )
    _children.append(child)
    return child


def reap() -> None:
    """Collect the exit status of finished children started here."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
            _exit_codes[child.pid] = child.returncode


def how_it_ended(pid: int | None) -> str | None:
    """How a child started here ended ("killed by SIGKILL", "exit code 1"); None while it runs, or for anyone else's."""
    reap()  # it may have died since the last reap: the caller has just seen it gone
    code = _exit_codes.get(pid) if pid else None
    if code is None:
        return None
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


NICE_ENV = "DOGGOS_DRIVER_NICE"
DRIVER_NICE = 10  # background runs (their drivers, local Ray and actors) yield the CPU to the dashboard's server


def driver_nice() -> int:
    """How much lower a background run's CPU priority is than its launcher's: DOGGOS_DRIVER_NICE, else DRIVER_NICE."""
    try:
        return max(0, int(os.environ.get(NICE_ENV) or DRIVER_NICE))
    except ValueError:
        return DRIVER_NICE
