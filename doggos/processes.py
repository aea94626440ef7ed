"""Detached processes: spawn them, tell whether one is still alive (pid + start time; zombies count as gone), signal them."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def alive(pid: int | None, start: str | None = None) -> bool:
    """True while `pid` runs (and, given `start`, is still the process that started then)."""
    if not pid:
        return False
    try:
        fields = _stat_fields(pid, missing_ok=False)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): fall back to a signal probe
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    if fields[0] in ("Z", "X"):  # a zombie has exited; it only waits to be reaped
        return False
    return start is None or fields[19] == start


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


def _stat_fields(pid: int, missing_ok: bool = True) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if missing_ok:
            return None
        raise
    return stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces: split after it


PROJECT_ROOT = Path(__file__).resolve().parent.parent
_children: list = []  # processes this one started; reaped so none lingers as a zombie that looks alive


def spawn_detached(args: list[str], log_path: Path, env: dict | None = None):
    """Start `python -m …` in its own session (so signals reach its whole group), output to `log_path`; returns at once.

    The project root leads PYTHONPATH, so `doggos` imports from any working directory.
    """
    import subprocess
    import sys

    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT, env=dict(os.environ, **(env or {}), PYTHONPATH=path), start_new_session=True,
        )
    _children.append(child)
    return child


def reap() -> None:
    """Collect the exit status of finished children started here."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
