"""The thumbnail shelf: a finished run's thumbnails as one file of JPEG bytes plus row offsets, read a row at a time.

`<run>/thumbnails/` holds `shelf.bin` (every row's stored thumbnail bytes, concatenated in row-id order), `offsets.bin`
(rows + 1 little-endian int64: row r is bytes offsets[r]:offsets[r+1]) and `shelf.json` (rows, bytes, format, the
version of the Parquet it was built from and each file's row count). Reading a row costs two `pread`s, whatever the
run's size: no Parquet column chunk is decompressed, nothing but the asked rows comes into memory. The bytes are kept as
the Parquet has them (a null as none): `doggos.base.store.load_thumbnails` maps what is not an image to its placeholder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import operator
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doggos.base.rundir import RunDir, embedding_files, run_dir_of

FORMAT = 1  # shelf.json's "format": a shelf of another format is not read (ensure builds this one)
SHELF, OFFSETS, META = "shelf.bin", "offsets.bin", "shelf.json"
COLUMN = "thumbnail"
BATCH_ROWS = 1024  # rows per record batch while building: ~1.5 MB of 1.5 KB thumbnails in memory at a time
MEMO_SHELVES = 4  # parsed shelf.json kept per process: a 31,000-file run's file list is a few MB
_OFFSET = np.dtype("<i8")

log = logging.getLogger("doggos")


class _Damaged(Exception):
    """The shelf's files disagree with each other (truncated, overwritten): read the Parquet instead."""


@dataclasses.dataclass(frozen=True, eq=False)
class _Meta:
    """shelf.json, parsed: `files` are (name, rows, size, mtime_ns) in row-id order, `starts` each file's first row."""

    rows: int
    bytes: int
    version: str
    folder: tuple[int, int]  # the embeddings folder's (inode, mtime_ns) when the shelf was built
    files: tuple[tuple[str, int, int, int], ...]
    starts: np.ndarray  # len(files) + 1 row ids, the last one `rows`


# ---- building -------------------------------------------------------------------------------------------------------

def build(run: str | os.PathLike | RunDir) -> Path:
    """Build the run's shelf from its Parquet and put it in place, replacing any older one; returns its folder.

    Builders take turns (`<run>/thumbnails.lock`), so two at once both leave a whole shelf. Raises FileNotFoundError
    when the run has no Parquet, ValueError when a file has no thumbnail column."""
    run_dir = run_dir_of(run)
    with _build_lock(run_dir):
        return _build(run_dir)


def ensure(run: str | os.PathLike | RunDir) -> bool:
    """Build the run's shelf unless a current one is there; True when one is, after the call. Concurrent callers
    (threads or processes) build it once. It stats every Parquet file: call it when a run is opened, not per page."""
    run_dir = run_dir_of(run)
    if not embedding_files(run_dir):
        return False
    if is_current(run_dir):
        return True
    try:
        with _build_lock(run_dir):
            if not is_current(run_dir):  # another caller may have built it while this one waited for the lock
                _build(run_dir)
    except Exception as error:  # a full disk, a run deleted or rewritten meanwhile: pages read the Parquet instead
        log.warning("thumbnail shelf of %s not built: %s", run_dir.path, error)
        return False
    return is_current(run_dir)


@contextlib.contextmanager
def _build_lock(run_dir: RunDir) -> Iterator[None]:
    # flock, not a lock object: the dashboard's threads and a CLI process alike. Each open() is its own lock holder.
    with open(run_dir.thumbnails_lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the build raises


def _build(run_dir: RunDir) -> Path:
    """The build itself, with the lock held."""
    files = embedding_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir.embeddings} holds no Parquet files")
    _discard_leftovers(run_dir)
    # Taken before reading: a file rewritten during the build no longer matches it, so its rows are never served.
    snapshot = _snapshot(run_dir, files)
    folder = Path(tempfile.mkdtemp(dir=run_dir.path, prefix=".thumbnails-", suffix=".tmp"))
    try:
        counts, size = _write_shelf(files, folder)
        _write_meta(folder, snapshot, counts, size)
        _install(folder, run_dir.thumbnails)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages for reuse: hand them back
    return run_dir.thumbnails


def _discard_leftovers(run_dir: RunDir) -> None:
    # With the lock held no other builder is at work: these are the folders of one that was killed mid-build.
    for leftover in run_dir.path.glob(".thumbnails-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _snapshot(run_dir: RunDir, files: list[Path]) -> dict:
    """What the shelf's version is made of: the embeddings folder's inode and mtime (a republished run is a new folder;
    a file added or removed changes its mtime) and each file's name, size and mtime."""
    folder = run_dir.embeddings.stat()
    stats = [path.stat() for path in files]
    return {"folder": [folder.st_ino, folder.st_mtime_ns],
            "files": [[path.name, stat.st_size, stat.st_mtime_ns] for path, stat in zip(files, stats)]}


def _version(snapshot: dict) -> str:
    # Not store.run_version (the manifest's mtime): the driver builds the shelf before it writes the manifest, and a
    # manifest rewritten later would make a good shelf stale. The Parquet files are what the shelf is a copy of.
    return hashlib.sha256(json.dumps(snapshot, separators=(",", ":")).encode()).hexdigest()[:32]


def _write_shelf(files: list[Path], folder: Path) -> tuple[list[int], int]:
    """Stream every file's thumbnail column into shelf.bin and offsets.bin; returns each file's rows and the bytes."""
    counts, total = [], 0
    with open(folder / SHELF, "wb") as data, open(folder / OFFSETS, "wb") as offsets:
        offsets.write(np.zeros(1, _OFFSET).tobytes())
        for path in files:
            rows = 0
            for column in _thumbnail_batches(path):
                values, ends = _values_and_ends(column)
                data.write(values)
                offsets.write((ends + total).astype(_OFFSET).tobytes())
                total += int(ends[-1]) if len(ends) else 0
                rows += len(column)
            counts.append(rows)
    return counts, total


def _thumbnail_batches(path: Path) -> Iterator[pa.Array]:
    # pre_buffer would read the file's whole column first: at 100,000 rows in one file, ~150 MB at once.
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        names = parquet.schema_arrow.names
        if COLUMN not in names:
            raise ValueError(f"{path}: no {COLUMN} column (it has {', '.join(names)})")
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[COLUMN]):
            yield batch.column(0)


def _values_and_ends(column: pa.Array) -> tuple[memoryview | bytes, np.ndarray]:
    """A batch's thumbnail bytes as one buffer (no Python object per row) and where each row ends in it."""
    column = column.cast(pa.large_binary())  # 64-bit offsets whatever the Parquet's type
    if column.null_count:
        # A null slot's offsets may span bytes all the same (Arrow allows it): nulls become empty values first.
        column = pc.fill_null(column, pa.scalar(b"", pa.large_binary()))
    _, offsets, values = column.buffers()
    offsets = np.frombuffer(offsets, np.int64, count=len(column) + 1, offset=column.offset * 8)
    start, stop = int(offsets[0]), int(offsets[-1])
    return (memoryview(values)[start:stop] if values is not None else b""), offsets[1:] - start


def _write_meta(folder: Path, snapshot: dict, counts: list[int], size: int) -> None:
    files = [[name, rows, file_size, mtime] for (name, file_size, mtime), rows in zip(snapshot["files"], counts)]
    meta = {"format": FORMAT, "rows": sum(counts), "bytes": size, "version": _version(snapshot),
            "folder": snapshot["folder"], "files": files}
    (folder / META).write_text(json.dumps(meta), encoding="utf-8")


def _install(folder: Path, final: Path) -> None:
    """Rename the built folder into place. A folder cannot be renamed over another, so an old shelf goes aside first:
    between the two renames a reader finds no shelf and reads the Parquet, never half of a shelf."""
    aside = folder.with_suffix(".old")  # as unique as the temp folder's name
    with contextlib.suppress(FileNotFoundError):
        os.rename(final, aside)
    os.rename(folder, final)
    shutil.rmtree(aside, ignore_errors=True)  # a reader still holding its files reads on: they go when it closes them


# ---- reading --------------------------------------------------------------------------------------------------------

def is_current(run: str | os.PathLike | RunDir) -> bool:
    """Whether the run has a whole shelf built from its Parquet as it is now (every file's size and mtime checked)."""
    run_dir = run_dir_of(run)
    with _opened(run_dir) as found:
        if found is None:
            return False
        directory, meta = found
        try:
            current = _version(_snapshot(run_dir, embedding_files(run_dir)))
            return meta.version == current and _sizes_agree(directory, meta)
        except FileNotFoundError:  # a file or the shelf went while we looked
            return False


