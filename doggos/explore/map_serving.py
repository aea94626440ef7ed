"""What the app's web routes hand the browser for a finished run: a point buffer, one point's facts, a thumbnail.

Every name that arrives in a URL is checked here, before any file is opened: a run id must be a finished run's folder
directly under the runs root, a map or check name a plain file stem that exists. What is read is cached per file and
its modification time, so a thousand hovers read one table, and a rewritten file is never served stale.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from doggos.base import shelf, store
from doggos.base.rundir import RunDir
from doggos.explore import map_payload

if TYPE_CHECKING:
    import pandas as pd

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")  # run ids and result stems: no slash, no '..'


_PARQUET_READS = threading.BoundedSemaphore(2)  # thumbnails read from Parquet at once, server-wide (see thumbnail)


class NotServed(LookupError):
    """The URL names nothing this app serves (an unknown, unfinished or malformed run, map, check or row)."""


def finished_run(root: str | os.PathLike, run_id: str) -> RunDir:
    """The finished run `run_id` directly under `root`; NotServed for anything else."""
    if not _PLAIN_NAME.match(run_id) or ".." in run_id:
        raise NotServed(f"run {run_id!r}: not a run id")
    run = RunDir(Path(root) / run_id)
    if not run.manifest.is_file():
        raise NotServed(f"run {run_id!r}: no finished run of that id")
    return run


def _result_file(folder: Path, name: str, suffix: str) -> Path:
    if not _PLAIN_NAME.match(name) or ".." in name:
        raise NotServed(f"{name!r}: not a result name")
    path = folder / f"{name}{suffix}"
    if not path.is_file():
        raise NotServed(f"{name!r}: no such result")
    return path


def map_file(run: RunDir, name: str) -> Path:
    return _result_file(run.projections, name, ".parquet")


def quality_file(run: RunDir, name: str) -> Path:
    """A complete label check's per-image table (its JSON summary, written last, must be there too)."""
    _result_file(run.quality, name, ".json")
    return _result_file(run.quality, name, ".parquet")


def points_buffer(run: RunDir, map_name: str, quality_name: str | None = None) -> bytes:
    """The map's point buffer (see map_payload), coloured by label agreement when a check is named."""
    projection = map_file(run, map_name)
    quality = quality_file(run, quality_name) if quality_name else None
    return _points_buffer(str(projection), _mtime(projection), str(quality) if quality else None,
                          _mtime(quality) if quality else 0)


@functools.lru_cache(maxsize=4)  # 8 MB each at a million points
def _points_buffer(projection: str, projection_mtime: int, quality: str | None, quality_mtime: int) -> bytes:
    import pyarrow.parquet as pq

    points = pq.read_table(projection, columns=["row", "x", "y", "class"]).to_pandas()
    points = points.rename(columns={"class": "label"})
    agreement = pq.read_table(quality, columns=["row", "agreement", "suggested"]).to_pandas() if quality else None
    return map_payload.pack(points, agreement)[0]


def point_facts(run: RunDir, map_name: str, row: int, quality_name: str | None = None) -> dict:
    """The hover card's facts for one point of a map: label, file name, path and, given a check, its verdict."""
    projection = map_file(run, map_name)
    table = _table(str(projection), _mtime(projection), ("path", "class"))
    if not 0 <= row < table.num_rows:
        raise NotServed(f"row {row}: the map has {table.num_rows:,} points")
    path, label = table.column("path")[row].as_py(), table.column("class")[row].as_py()
    agreement = suggested = None
    if quality_name:
        quality = quality_file(run, quality_name)
        checked = _table(str(quality), _mtime(quality), ("row", "agreement", "suggested"))
        where = _row_position(str(quality), _mtime(quality), row)
        if where is not None:
            agreement = checked.column("agreement")[where].as_py()
            suggested = checked.column("suggested")[where].as_py()
    return map_payload.point_facts(path, label, row, agreement, suggested)


def map_rows(run: RunDir, map_name: str, rows) -> pd.DataFrame:
    """row, path, label of some of a map's points (a selection), in the order given."""
    import pandas as pd
    import pyarrow as pa

    projection = map_file(run, map_name)
    table = _table(str(projection), _mtime(projection), ("path", "class"))
    rows = [int(r) for r in rows if 0 <= int(r) < table.num_rows]
    picked = table.take(pa.array(rows, pa.int64()))
    return pd.DataFrame({"row": pd.array(rows, dtype="int64"), "path": picked.column("path").to_pylist(),
                         "label": picked.column("class").to_pylist()})


def label_counts(run: RunDir, map_name: str) -> tuple[list[str], list[int]]:
    """The map's labels in the order the point buffer codes them (sorted), and the points of each."""
    import numpy as np
    import pyarrow.compute as pc

    projection = map_file(run, map_name)
    classes = _table(str(projection), _mtime(projection), ("path", "class")).column("class")
    counts = pc.value_counts(pc.fill_null(classes, ""))  # a missing label is "", as the point buffer codes it
    names = counts.field("values").to_pylist()
    order = np.argsort(np.array([str(n) for n in names], dtype=object), kind="stable")
    return [str(names[i]) for i in order], [int(counts.field("counts")[int(i)].as_py()) for i in order]


def thumbnail(run: RunDir, row: int) -> bytes:
    """One row's stored thumbnail (the grey placeholder when it is damaged): from the run's shelf in two preads; a run
    without one yet (its shelf is being built) is read from the Parquet, a few requests at a time, because that costs
    a column chunk each and a zoomed-in map asks for 300 at once."""
    if not 0 <= row < 2**62:
        raise NotServed(f"row {row}: no such row")
    try:
        shelved = shelf.read(run, [row])
        if shelved is not None:
            return store.usable_thumbnail(shelved[0])
        with _PARQUET_READS:
            return store.load_thumbnails(run, [row])[0]
    except (IndexError, ValueError, OSError) as error:  # past the last row; the run's files went meanwhile
        raise NotServed(f"row {row}: {error}") from error


@functools.lru_cache(maxsize=4)  # Arrow columns: ~80 MB at a million paths, shared by every session's hovers
def _table(path: str, mtime: int, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=list(columns))


def _row_position(path: str, mtime: int, row: int) -> int | None:
    """Where row id `row` is in a check's table (its rows need not be in row-id order), or None."""
    import numpy as np

    order, rows = _row_order(path, mtime)
    at = int(np.searchsorted(rows, row))
    return int(order[at]) if at < len(rows) and rows[at] == row else None


@functools.lru_cache(maxsize=2)
def _row_order(path: str, mtime: int):
    import numpy as np

    rows = _table(path, mtime, ("row", "agreement", "suggested")).column("row").to_numpy()
    order = np.argsort(rows, kind="stable")
    return order, rows[order]


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns
