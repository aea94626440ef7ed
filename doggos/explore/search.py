"""Search a finished run by example: exact cosine top-k over its embeddings, by a row, an image file or words.

Labels are the effective ones (`doggos.base.decisions`): a label filter means the labels as decided, and images a
decision excluded are left out of the results unless asked for."""

from __future__ import annotations

import collections
import csv
import heapq
import io
import os
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doggos.base import decisions, store, units
from doggos.base.rundir import RunDir
from doggos.pipeline.encoders import SearchError

DEFAULT_K = 10  # a screenful of neighbours
MAX_K = 1000  # more is a data export, not a search; keeps the final sort and the page small
CACHE_ENTRIES = 4  # loaded runs kept per process: a 100k x 512 run holds ~205 MB
READ_BATCH_ROWS = 16_384  # rows read from Parquet at a time: bounds the memory held beside the matrix (~32 MB at 512-d)
PICK_BY_NAME_MAX = 50_000  # a run up to this size is picked by name with type-ahead (all names go to the browser)
KNOWN_LABELS_SHOWN = 10  # an unknown-label error lists this many known labels, then says how many more


@dataclass(frozen=True, eq=False)
class SearchIndex:
    """A run's embeddings as one matrix of unit rows (zero vectors stay zero), with each row's path and label.

    Row i is row i everywhere (`doggos.base.store` order). The arrays are read-only: one index is shared by all callers.
    """

    vectors: np.ndarray  # (rows, dim) float32, L2-normalised rows
    paths: np.ndarray  # (rows,) object array of str
    labels: np.ndarray  # (rows,) object array of str: label_names[label_codes], the effective labels
    label_codes: np.ndarray  # (rows,) int32 index into label_names, for fast filtering
    label_names: tuple[str, ...]  # the labels rows have, sorted
    run_path: str
    version: int  # doggos.base.store.run_version when it was loaded
    excluded: np.ndarray | None = None  # (rows,) bool: left out of the dataset by a decision; None: no row is
    labels_version: tuple[int, int] = (0, 0)  # doggos.base.decisions.version of the decisions in effect

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


@dataclass(frozen=True)
class Hit:
    """One result: its rank (1-based), the run's row, its path and label, and the cosine similarity to the query."""

    rank: int
    row: int
    path: str
    label: str
    score: float

    def to_dict(self) -> dict:
        """The CLI's --json shape."""
        return {"rank": self.rank, "row": self.row, "path": self.path, "class": self.label, "score": self.score}


# ---- loading, cached per run version ---------------------------------------------------------------------------

_cache: collections.OrderedDict[tuple[str, int], SearchIndex] = collections.OrderedDict()
_cache_lock = threading.Lock()
_load_locks: dict[tuple[str, int], threading.Lock] = {}
_decided: dict[tuple[str, int], SearchIndex] = {}  # per cached run: its index with the newest decisions in effect


def load_index(run: str | os.PathLike | RunDir) -> SearchIndex:
    """The run's SearchIndex with its label decisions in effect. The embeddings are read once per (run folder,
    run_version): a re-published run is read again; a new decision only recomputes the labels (`with_decisions`)."""
    run_dir = store.run_dir_of(run)
    key = (str(run_dir.path.resolve()), store.run_version(run_dir))
    index = _load_folder_index(run_dir, key)
    labels_version = decisions.version(run_dir)
    if labels_version == index.labels_version:  # no decisions log: the index as the pipeline wrote it
        return index
    with _cache_lock:
        decided = _decided.get(key)
    if decided is not None and decided.labels_version == labels_version:
        return decided
    decided = with_decisions(index, decisions.state(run_dir))
    with _cache_lock:
        if key in _cache:  # not let go meanwhile
            _decided[key] = decided
    return decided


def _load_folder_index(run_dir: RunDir, key: tuple[str, int]) -> SearchIndex:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # one load per key, even when several sessions ask at once; other runs are not held up
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        index = read_index(run_dir, version=key[1])
        with _cache_lock:
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]  # an older version of this run is never asked for again: free its memory now
                _decided.pop(old, None)
            _cache[key] = index
            while len(_cache) > CACHE_ENTRIES:
                _decided.pop(_cache.popitem(last=False)[0], None)
            _load_locks.pop(key, None)
    return index


def with_decisions(index: SearchIndex, state: decisions.LabelState) -> SearchIndex:
    """`index` (as `read_index` gives it) with the decisions of `state` in effect: effective labels, codes and names,
    and the excluded rows. The matrix and the paths are shared, not copied."""
    rows, effects = decisions.decided_rows(index.paths, state)
    excluded = np.zeros(len(index), dtype=bool)
    excluded[rows] = [effect.excluded for effect in effects]
    relabelled = np.array([effect.label is not None for effect in effects], dtype=bool)
    rows, new = rows[relabelled], [effect.label for effect in effects if effect.label is not None]
    names = sorted(set(index.label_names) | set(new))
    position = {name: code for code, name in enumerate(names)}
    codes = np.array([position[name] for name in index.label_names], dtype=np.int32)[index.label_codes] \
        if len(index.label_codes) else np.zeros(0, dtype=np.int32)
    codes[rows] = [position[name] for name in new]
    used = np.bincount(codes, minlength=len(names)) > 0  # a label every image of which was relabelled is gone
    if not used.all():
        codes = (np.cumsum(used) - 1).astype(np.int32)[codes]
        names = [name for name, kept in zip(names, used) if kept]
    labels = np.array(names, dtype=object)[codes] if names else np.zeros(0, dtype=object)
    for array in (labels, codes, excluded):
        array.flags.writeable = False
    return SearchIndex(vectors=index.vectors, paths=index.paths, labels=labels, label_codes=codes,
                       label_names=tuple(names), run_path=index.run_path, version=index.version,
                       excluded=excluded if excluded.any() else None, labels_version=state.version)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _decided.clear()


def read_index(run: str | os.PathLike | RunDir, version: int | None = None) -> SearchIndex:
    """Read a run's path, class and embedding columns into a SearchIndex (uncached; `load_index` caches).

    The matrix is allocated once and filled batch by batch, each batch normalised in place while it is still in the CPU cache, so
    memory stays near the raw float32 size.
    """
    run_dir = store.run_dir_of(run)
    files = store.embedding_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir.embeddings} holds no Parquet files")
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    dim = _embedding_dim(files)
    vectors = np.zeros((rows, dim), dtype=np.float32)
    paths, classes = _fill(files, vectors, run_dir)
    path_array = np.concatenate(paths) if paths else np.zeros(0, dtype=object)
    if len(path_array) != rows:
        raise RuntimeError(f"{run_dir.path} changed while it was read: try again")
    codes, names = _label_codes(classes)
    del paths, classes
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed batches for reuse; the matrix is all we keep
    vectors.flags.writeable = False
    labels = np.array(names, dtype=object)[codes] if names else np.zeros(0, dtype=object)
    for array in (path_array, labels, codes):
        array.flags.writeable = False
    return SearchIndex(vectors=vectors, paths=path_array, labels=labels, label_codes=codes, label_names=tuple(names),
                       run_path=str(run_dir.path), version=store.run_version(run_dir) if version is None else version)


def _fill(files: list, vectors: np.ndarray, run_dir: RunDir) -> tuple[list[np.ndarray], list[pa.DictionaryArray]]:
    """Copy every file's embeddings into `vectors`, normalised; returns each batch's paths and dictionary-encoded
    classes. Its own function so the last batch is freed on return, before the memory is released."""
    rows, dim = vectors.shape
    paths, classes = [], []
    start = 0
    for file in files:
        with pq.ParquetFile(file) as reader:  # closed after each file: an open reader keeps its last row group in memory
            # One thread: the batches' memory is freed where it was taken, so the caller's release returns it all.
            columns = ["path", "class", "embedding"]
            for batch in reader.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns, use_threads=False):
                stop = start + batch.num_rows
                if stop > rows:
                    break  # the run changed under us: the caller sees the count differ
                _copy_embeddings(batch.column("embedding"), vectors[start:stop], dim)
                normalise_rows(vectors[start:stop])
                paths.append(batch.column("path").to_numpy(zero_copy_only=False))
                classes.append(pc.dictionary_encode(pc.fill_null(batch.column("class"), "")))
                start = stop
    return paths, classes


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to unit length in place; zero rows stay zero and non-finite rows become zero (they match nothing)."""
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))  # no (rows x dim) temporary, unlike np.linalg.norm
    bad = ~np.isfinite(norms)
    if bad.any():
        matrix[bad] = 0.0
        norms[bad] = 0.0
    np.divide(matrix, norms[:, None], out=matrix, where=norms[:, None] > 0)
    return matrix


def _embedding_dim(files: list) -> int:
    kind = pq.read_schema(files[0]).field("embedding").type
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    for file in files:  # a variable-size list: the first stored row says how long every row must be
        lengths = pc.drop_null(pc.list_value_length(pq.read_table(file, columns=["embedding"]).column("embedding")))
        if len(lengths):
            return int(lengths[0].as_py())
    return 0


def _copy_embeddings(column: pa.Array, out: np.ndarray, dim: int) -> None:
    """Copy one batch of the embedding column into `out` (rows x dim); null rows stay zero."""
    if not len(column):
        return
    if pa.types.is_fixed_size_list(column.type):
        values = column.values.slice(column.offset * dim, len(column) * dim)
    else:
        lengths = pc.fill_null(pc.list_value_length(column), dim).to_numpy()
        if (lengths != dim).any():
            row = int(np.flatnonzero(lengths != dim)[0])
            raise ValueError(f"embedding: a row holds {lengths[row]} numbers where the first held {dim}")
        values = pc.list_flatten(pc.fill_null(column, pa.scalar([0.0] * dim, column.type)))
    np.copyto(out, values.to_numpy(zero_copy_only=False).reshape(len(column), dim), casting="same_kind")
    if column.null_count:
        out[column.is_null().to_numpy(zero_copy_only=False)] = 0.0


def _label_codes(batches: list[pa.DictionaryArray]) -> tuple[np.ndarray, list[str]]:
    """Per-row int32 codes into the sorted label names, from each batch's dictionary-encoded class column."""
    dictionaries = [batch.dictionary.to_pylist() for batch in batches]
    names = sorted(set().union(*dictionaries))
    position = {name: code for code, name in enumerate(names)}
    codes = [np.array([position[name] for name in dictionary], dtype=np.int32)[batch.indices.to_numpy()]
             for dictionary, batch in zip(dictionaries, batches) if len(batch)]
    return (np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32)), names


# ---- queries -------------------------------------------------------------------------------------------------

def top_k(index: SearchIndex, query: np.ndarray, k: int = DEFAULT_K, labels: Iterable[str] | str | None = None,
          exclude_rows: Iterable[int] = (), include_excluded: bool = False) -> list[Hit]:
    """The k rows most cosine-similar to `query` (exact, brute force), best first; equal scores in path order.

    `labels` keeps only rows with one of those (effective) labels (None or empty: all). Images a decision excluded
    are left out unless `include_excluded`. Fewer than k candidates: all of them.
    """
    k = check_k(k)
    allowed = label_filter(index, labels)
    if index.excluded is not None and not include_excluded:
        allowed = ~index.excluded if allowed is None else allowed & ~index.excluded
    unit = _unit_query(index, query)
    if not len(index):
        return []
    scores = index.vectors @ unit
    candidates = np.flatnonzero(allowed) if allowed is not None else None
    excluded = np.fromiter((int(r) for r in exclude_rows), dtype=np.int64)
    if len(excluded):
        candidates = np.arange(len(index)) if candidates is None else candidates
        candidates = candidates[~np.isin(candidates, excluded)]
    pool = scores if candidates is None else scores[candidates]
    chosen = _best(pool, k, lambda i: index.paths[i if candidates is None else candidates[i]])
    rows = chosen if candidates is None else candidates[chosen]
    ranked = sorted(zip(scores[rows].tolist(), index.paths[rows].tolist(), rows.tolist()), key=lambda t: (-t[0], t[1]))
    return [Hit(rank=rank, row=row, path=path, label=index.labels[row], score=min(1.0, max(-1.0, score)))
            for rank, (score, path, row) in enumerate(ranked, start=1)]


def _best(scores: np.ndarray, k: int, path_of) -> np.ndarray:
    """Positions of the k best scores; among equal scores at the cut, the first paths in order."""
    if len(scores) <= k:
        return np.arange(len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th best score, in linear time
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)
    if len(above) + len(tied) > k:  # a partition alone would pick among the tied arbitrarily: take them by path
        tied = np.array(heapq.nsmallest(k - len(above), tied.tolist(), key=path_of), dtype=np.int64)
    return np.concatenate([above, tied])


def by_row(index: SearchIndex, row: int, k: int = DEFAULT_K, labels: Iterable[str] | str | None = None,
           include_excluded: bool = False) -> list[Hit]:
    """The nearest neighbours of the run's own row `row` (0..rows-1), which may be an excluded one. The row itself is
    left out of the results (it would always come first); an exact duplicate image at another row still shows, at
    score 1."""
    row = check_row(index, row)
    return top_k(index, index.vectors[row], k=k, labels=labels, exclude_rows=(row,), include_excluded=include_excluded)


def by_text(index: SearchIndex, encoder, text: str, k: int = DEFAULT_K,
            labels: Iterable[str] | str | None = None, include_excluded: bool = False) -> list[Hit]:
    """Rows nearest to the words `text`, embedded as typed (no prompt template) by the run's model's text tower
    (`encoder`: a `doggos.pipeline.encoders.TextEncoder`)."""
    k, _ = check_k(k), label_filter(index, labels)  # the cheap checks first: the model need not run for a typo
    vector = encoder.encode([text])[0]
    _check_dim(index, vector, "text")
    return top_k(index, vector, k=k, labels=labels, include_excluded=include_excluded)


def by_image(index: SearchIndex, encoder, data: bytes, k: int = DEFAULT_K,
             labels: Iterable[str] | str | None = None, include_excluded: bool = False) -> list[Hit]:
    """Rows nearest to an image file's bytes, embedded exactly as the pipeline embeds (`encoder`: a
    `doggos.pipeline.encoders.ImageEncoder`)."""
    k, _ = check_k(k), label_filter(index, labels)
    vector = encoder.encode_file(data)
    _check_dim(index, vector, "image")
    return top_k(index, vector, k=k, labels=labels, include_excluded=include_excluded)


# ---- validation ----------------------------------------------------------------------------------------------

def check_k(k) -> int:
    """k as a whole number in 1..MAX_K (text such as a form gives is accepted)."""
    value = _whole_number("k", k)
    if not 1 <= value <= MAX_K:
        raise SearchError("k", f"must be between 1 and {MAX_K} (got {value})")
    return value


def check_row(index: SearchIndex, row) -> int:
    value = _whole_number("row", row)
    if not 0 <= value < len(index):
        span = f"between 0 and {len(index) - 1}" if len(index) else "absent: this run has no rows"
        raise SearchError("row", f"must be {span} (got {value})")
    return value


def image_names(names: Sequence[str], folders: Sequence[str]) -> list[str]:
    """How people pick a run's image by name, one per row: its file name, or 'label/name' where several rows share
    the file name (filed under different labels), or 'label/name (row 12)' where even that is shared (one label's
    name in two nested folders). Unique, so a picker can map each back to its row; `folders`: the folder labels (the
    path's parent folder), which decisions never change."""
    frame = pd.DataFrame({"name": pd.Series(names, dtype=object), "folder": pd.Series(folders, dtype=object)})
    shown = frame["name"].where(~frame["name"].duplicated(keep=False), frame["folder"] + "/" + frame["name"])
    again = shown.duplicated(keep=False)
    if again.any():
        shown = shown.where(~again, shown + " (row " + pd.Series(range(len(shown)), dtype=str) + ")")
    return shown.tolist()


def names_of_paths(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each path's file name and folder label (its parent folder's name), as `image_names` takes them."""
    parts = [str(path).rstrip("/").rsplit("/", 2) for path in paths]
    return [p[-1] for p in parts], [p[-2] if len(p) > 1 else "" for p in parts]


def row_of_name(paths: Sequence[str], name: str) -> int:
    """The row of the run's image named `name`: its file name when only one image has it, 'label/name' (or exactly
    as `image_names` shows it), or its whole path. Raises SearchError naming `name` when no image has that name, or
    when several do (their 'label/name' listed)."""
    text = str(name or "").strip()
    if not text:
        raise SearchError("name", "is required: an image's file name, or label/name")
    # The usual answers first, by Arrow kernels (a 1,000,000-row run's in a fraction of a second): a file name only
    # one image has, or a whole path.
    arrow_paths = pa.array([str(path) for path in paths], pa.string())
    for keys in (store.file_names(arrow_paths), arrow_paths):
        exact = pc.indices_nonzero(pc.fill_null(pc.equal(keys, text), False)).to_pylist()
        if len(exact) == 1:
            return exact[0]
    files, folders = names_of_paths(paths)
    shown = image_names(files, folders)
    if text in shown:  # unique by construction
        return shown.index(text)
    for keys in (files, [f"{folder}/{file}" for folder, file in zip(folders, files)]):
        same = np.flatnonzero(np.asarray(keys, dtype=object) == text).tolist()
        if len(same) == 1:
            return same[0]
        if same:
            options = ", ".join(repr(shown[row]) for row in same[:KNOWN_LABELS_SHOWN])
            more = len(same) - KNOWN_LABELS_SHOWN
            raise SearchError("name", f"{units.count(len(same), 'image')} are named {text!r}: give one as it is listed ({options}"
                                      + (f" and {units.count(more)} more" if more > 0 else "") + ")")
    example = f": a file name such as {shown[0]!r}, or label/name" if shown else ": this run has no images"
    raise SearchError("name", f"no image of this run is named {text!r}{example}")


def label_filter(index: SearchIndex, labels: Iterable[str] | str | None) -> np.ndarray | None:
    """A boolean mask of the rows whose (effective) label is one of `labels`; None when no filter is asked for."""
    if labels is None:
        return None
    wanted = [labels] if isinstance(labels, str) else list(labels)
    if not wanted:
        return None
    positions = {name: code for code, name in enumerate(index.label_names)}
    codes = []
    for label in wanted:
        if not isinstance(label, str) or label not in positions:
            known = ", ".join(repr(name) for name in index.label_names[:KNOWN_LABELS_SHOWN])
            more = len(index.label_names) - KNOWN_LABELS_SHOWN
            known += f" and {more} more" if more > 0 else ""
            raise SearchError("labels", f"no such label {label!r} in this run (known: {known or 'none'})")
        codes.append(positions[label])
    return np.isin(index.label_codes, codes)


def _whole_number(field: str, value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise SearchError(field, f"must be a whole number (got {value!r})")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise SearchError(field, f"must be a whole number (got {value.strip()!r})") from None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    raise SearchError(field, f"must be a whole number (got {value!r})")


def _unit_query(index: SearchIndex, query: np.ndarray) -> np.ndarray:
    vector = np.asarray(query, dtype=np.float32).reshape(-1)
    if vector.shape != (index.dim,):
        raise SearchError("query", f"has {vector.size} numbers but this run's embeddings have {index.dim}")
    if not np.isfinite(vector).all():
        raise SearchError("query", "holds NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _check_dim(index: SearchIndex, vector: np.ndarray, field: str) -> None:
    if np.size(vector) != index.dim:
        raise SearchError(field, f"the model gives {np.size(vector)}-number vectors but this run's embeddings have "
                                 f"{index.dim}: the model is not the one the run was made with")


# ---- presenting results --------------------------------------------------------------------------------------

def label_summary(hits: list[Hit]) -> str:
    """The most common label among the hits, e.g. '8 of 12 nearest are beagle' (equal counts: the first by name)."""
    if not hits:
        return "no results"
    counts = collections.Counter(hit.label for hit in hits)
    label, count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{count} of {len(hits)} nearest {'is' if count == 1 else 'are'} {label}"


def hits_csv(hits: list[Hit]) -> str:
    """The hits as CSV (path, label, score), best first, for a download."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "score"])
    writer.writerows([hit.path, hit.label, f"{hit.score:.6f}"] for hit in hits)
    return out.getvalue()
