"""What the app's web routes hand the browser for a finished run: a point buffer, one point's facts, a thumbnail.

Every name that arrives in a URL is checked here, before any file is opened: a run id must be a finished run's folder
directly under the runs root, a map or check name a plain file stem that exists. What is read is cached per file and
its modification time, so a thousand hovers read one table, and a rewritten file is never served stale. Labels are
the effective ones (`doggos.base.decisions`), cached per version of the run's decisions; images a decision excluded
are left out of the map (flagged in the buffer) unless asked for.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from doggos.base import decisions, shelf, store
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


def points_buffer(run: RunDir, map_name: str, quality_name: str | None = None, include_excluded: bool = False) -> bytes:
    """The map's point buffer (see map_payload) in effective labels, coloured by label agreement when a check is
    named; excluded images are flagged left out unless `include_excluded`."""
    projection = map_file(run, map_name)
    quality = quality_file(run, quality_name) if quality_name else None
    return _points_buffer(str(projection), _mtime(projection), str(quality) if quality else None,
                          _mtime(quality) if quality else 0, str(run.path), decisions.version(run), include_excluded)


@functools.lru_cache(maxsize=4)  # 8 MB each at a million points
def _points_buffer(projection: str, projection_mtime: int, quality: str | None, quality_mtime: int, run_path: str,
                   labels_version: tuple[int, int], include_excluded: bool) -> bytes:
    import pyarrow.parquet as pq

    points = pq.read_table(projection, columns=["row", "x", "y"]).to_pandas()
    labels, excluded = _effective(projection, projection_mtime, run_path, labels_version)
    points["label"] = store.text_series(labels)
    agreement = _checked(quality, quality_mtime, run_path, labels_version).to_pandas() if quality else None
    return map_payload.pack(points, agreement, None if include_excluded else excluded)[0]


@functools.lru_cache(maxsize=2)
def _checked(quality: str, quality_mtime: int, run_path: str, labels_version: tuple[int, int]) -> pa.Table:
    """A label check's row, agreement and suggested columns: as stored, or, once the run has label decisions, as the
    re-check from its stored neighbours gives them (`doggos.explore.label_review`), so the map's agreement colours
    and hover cards agree with the Quality page."""
    import pyarrow.parquet as pq

    if labels_version == (0, 0):
        return _table(quality, quality_mtime, ("row", "agreement", "suggested"))
    from doggos.base.rundir import read_json
    from doggos.explore import label_review, quality_step
    from doggos.explore.quality import QualityParams

    summary = read_json(Path(quality).with_suffix(".json"), {}) or {}
    try:
        params = QualityParams(**summary.get("params", {}))
        first = quality_step.read_results(Path(quality).parent, params)
    except (TypeError, ValueError, FileNotFoundError):  # an unreadable summary: the stored figures, as before
        return pq.read_table(quality, columns=["row", "agreement", "suggested"])
    images = label_review.recheck(first, _state(run_path, labels_version)).images
    # A reviewed image is no suspect any more (as on the Quality page): its label stands as the suggestion.
    suggested = np.where(images["reviewed"].to_numpy(bool), images["class"].to_numpy(dtype=object),
                         images["suggested"].to_numpy(dtype=object))
    return pa.table({"row": pa.array(images["row"], pa.int64()), "agreement": pa.array(images["agreement"], pa.float64()),
                     "suggested": pa.array(suggested, pa.string(), from_pandas=True)})


@functools.lru_cache(maxsize=4)
def _effective(projection: str, mtime: int, run_path: str, labels_version: tuple[int, int]):
    """The map's points' effective labels (Arrow) and excluded flags under the run's decisions of that version."""
    table = _table(projection, mtime, ("path", "class"))
    classes = table.column("class")
    labels, excluded = store.effective_labels(store.text_series(table.column("path")), classes.combine_chunks() if
                                              isinstance(classes, pa.ChunkedArray) else classes,
                                              _state(run_path, labels_version))
    excluded.flags.writeable = False  # cached: shared by every request
    return labels, excluded


@functools.lru_cache(maxsize=8)
def _state(run_path: str, labels_version: tuple[int, int]) -> decisions.LabelState:
    return decisions.state(run_path)


def _decided(run: RunDir, projection: Path):
    """(effective labels, excluded) of a map's points, now."""
    return _effective(str(projection), _mtime(projection), str(run.path), decisions.version(run))


def point_facts(run: RunDir, map_name: str, row: int, quality_name: str | None = None) -> dict:
    """The hover card's facts for one point of a map: effective label, file name, path, a label decision's mark and,
    given a check, its verdict."""
    projection = map_file(run, map_name)
    table = _table(str(projection), _mtime(projection), ("path", "class"))
    if not 0 <= row < table.num_rows:
        raise NotServed(f"row {row}: the map has {table.num_rows:,} points")
    path, folder = table.column("path")[row].as_py(), table.column("class")[row].as_py()
    labels, excluded = _decided(run, projection)
    agreement = suggested = None
    if quality_name:
        quality = quality_file(run, quality_name)
        checked = _checked(str(quality), _mtime(quality), str(run.path), decisions.version(run))
        where = _row_position(str(quality), _mtime(quality), row)  # the re-check keeps the stored rows' order
        if where is not None:
            agreement = checked.column("agreement")[where].as_py()
            suggested = checked.column("suggested")[where].as_py()
    return map_payload.point_facts(path, labels[row].as_py(), row, agreement, suggested, folder_label=folder,
                                   excluded=bool(excluded[row]))


def map_rows(run: RunDir, map_name: str, rows) -> pd.DataFrame:
    """row, path, label (effective), folder_label and excluded of some of a map's points (a selection), in the order
    given."""
    import pandas as pd

    projection = map_file(run, map_name)
    table = _table(str(projection), _mtime(projection), ("path", "class"))
    rows = [int(r) for r in rows if 0 <= int(r) < table.num_rows]
    taken = pa.array(rows, pa.int64())
    picked = table.take(taken)
    labels, excluded = _decided(run, projection)
    return pd.DataFrame({"row": pd.array(rows, dtype="int64"), "path": picked.column("path").to_pylist(),
                         "label": labels.take(taken).to_pylist(), "folder_label": picked.column("class").to_pylist(),
                         "excluded": excluded[rows] if rows else np.zeros(0, dtype=bool)})


def excluded_points(run: RunDir, map_name: str) -> np.ndarray:
    """Per point of the map, whether a label decision excluded its image (shared: never modify)."""
    return _decided(run, map_file(run, map_name))[1]


def label_counts(run: RunDir, map_name: str, include_excluded: bool = False) -> tuple[list[str], list[int]]:
    """The map's effective labels in the order the point buffer codes them (sorted), and the points of each shown
    (excluded ones left out unless `include_excluded`)."""
    projection = map_file(run, map_name)
    labels, excluded = _decided(run, projection)
    shown = None if include_excluded or not excluded.any() else ~excluded
    names, codes = map_payload.label_codes(store.text_series(labels), shown)  # as map_payload.pack codes them
    counts = np.bincount(codes if shown is None else codes[shown], minlength=len(names))
    return names, [int(count) for count in counts]


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
    order, rows = _row_order(path, mtime)
    at = int(np.searchsorted(rows, row))
    return int(order[at]) if at < len(rows) and rows[at] == row else None


@functools.lru_cache(maxsize=2)
def _row_order(path: str, mtime: int):
    rows = _table(path, mtime, ("row", "agreement", "suggested")).column("row").to_numpy()
    order = np.argsort(rows, kind="stable")
    return order, rows[order]


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns
