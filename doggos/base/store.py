"""Reading a finished run with pyarrow: its rows, labels, thumbnails, embeddings, failures and Ray statistics."""

from __future__ import annotations

import functools
import io
import os
import posixpath
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doggos.base import decisions, shelf
# embedding_files lives in rundir, below the shelf too, so both number rows alike; the wings above read it from here.
from doggos.base.rundir import RunDir, embedding_files, read_json, run_dir_of

INDEX_COLUMNS = ["path", "class", "width", "height"]
SELECT_MAX = 5_000  # ordered_rows: windows ending within this many rows are picked without the whole sort
SORT_ALONE_MAX = 100_000  # ordered_rows: this many chosen rows are sorted alone (~0.06 s), not filtered from the whole
DETAIL_MAX_SIDE = 768  # the larger view of a local original: sharper than the 224 px thumbnail, still light to send

_OPERATOR = re.compile(r"^Operator (\d+) (.+?): (\d+) tasks executed, (\d+) blocks produced in ([\d.]+)\s*(ms|s)\b")
_OPERATOR_NAME = re.compile(r"^\w+Operator\[(.*)\]$")  # TaskPoolMapOperator[ReadBinary->Map(f)] → ReadBinary->Map(f)
_TOTAL = re.compile(r"([\d.]+)\s*(us|ms|s)? total")


def run_version(run: str | os.PathLike | RunDir) -> int:
    """Changes whenever the run is (re)published; part of every cache key so a rewritten run is never served stale."""
    try:
        return run_dir_of(run).manifest.stat().st_mtime_ns
    except OSError:
        return 0


def read_columns(run: str | os.PathLike | RunDir, columns: list[str]) -> pa.Table:
    files = embedding_files(run)
    if not files:
        raise FileNotFoundError(f"{run_dir_of(run).embeddings} holds no Parquet files")
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def row_count(run: str | os.PathLike | RunDir) -> int:
    """The run's number of rows (images), from its Parquet files' footers: nothing else is read."""
    return sum(pq.read_metadata(f).num_rows for f in embedding_files(run))


def file_name(path: str) -> str:
    """The last part of a local path or URI (s3://bucket/label/x.jpg → x.jpg)."""
    return posixpath.basename(path.rstrip("/")) or path


def load_index(run: str | os.PathLike | RunDir) -> pd.DataFrame:
    """One row per image, without the heavy columns: row (id), path, label (the effective label: the folder's unless a
    label decision says otherwise, see `doggos.base.decisions`), name, width, height, folder_label and excluded (bool:
    a decision left it out of the dataset)."""
    return with_decisions(folder_index(run), decisions.state(run))


def folder_index(run: str | os.PathLike | RunDir) -> pd.DataFrame:
    """`load_index` as the pipeline wrote it, before any label decision: row, path, label (the folder's), name, width,
    height.

    The text columns stay in Arrow (pandas' default string type, no Python string per row), and the names are cut
    from the paths by Arrow kernels: a 1,000,000-row run's index takes ~0.4 s, where Python strings took ~4.5 s."""
    # One chunk per column: Parquet gives one per row group (~1,000 for 1,000,000 rows as Ray writes them), and every
    # later Arrow call (names, sorts, takes) would pay its overhead per chunk.
    table = read_columns(run, INDEX_COLUMNS).combine_chunks()
    paths = table.column("path")
    return pd.DataFrame({
        "row": np.arange(table.num_rows, dtype=np.int64),
        "path": text_series(paths),
        "label": text_series(table.column("class")),
        "name": text_series(file_names(paths)),
        "width": table.column("width").to_numpy(),
        "height": table.column("height").to_numpy(),
    })


def with_decisions(index: pd.DataFrame, state: decisions.LabelState) -> pd.DataFrame:
    """A `folder_index` with the decisions of `state` in effect: label becomes the effective label, folder_label keeps
    the folder's, excluded says which images are out of the dataset. Only the decided rows change (the label column
    stays in Arrow); the other columns are shared with `index`, not copied."""
    folder = pa.array(index["label"].array, pa.string(), from_pandas=True)
    labels, excluded = effective_labels(index["path"], folder, state)
    return index.assign(label=index["label"] if labels is folder else text_series(labels),
                        folder_label=index["label"], excluded=excluded)


def effective_labels(paths: pd.Series | np.ndarray, folder: pa.Array,
                     state: decisions.LabelState) -> tuple[pa.Array, np.ndarray]:
    """The effective label of each row (`folder` itself when no decision changes one: only the changed rows are
    replaced) and whether each row is excluded, for rows with these paths and folder labels (whole columns)."""
    excluded = np.zeros(len(folder), dtype=bool)
    positions, effects = decisions.decided_rows(paths, state)
    if not len(positions):
        return folder, excluded
    excluded[positions] = [effect.excluded for effect in effects]
    new = np.array([effect.label for effect in effects], dtype=object)  # None: no relabel in effect (a keep, an exclude)
    was = np.array(["" if old is None else old for old in folder.take(pa.array(positions)).to_pylist()], dtype=object)
    changed = np.array([label is not None for label in new], dtype=bool) & (new != was)
    if not changed.any():
        return folder, excluded
    mask = np.zeros(len(folder), dtype=bool)
    mask[positions[changed]] = True
    return pc.replace_with_mask(folder, pa.array(mask), pa.array(new[changed].tolist(), pa.string())), excluded


def text_series(column: pa.Array | pa.ChunkedArray) -> pd.Series:
    """An Arrow string column as the column its `to_pylist()` would make in a DataFrame (pandas' default string type,
    Arrow-backed), without a Python string per row. All null or empty: exactly that list's column."""
    if column.null_count == len(column):
        return pd.DataFrame({"text": column.to_pylist()})["text"].rename(None)
    return column.to_pandas()


