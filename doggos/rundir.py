"""The files of one run on disk, and atomic JSON writes so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class RunDir:
    """Names every file of a run: `config.json`, `status.json`, `log.txt`, `embeddings/`, `failures.json`,
    `ray_stats.txt`, `projections/` and `manifest.json`, which is written last (a run is finished only when it says so)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    config = property(lambda self: self.path / "config.json")
    status = property(lambda self: self.path / "status.json")
    log = property(lambda self: self.path / "log.txt")
    embeddings = property(lambda self: self.path / "embeddings")
    staging = property(lambda self: self.path / "embeddings.partial")  # renamed to embeddings/ only on success
    failures = property(lambda self: self.path / "failures.json")
    ray_stats = property(lambda self: self.path / "ray_stats.txt")
    projections = property(lambda self: self.path / "projections")
    manifest = property(lambda self: self.path / "manifest.json")

    @property
    def id(self) -> str:
        return self.path.name

    def read_manifest(self) -> dict | None:
        return read_json(self.manifest)

    def is_finished(self) -> bool:
        manifest = self.read_manifest()
        return bool(manifest and manifest.get("status") == "succeeded" and self.embeddings.is_dir())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, NotADirectoryError):
        return default


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def update_status(run_dir: RunDir, **changes: Any) -> dict:
    """Merge `changes` into status.json (atomically) and stamp the time; returns the new status."""
    status = read_json(run_dir.status, {}) or {}
    status.update(changes, updated=now_iso())
    write_json_atomic(run_dir.status, status)
    return status