def read(run: str | os.PathLike | RunDir, rows: Iterable[int]) -> list[bytes] | None:
    """The stored bytes of each of `rows` (in that order, repeats allowed), or None when the run has no current shelf.

    Checked per call, at a cost independent of the run's size: the embeddings folder is the one the shelf was built
    from, and every file the rows come from has the size and mtime it had then. (A file rewritten in place with a
    different number of rows, but none of these rows, goes unseen here; `is_current` sees it. doggos never does that:
    a run changes by republishing its folder.) Raises ValueError for a row outside the run."""
    wanted = [operator.index(row) for row in rows]
    run_dir = run_dir_of(run)
    with _opened(run_dir) as found:
        if found is None:
            return None
        directory, meta = found
        try:
            if _folder_stat(run_dir) != meta.folder:
                return None
            for row in wanted:
                _check_row(row, meta.rows)
            if not _files_unchanged(run_dir, meta, wanted):
                return None
            return _read_rows(directory, meta, wanted)
        except (FileNotFoundError, _Damaged):  # the run or the shelf replaced meanwhile, or a damaged shelf
            return None


def _check_row(row: int, rows: int) -> None:
    if not 0 <= row < rows:
        raise ValueError(f"row {row} is out of range: the run has {rows} row{'' if rows == 1 else 's'}")


@contextlib.contextmanager
def _opened(run_dir: RunDir) -> Iterator[tuple[int, _Meta] | None]:
    """The shelf folder's fd with its parsed shelf.json, or None. Every file of one read is opened through this fd: a
    shelf swapped in meanwhile never mixes its offsets with the old one's bytes."""
    try:
        directory = os.open(run_dir.thumbnails, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    try:
        meta = _meta(directory)
        yield None if meta is None else (directory, meta)
    finally:
        os.close(directory)


_memo: dict[tuple, _Meta] = {}
_memo_lock = threading.Lock()


def _meta(directory: int) -> _Meta | None:
    """shelf.json parsed once per process per file (keyed by its inode and mtime): a big run's file list is MBs."""
    try:
        fd = os.open(META, os.O_RDONLY, dir_fd=directory)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as handle:
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with _memo_lock:
            if key in _memo:
                return _memo[key]
        meta = _parse(handle.read())
    if meta is not None:
        with _memo_lock:
            while len(_memo) >= MEMO_SHELVES:
                _memo.pop(next(iter(_memo)))  # the oldest parsed
            _memo[key] = meta
    return meta


def _parse(raw: bytes) -> _Meta | None:
    """None for a shelf.json of another format or not whole: the shelf is then not read (ensure builds it again)."""
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            return None
        files = tuple((str(name), int(rows), int(size), int(mtime)) for name, rows, size, mtime in data["files"])
        starts = np.concatenate([[0], np.cumsum([f[1] for f in files], dtype=np.int64)]).astype(np.int64)
        meta = _Meta(rows=int(data["rows"]), bytes=int(data["bytes"]), version=str(data["version"]),
                     folder=tuple(data["folder"]), files=files, starts=starts)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta if meta.rows == int(starts[-1]) else None


def _folder_stat(run_dir: RunDir) -> tuple[int, int]:
    stat = run_dir.embeddings.stat()
    return (stat.st_ino, stat.st_mtime_ns)


def _files_unchanged(run_dir: RunDir, meta: _Meta, rows: list[int]) -> bool:
    """Whether every Parquet file holding one of `rows` still has the size and mtime the shelf was built from."""
    for index in np.unique(np.searchsorted(meta.starts, rows, side="right") - 1):
        name, _, size, mtime = meta.files[index]
        stat = (run_dir.embeddings / name).stat()
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
            return False
    return True


def _sizes_agree(directory: int, meta: _Meta) -> bool:
    return (os.stat(OFFSETS, dir_fd=directory).st_size == (meta.rows + 1) * _OFFSET.itemsize
            and os.stat(SHELF, dir_fd=directory).st_size == meta.bytes)


def _read_rows(directory: int, meta: _Meta, rows: list[int]) -> list[bytes]:
    with _open_at(OFFSETS, directory) as offsets, _open_at(SHELF, directory) as data:
        if (os.fstat(offsets).st_size, os.fstat(data).st_size) != ((meta.rows + 1) * _OFFSET.itemsize, meta.bytes):
            raise _Damaged()
        return [_read_row(offsets, data, row, meta.bytes) for row in rows]


def _read_row(offsets: int, data: int, row: int, size: int) -> bytes:
    start, end = struct.unpack("<qq", os.pread(offsets, 16, row * _OFFSET.itemsize))
    if not 0 <= start <= end <= size:
        raise _Damaged()
    value = os.pread(data, end - start, start)
    if len(value) != end - start:
        raise _Damaged()
    return value


@contextlib.contextmanager
def _open_at(name: str, directory: int) -> Iterator[int]:
    fd = os.open(name, os.O_RDONLY, dir_fd=directory)
    try:
        yield fd
    finally:
        os.close(fd)
