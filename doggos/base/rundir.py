"""The files of one run on disk, and the one atomic-write helper, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class RunDir:
    """Names every file of a run: `config.json`, `status.json`, `log.txt`, `output.txt`, `embeddings/`, `failures.json`,
    `embeddings.kept/` (a failed attempt's rows, for a resume), `ray_stats.txt`, `projections/`, `quality/`,
    `thumbnails/` and `manifest.json`, which is written last (a run is finished only when it says so). Their contents
    are read and written through `doggos.base.records`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()

    config = property(lambda self: self.path / "config.json")
    status = property(lambda self: self.path / "status.json")
    log = property(lambda self: self.path / "log.txt")  # what doggos did, start to outcome
    output = property(lambda self: self.path / "output.txt")  # the driver process's own output: Ray's messages
    embeddings = property(lambda self: self.path / "embeddings")
    staging = property(lambda self: self.path / "embeddings.partial")  # renamed to embeddings/ only on success
    # Parquet an attempt that failed had written (doggos.pipeline.reuse): a resume carries its rows over.
    kept = property(lambda self: self.path / "embeddings.kept")
    failures = property(lambda self: self.path / "failures.json")
    ray_stats = property(lambda self: self.path / "ray_stats.txt")
    projections = property(lambda self: self.path / "projections")
    quality = property(lambda self: self.path / "quality")
    # The thumbnail shelf (doggos.base.shelf): every thumbnail's JPEG bytes in one file, read a row at a time.
    thumbnails = property(lambda self: self.path / "thumbnails")
    # Held (flock) while the shelf is built: a file beside the folder, since the folder itself is swapped by renames.
    thumbnails_lock = property(lambda self: self.path / "thumbnails.lock")
    # Text features of the label-quality step's zero-shot prompts, computed by the embedder actors during the run.
    prompt_features = property(lambda self: self.path / "quality" / "prompt_features.parquet")
    manifest = property(lambda self: self.path / "manifest.json")
    # Made by a cancel before it signals the driver (a file of its own: status.json is the driver's to rewrite).
    cancel_request = property(lambda self: self.path / "cancel.requested")

    @property
    def id(self) -> str:
        return self.path.name


def run_dir_of(run) -> RunDir:
    """A RunDir from a RunDir, a path, or anything with a `.path` (a RunInfo)."""
    return run if isinstance(run, RunDir) else RunDir(getattr(run, "path", run))


def embedding_files(run) -> list[Path]:
    """The run's Parquet files in a fixed order: a row's position in this order is its id everywhere (here, below
    both `doggos.base.store` and `doggos.base.shelf`, so the two number rows the same way)."""
    folder = run_dir_of(run).embeddings
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` in one step when the block succeeds, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written to a temporary file, flushed to disk, then renamed over `path`."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, NotADirectoryError):
        return default


def now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
