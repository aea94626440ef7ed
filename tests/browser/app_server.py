"""The dashboard served for real for the browser tier: `doggos.bench.app_server`, with its runs in a test's folder."""

from __future__ import annotations

from pathlib import Path

from doggos.bench.app_server import AppServer, serve

__all__ = ["AppServer", "start_app"]


def start_app(home: Path, log_path: Path) -> AppServer:
    """Start the app with its runs under `home/runs` (so the demo kit lands in `home/demo`) and wait until healthy."""
    runs_dir = home / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    return serve(runs_dir, log_path)
