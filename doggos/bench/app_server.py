"""The dashboard served for real, `streamlit run app.py` on a free loopback port over a given runs folder: what the
map-scale benchmark measures and the browser tests drive."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from doggos.base.processes import PROJECT_ROOT

START_TIMEOUT_S = 90.0  # a cold import of streamlit + pandas on a busy 2-core machine takes ~5-20 s
STOP_TIMEOUT_S = 15.0  # SIGTERM lets streamlit close its sessions; after this it is killed


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; the tiny race until streamlit binds is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AppServer:
    """A running `streamlit run app.py`: where it answers, where its runs are, where it logs."""

    process: subprocess.Popen
    url: str
    runs_dir: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server's process group (it runs in its own session), then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:  # already gone between poll() and killpg()
            pass


def serve(runs_dir: Path, log_path: Path, start_timeout_s: float = START_TIMEOUT_S) -> AppServer:
    """Start the app over `runs_dir` and wait until it answers its health check; its output goes to `log_path`."""
    port = free_port()
    env = {
        **os.environ,
        "DOGGOS_RUNS_DIR": str(runs_dir),
        "HF_HUB_OFFLINE": "1",  # the demo kit's model is local; a miss must fail at once, never reach for the Hub
        "PYTHONUNBUFFERED": "1",  # the log file shows what happened up to a failure
    }
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",  # loopback only: nothing outside this machine talks to it
        "--server.fileWatcherType", "none",  # nothing edits the code meanwhile; other edits must not rerun it
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = AppServer(process, f"http://127.0.0.1:{port}", Path(runs_dir), log_path)
    try:
        _wait_healthy(server, start_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: AppServer, timeout_s: float) -> None:
    """Poll streamlit's own health endpoint until it says ok; fail at once if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:  # the pause between polls doubles as the check that the server is still alive
            code = server.process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"streamlit exited with code {code} before serving; its log:\n{server.log_tail()}")
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout_s:.0f} s; "
                       f"its log:\n{server.log_tail()}")