def file_names(paths: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """`file_name` of every path, by Arrow kernels (nulls stay null)."""
    paths = paths if isinstance(paths, pa.ChunkedArray) else pa.chunked_array([paths], pa.string())
    names = []
    for chunk in paths.chunks:
        parts = pc.split_pattern(pc.utf8_rtrim(pc.fill_null(chunk, ""), "/"), "/", reverse=True, max_splits=1)
        last = parts.values.take(pc.subtract(parts.offsets[1:], 1))  # every list holds one part at least: the name
        if len(last) and pc.min(pc.binary_length(last)).as_py() == 0:  # nothing left after the slashes: the path
            last = pc.if_else(pc.equal(last, ""), chunk, last)
        names.append(pc.if_else(pc.is_null(chunk), pa.scalar(None, pa.string()), last) if chunk.null_count else last)
    return pa.chunked_array(names, pa.string())


def load_thumbnails(run: str | os.PathLike | RunDir, rows: Iterable[int] | None = None) -> list[bytes]:
    """Stored JPEG thumbnails by row id (all, or just `rows`, in that order): pages show these, never the originals
    (which may be on S3). Some rows come from the run's thumbnail shelf when it is current (`doggos.base.shelf`: a
    page of a 1,000,000-row run in milliseconds), else from the Parquet. A thumbnail that is missing or not an image
    comes back as the grey `placeholder()` (see `usable_thumbnail`)."""
    if rows is None:
        return [usable_thumbnail(t) for t in read_columns(run, ["thumbnail"]).column("thumbnail").to_pylist()]
    rows = list(rows)
    stored = shelf.read(run, rows)
    if stored is None:
        stored = _take_thumbnails(run, rows)
    # The shelf keeps the bytes as the Parquet has them: checking a page's 24 here costs ~1 ms; checking every row when
    # the shelf is built would cost ~35 µs apiece (35 s more for a 1,000,000-row run, against a 1.5 s build).
    return [usable_thumbnail(t) for t in stored]


def _take_thumbnails(run: str | os.PathLike | RunDir, rows: list[int]) -> list[bytes | None]:
    """Some rows' thumbnails straight from the Parquet: decompresses whole column chunks (seconds and ~1.5 GB for 24
    rows of a 100,000-row file), hence the shelf."""
    import pyarrow.dataset as pads

    files = embedding_files(run)
    if not files:
        raise FileNotFoundError(f"{run_dir_of(run).embeddings} holds no Parquet files")
    wanted = pa.array(list(rows), pa.int64())
    # The dataset keeps the files in the order given: the same row ids as read_columns.
    column = pads.dataset([str(f) for f in files], format="parquet").take(wanted, columns=["thumbnail"]).column(0)
    return column.to_pylist()


@functools.cache
def placeholder() -> bytes:
    """A plain grey 224 px JPEG, shown where a row's stored thumbnail cannot be."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), (214, 214, 214)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def usable_thumbnail(data: bytes | None) -> bytes:
    """`data` when Pillow can open it as an image (what every page's image element needs), else the placeholder: a
    damaged or empty thumbnail in a run's Parquet draws a grey square, never an exception on the page."""
    from PIL import Image, UnidentifiedImageError

    if data:
        try:
            with Image.open(io.BytesIO(data)):
                return data
        except (UnidentifiedImageError, OSError, ValueError):  # not an image, or a header Pillow cannot read
            pass
    return placeholder()


def load_embeddings(run: str | os.PathLike | RunDir) -> tuple[np.ndarray, pd.DataFrame]:
    """The embedding matrix (rows × dim, float32) and the path/label of each row, in row-id order."""
    table = read_columns(run, ["path", "class", "embedding"])
    vectors = vector_matrix(table.column("embedding").combine_chunks())
    meta = pd.DataFrame({"path": table.column("path").to_pylist(), "label": table.column("class").to_pylist()})
    return vectors, meta


def vector_matrix(column: pa.Array) -> np.ndarray:
    """A list column of equal-length vectors (fixed-size, or variable-size with one length) as rows × dim float32."""
    rows = len(column)
    dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else None
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if dim is None:  # a variable-size list: every row must still have the same length
        dim = len(flat) // max(1, rows)
    return flat.reshape(rows, dim) if rows else np.zeros((0, dim or 0), np.float32)


def embedding_chunks(run: str | os.PathLike | RunDir, rows_per_chunk: int) -> Iterator[np.ndarray]:
    """The embedding matrix in row-id order as float32 chunks of `rows_per_chunk` rows (the last may be shorter), read
    a record batch at a time: never the whole matrix in memory (a 100,000 × 512 run is 205 MB)."""
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk: must be at least 1 (got {rows_per_chunk!r})")
    pending, held = [], 0
    for path in embedding_files(run):
        # pre_buffer would read the whole file's column first: at 100,000 rows in one file, +370 MB instead of +100.
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=rows_per_chunk, columns=["embedding"]):
            pending.append(vector_matrix(batch.column(0)))
            held += batch.num_rows
            while held >= rows_per_chunk:
                whole = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield whole[:rows_per_chunk]
                pending, held = ([whole[rows_per_chunk:]], held - rows_per_chunk) if held > rows_per_chunk else ([], 0)
    if held:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages for reuse: hand them back


def label_counts(index: pd.DataFrame, include_excluded: bool = False) -> pd.DataFrame:
    """Images per label, most frequent first (ties by label), as columns label, images: the images in the dataset
    (excluded ones too with `include_excluded`)."""
    leave = _excluded(index, include_excluded)
    labels = index["label"] if leave is None else index["label"][~leave]
    counts = labels.groupby(labels, sort=False).size().rename_axis("label").reset_index(name="images")
    return counts.sort_values(["images", "label"], ascending=[False, True], ignore_index=True)


def _excluded(index: pd.DataFrame, include_excluded: bool) -> np.ndarray | None:
    """The index's excluded column as booleans when it leaves any row out; else None (nothing to filter)."""
    if include_excluded or "excluded" not in index:
        return None
    excluded = index["excluded"].to_numpy(dtype=bool)
    return excluded if excluded.any() else None


def browse_order(index: pd.DataFrame) -> np.ndarray:
    """Positions (for `.iloc`) of the index's rows ordered by label, then path; equal ones keep their order.

    One stable Arrow sort, as pandas' was: ~0.8 s for 1,000,000 rows, so the dashboard computes it once per run version,
    and only for pages past the first SELECT_MAX rows (`ordered_rows` picks those without it)."""
    return ordered_rows(index)


def matching_rows(index: pd.DataFrame, labels=(), name_contains: str = "",
                  include_excluded: bool = False) -> np.ndarray | None:
    """Positions (for `.iloc`), in index order, of the rows whose label is one of `labels` (all when empty) and whose
    file name contains the text (any case), excluded images left out unless `include_excluded`; None when nothing
    filters: every row."""
    chosen = None
    leave = _excluded(index, include_excluded)
    if labels:
        found = index["label"].isin(list(labels)).to_numpy(dtype=bool)
        chosen = np.flatnonzero(found if leave is None else found & ~leave)
    elif leave is not None:
        chosen = np.flatnonzero(~leave)
    needle = name_contains.strip().lower()
    if needle:
        names = index["name"] if chosen is None else index["name"].iloc[chosen]  # only the chosen labels' names
        found = names.str.lower().str.contains(needle, regex=False).to_numpy(dtype=bool, na_value=False)
        chosen = np.flatnonzero(found) if chosen is None else chosen[found]
    return chosen


def ordered_rows(index: pd.DataFrame, chosen: np.ndarray | None = None, window: slice | None = None,
                 order: np.ndarray | None = None) -> np.ndarray:
    """Positions of the `chosen` rows (`matching_rows`; None: all) ordered by label, then path (equal ones in index
    order), or just those in `window` of that order.

    `order`, the index's `browse_order`, makes this a filter of it. Without it a window within the first SELECT_MAX
    rows is picked by a partial sort (~0.05 s for 24 rows of 1,000,000, against ~0.8 s for the whole sort), of the
    whole index when all but a few rows are chosen (the excluded ones left out: no copy of the chosen rows' keys);
    anything else sorts the chosen rows. `chosen` is ascending, as `matching_rows` gives it."""
    if order is not None:
        if chosen is not None:
            keep = np.zeros(len(index), dtype=bool)
            keep[chosen] = True
            order = order[keep[order]]
        return order if window is None else order[window]
    count = len(index) if chosen is None else len(chosen)
    spare = len(index) - count  # rows not chosen: when few (the excluded ones), pick from the whole and drop them
    if chosen is not None and window is not None and window.stop < count and window.stop + spare <= SELECT_MAX:
        keep = np.zeros(len(index), dtype=bool)
        keep[chosen] = True
        found = ordered_rows(index, None, slice(0, window.stop + spare))
        return found[keep[found]][window]
    keys = pa.table({"label": _arrow_text(index["label"], chosen), "path": _arrow_text(index["path"], chosen),
                     "position": pa.array(np.arange(count, dtype=np.int64))})
    by = [("label", "ascending"), ("path", "ascending"), ("position", "ascending")]  # position: a stable order
    if window is not None and window.stop < count and window.stop <= SELECT_MAX:
        found = pc.select_k_unstable(keys, k=max(window.stop, 1), sort_keys=by).to_numpy()
    else:
        found = pc.sort_indices(keys, sort_keys=by[:2]).to_numpy()  # Arrow's sort is stable
    found = found.astype(np.int64, copy=False)
    if chosen is not None:
        found = chosen[found]
    return found if window is None else found[window]


def _arrow_text(column: pd.Series, chosen: np.ndarray | None) -> pa.ChunkedArray | pa.Array:
    """A text column as Arrow (no copy for pandas' Arrow-backed strings), only the `chosen` positions if given."""
    values = column.array if chosen is None else column.array.take(chosen)
    return pa.array(values, pa.string(), from_pandas=True)


def filter_positions(index: pd.DataFrame, labels=(), name_contains: str = "",
                     order: np.ndarray | None = None, include_excluded: bool = False) -> np.ndarray:
    """`filter_index` as positions (for `.iloc`) into `index`: pass `order` (its `browse_order`) to reuse the sort."""
    return ordered_rows(index, matching_rows(index, labels, name_contains, include_excluded), order=order)


def filter_index(index: pd.DataFrame, labels=(), name_contains: str = "", include_excluded: bool = False) -> pd.DataFrame:
    """Rows whose label is one of `labels` (all when empty) and whose file name contains the text (any case),
    ordered by label, then path (Ray writes its files in no useful order); excluded images left out unless
    `include_excluded`."""
    return index.iloc[filter_positions(index, labels, name_contains, include_excluded=include_excluded)]


def detail_image(path: str, thumbnail: bytes, max_side: int = DETAIL_MAX_SIDE) -> tuple[bytes, str, tuple[int, int]]:
    """The image to show larger: a local original, downscaled, when it is still there; else the stored thumbnail.

    Returns (JPEG bytes, where they came from, their size). Remote originals are never fetched: browsing must not
    download a bucket.
    """
    from doggos.base.images import decode, thumbnail_jpeg

    origin = "stored thumbnail"
    if "://" not in path and os.path.isfile(path):
        try:
            data = thumbnail_jpeg(decode(Path(path).read_bytes()), max_side)
            return data, "original file", _size(data)
        except (OSError, ValueError):  # moved, unreadable, or no longer an image: the thumbnail still tells the story
            origin = "stored thumbnail (the original could not be read)"
    return thumbnail, origin, _size(thumbnail)


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return (0, 0)


def read_failures(run: str | os.PathLike | RunDir) -> list[dict]:
    failures = read_json(run_dir_of(run).failures, []) or []
    return [f for f in failures if isinstance(f, dict)]


def read_ray_stats(run: str | os.PathLike | RunDir) -> str:
    try:
        return run_dir_of(run).ray_stats.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def read_log(run: str | os.PathLike | RunDir, max_chars: int = 20_000, output: bool = False) -> str:
    """The end of the run's log.txt (what doggos did), or with `output` of output.txt (the driver's own output, Ray's
    messages included)."""
    run_dir = run_dir_of(run)
    try:
        text = (run_dir.output if output else run_dir.log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-max_chars:]


# The Summary's per-operator table, in order (`parse_operator_stats`'s rows_in and rows_out stay in the data).
OPERATOR_COLUMNS = ("operator", "name", "wall_s", "cpu_s", "tasks", "blocks", "rows", "files")


def parse_operator_stats(text: str) -> list[dict]:
    """The per-operator lines of Ray Data's `ds.stats()`: operator, tasks, blocks, wall time, rows in, rows out, CPU
    time, and `rows`: the rows it handled, as the Summary shows them.

    A write hands on one row per file it wrote (Ray's "Output num rows" of a Write: 10 for 300 images in 10 files), so
    its `rows` are the rows it wrote (its rows in) and `files` the files; other operators' `rows` are their rows out
    and their `files` None. Beside "300 images embedded", every operator then reads 300."""
    operators: list[dict] = []
    for line in text.splitlines():
        match = _OPERATOR.match(line.strip())
        if match:
            number, name, tasks, blocks, wall, unit = match.groups()
            operators.append({
                "operator": int(number), "name": name, "tasks": int(tasks), "blocks": int(blocks),
                "wall_s": float(wall) / (1000 if unit == "ms" else 1), "rows_in": None, "rows_out": None,
                "cpu_s": None,
            })
            continue
        if not operators:
            continue
        stripped = line.strip().lstrip("*").strip()
        if stripped.startswith("Output num rows per block:"):
            operators[-1]["rows_out"] = _total(stripped, as_int=True)
        elif stripped.startswith("Total input num rows:"):
            operators[-1]["rows_in"] = _rows(stripped)
        elif stripped.startswith("Remote cpu time:"):
            operators[-1]["cpu_s"] = _total(stripped)
    for before, operator in zip([None] + operators, operators):
        writes = _is_write(operator["name"])
        if writes and operator["rows_in"] is None and before is not None:  # stats without "Total input num rows"
            operator["rows_in"] = before["rows_out"]  # a chain: it was given what the operator before it handed on
        operator["rows"] = operator["rows_in"] if writes else operator["rows_out"]
        operator["files"] = operator["rows_out"] if writes else None
    return operators


def _is_write(name: str) -> bool:
    # Fused operators end with their last part: "MapBatches(f)->Write" writes; Ray names its writes "Write…".
    return name.rsplit("->", 1)[-1].startswith("Write")


def _rows(line: str) -> int | None:
    match = re.search(r"(\d+) rows", line)
    return int(match.group(1)) if match else None


def _total(line: str, as_int: bool = False):
    match = _TOTAL.search(line)
    if not match:
        return None
    value = float(match.group(1))
    if as_int:
        return int(value)
    return value / {"us": 1e6, "ms": 1e3}.get(match.group(2) or "s", 1.0)


def operator_chain(operators: list[dict]) -> str:
    """The execution plan as Ray ran it, e.g. `ReadBinary → Map(add_label)->MapBatches(Embedder) → Write`."""
    return " → ".join(op["name"] for op in operators)


def execution_plan(log_text: str) -> str | None:
    """Ray Data's own plan line from the run's log, as operators joined by arrows; None when it is not there."""
    plan = None
    for line in log_text.splitlines():
        _, found, rest = line.partition("Execution plan of Dataset")
        if found and ": " in rest:
            plan = rest.split(": ", 1)[1].strip()  # the last plan logged is the one that wrote the output
    if not plan:
        return None
    return " → ".join(_OPERATOR_NAME.sub(r"\1", step.strip()) for step in plan.split(" -> "))


def loading_snippets(embeddings_path: str) -> dict[str, str]:
    """Copyable code that loads the run's Parquet in pandas and in Ray Data."""
    path = repr(str(embeddings_path))
    return {
        "pandas": (
            "import pandas as pd\n\n"
            f"df = pd.read_parquet({path})\n"
            "print(df[['path', 'class']].head())\n"
            "embeddings = df['embedding'].to_list()  # one float32 vector per image"
        ),
        "ray": (
            "import ray\n\n"
            f"ds = ray.data.read_parquet({path})\n"
            "print(ds.schema())\n"
            "ds.select_columns(['path', 'class', 'embedding']).show(3)"
        ),
    }
