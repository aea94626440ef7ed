"""2-D maps of a run's embeddings (UMAP, or PCA) and their cache under <run>/projections/; `MAP` is the post-run step.

`import umap` costs seconds (numba), so it happens only inside `project()`, never on import; umap's compiled code is
kept on disk and reused by later maps (`_cache_compiled_code`). A UMAP map is reproducible: a fixed seed and a
single-threaded layout. What keeps it quick (docs/performance.md has the figures): UMAP works on 50 principal
components; above 4,096 rows, neighbours come from `doggos.explore.map_neighbours` (matrix products on every core,
nothing to compile) instead of umap's own search; above 50,000 rows the layout gets fewer epochs. An updated run's map
keeps its old run's places (`doggos.explore.map_carry`) until `recompute` asks for a fresh one. Computing in the
background, status files and machine-wide slots are `doggos.runs.steps`' job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from doggos.base.rundir import RunDir, atomic_output, read_json, run_dir_of
from doggos.explore import map_neighbours
from doggos.runs.steps import Step, StepStatus, slots_from_env

METHODS = ("umap", "pca")
METRICS = ("cosine", "euclidean")
SEED = 42  # a fixed random_state: the same run and parameters give the same map
MIN_UMAP_POINTS = 4  # below this UMAP has no neighbourhood to speak of; PCA draws the few points instead
WARM_UP_ROWS = 64  # enough for every stage of a small map (spectral start included), in milliseconds
# UMAP runs on the first PCA_DIMS principal components (standard practice): a tenth of the neighbour search's work at
# 512 dimensions, and what is dropped is the low-variance tail.
PCA_DIMS = 50
# The layout is single-threaded (a seeded, reproducible map) and costs epochs × edges: umap's 200 epochs take ~14 s at
# 50,000 rows here. Larger maps get fewer epochs, so the layout never costs more; measured on 100,000 clustered rows,
# 100 epochs keep 93 % of 200's 2-D neighbourhood recall (0.264 against 0.285) in half the time.
FULL_LAYOUT_ROWS = 50_000
LARGE_EPOCHS = 200  # umap's default above 10,000 rows
MIN_EPOCHS = 100  # fewer start to blur the local structure (60 epochs: recall 0.242)
PCA_BLOCK_ROWS = 8192  # rows centred at a time: ~16 MB at 512 dimensions, whatever the run's size
NO_SPREAD = 1e-6  # a component with less than this share of the first's variance is float32 rounding: drawn as zero
_UMAP_IMPORT = threading.Lock()  # a run's warm-up thread and its map step may both reach umap first


@dataclass(frozen=True)
class ProjectionParams:
    """How to draw the map. `method="pca"` is instant and linear; UMAP keeps neighbourhoods (n_neighbors, min_dist)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    method: str = "umap"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.metric not in METRICS:
            raise ValueError(f"metric: must be one of {', '.join(METRICS)} (got {self.metric!r})")
        whole = not isinstance(self.n_neighbors, bool) and int(self.n_neighbors) == self.n_neighbors
        if not whole or not 2 <= self.n_neighbors <= 500:
            raise ValueError(f"n_neighbors: must be a whole number from 2 to 500 (got {self.n_neighbors!r})")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ValueError(f"min_dist: must be between 0 and 1 (got {self.min_dist!r})")
        object.__setattr__(self, "n_neighbors", int(self.n_neighbors))
        object.__setattr__(self, "min_dist", round(float(self.min_dist), 4))

    @property
    def name(self) -> str:
        """The cache file's stem: every parameter that changes the result, and nothing else."""
        if self.method == "pca":
            return f"pca-{self.metric}"
        return f"umap-n{self.n_neighbors}-d{self.min_dist:g}-{self.metric}"

    def describe(self) -> str:
        if self.method == "pca":
            return f"PCA ({self.metric})"
        return f"UMAP (n_neighbors={self.n_neighbors}, min_dist={self.min_dist:g}, {self.metric})"


DEFAULT_PARAMS = ProjectionParams()


def projection_path(run_dir, params: ProjectionParams = DEFAULT_PARAMS) -> Path:
    return MAP.result(run_dir, params)


def project(vectors: np.ndarray, params: ProjectionParams = DEFAULT_PARAMS,
            report: Callable[[str], None] = lambda stage: None) -> tuple[np.ndarray, str]:
    """2-D coordinates (n × 2, float32) for the rows of `vectors`, and a note on the method actually used.

    Duplicate vectors are projected once and share their point (UMAP trips over exact duplicates); tiny inputs
    clamp n_neighbors, or fall back to PCA, instead of failing. `report` is told each stage as it starts.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {vectors.shape}")
    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32), "empty"
    vectors = np.nan_to_num(vectors)
    if params.metric == "cosine":
        # On unit vectors, euclidean distance orders neighbours exactly as cosine does, and zero vectors stay finite.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    # Rounded: copies that differ only in float noise (say, one rescaled) count as duplicates too.
    report("finding duplicate images")
    first, inverse = _distinct_rows(np.round(vectors, 6))
    unique = vectors[first]
    if params.method == "pca" or len(unique) < MIN_UMAP_POINTS:
        note = "pca" if params.method == "pca" else f"pca (only {len(unique)} distinct points; too few for UMAP)"
        return pca_2d(unique)[inverse], note
    neighbors = max(2, min(params.n_neighbors, len(unique) - 2))
    coords = _umap(unique, neighbors, params.min_dist, report)
    note = "umap" if neighbors == params.n_neighbors else \
        f"umap (n_neighbors clamped to {neighbors}: {len(unique)} distinct points)"
    return coords[inverse], note


def warm_up() -> None:
    """Import umap and load (or compile) the code a map runs, on a few random rows: a run's driver calls it in a
    thread while images embed, so that its map step finds everything ready (~2 s sooner at 720 images)."""
    project(np.random.default_rng(SEED).normal(size=(WARM_UP_ROWS, 8)))


def _distinct_rows(rows: np.ndarray, keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): where each distinct row first appears, and each row's distinct row, as np.unique(axis=0) gives.

    From one 64-bit key per row, a seeded hash of its bits in exact integer arithmetic: sorting 100,000 rows of 512
    numbers takes seconds, sorting their keys milliseconds. Rows that share a key are confirmed equal in full; a rare
    false match of two different rows falls back to sorting the rows.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32) + np.float32(0)  # -0.0 becomes 0.0: equal rows, equal bits
    blocks = [slice(start, start + PCA_BLOCK_ROWS) for start in range(0, len(rows), PCA_BLOCK_ROWS)]
    if keys is None:
        multipliers = np.random.default_rng(SEED).integers(1, 2**63, rows.shape[1], dtype=np.uint64) | np.uint64(1)
        words = rows.view(np.uint32)
        keys = np.concatenate([(words[b].astype(np.uint64) * multipliers).sum(axis=1) for b in blocks])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if all(np.array_equal(rows[b], rows[first[inverse[b]]]) for b in blocks):
        return first, inverse
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _umap(vectors: np.ndarray, n_neighbors: int, min_dist: float,
          report: Callable[[str], None] = lambda stage: None) -> np.ndarray:
    import warnings

    report("loading UMAP")
    umap = _import_umap()
    report(f"principal components ({PCA_DIMS})")
    reduced = principal_components(vectors, PCA_DIMS) if vectors.shape[1] > PCA_DIMS else vectors
    reduced = np.ascontiguousarray(reduced, dtype=np.float32)
    # Spectral initialization needs a connected neighbour graph of some size; tiny sets start from random instead.
    init = "spectral" if len(reduced) > 2 * n_neighbors + 2 else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", "cannot cache" and friends: expected
        # Neighbours are found here: umap measures small sets' distances with a Python loop over every pair (4 s at
        # 2,880 rows), and searches large ones on one core (random_state), compiling anew in every process.
        report(f"neighbour graph ({n_neighbors} per point)")
        knn = map_neighbours.knn_graph(reduced, n_neighbors, SEED)
        report("layout")
        # umap reports its layout's epochs through tqdm: a file-like object turns its bar into "epoch 40 of 100".
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="euclidean", init=init,
                            random_state=SEED, n_jobs=1, n_components=2, precomputed_knn=knn,
                            n_epochs=layout_epochs(len(reduced)),
                            tqdm_kwds={"disable": False, "file": _EpochReport(report), "mininterval": 1.0,
                                       "ascii": True})
        coords = reducer.fit_transform(reduced)
    return np.asarray(coords, dtype=np.float32)


class _EpochReport:
    """A stream for tqdm: each bar it draws ("… 40/100 […]") is reported as the layout's epoch."""

    _BAR = re.compile(r"(\d+)/(\d+)")

    def __init__(self, report: Callable[[str], None]):
        self.report = report

    def write(self, text: str) -> None:
        found = self._BAR.findall(text)
        if found:
            done, total = found[-1]
            self.report(f"layout: epoch {done} of {total}")

    def flush(self) -> None:
        pass


def layout_epochs(rows: int) -> int | None:
    """umap's own choice (None: 500 epochs up to 10,000 rows, 200 above) up to FULL_LAYOUT_ROWS; beyond, fewer, so the
    layout (single-threaded, for a reproducible map) costs what FULL_LAYOUT_ROWS rows cost, never below MIN_EPOCHS."""
    if rows <= FULL_LAYOUT_ROWS:
        return None
    return max(MIN_EPOCHS, round(LARGE_EPOCHS * FULL_LAYOUT_ROWS / rows))


def _import_umap():
    """`import umap`, with its compiled code kept on disk: compiled once per machine, not once per process."""
    with _UMAP_IMPORT:
        import umap  # slow: numba compiles on first use; keep it off every start-up path

        _cache_compiled_code(("umap", "pynndescent"))
    return umap


def _cache_compiled_code(packages: tuple[str, ...]) -> None:
    """Turn on numba's on-disk cache for the packages' compiled functions that do not ask for it themselves.

    pynndescent caches many of its functions, umap almost none: every new process drawing a map compiled them again
    (~12 s of a small map's 14). Numba keeps the cache beside the library (__pycache__) where it may write there, else
    in the user's cache folder; NUMBA_CACHE_DIR moves it. A stale entry is never used: the cache is keyed by the source
    file's timestamp. Two exceptions: one function compiled twice with different options (umap's serial and parallel
    layout epoch) would share one cache entry, so of such a pair only the serial one is cached; and see `_StableCache`.
    """
    import sys

    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    found: dict[int, Dispatcher] = {}
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in packages and module is not None:
            found.update((id(value), value) for value in vars(module).values() if isinstance(value, Dispatcher))
    by_function: dict[object, list[Dispatcher]] = {}
    for dispatcher in found.values():
        by_function.setdefault(dispatcher.py_func, []).append(dispatcher)
    cache_type = _stable_cache_type()
    for variants in by_function.values():
        serial = [d for d in variants if not d.targetoptions.get("parallel")]
        chosen = variants if len(variants) == 1 else serial[:1] if len(serial) == 1 else []
        for dispatcher in chosen:
            if isinstance(dispatcher._cache, NullCache):
                dispatcher._cache = cache_type(dispatcher.py_func)


def _stable_cache_type():
    """numba's FunctionCache, minus signatures that take a compiled function as an argument (pynndescent passes its
    distance so): their key holds that function's per-process identity, so an entry would never be found again and
    every process would add one (~260 KB each)."""
    from numba.core import types
    from numba.core.caching import FunctionCache

    def per_process(sig) -> bool:
        return any(isinstance(arg, (types.Dispatcher, types.FunctionType)) for arg in getattr(sig, "args", sig))

    class _StableCache(FunctionCache):
        def load_overload(self, sig, target_context):
            return None if per_process(sig) else super().load_overload(sig, target_context)

        def save_overload(self, sig, data):
            if not per_process(sig):
                super().save_overload(sig, data)

    return _StableCache


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (zeros where the data has fewer dimensions of spread)."""
    return principal_components(vectors, 2)


def principal_components(vectors: np.ndarray, k: int) -> np.ndarray:
    """The first k principal component scores (n × k, float32), each oriented so its largest loading is positive;
    zeros where the data has fewer than k dimensions of spread.

    From the d × d covariance, one block of rows at a time (float32 products summed in float64): memory stays a
    block, not a copy of the data, and 100,000 × 512 takes ~0.3 s.
    """
    vectors = np.asarray(vectors)
    rows, dim = vectors.shape
    out = np.zeros((rows, k), dtype=np.float32)
    if rows < 2:
        return out
    mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    blocks = [slice(start, start + PCA_BLOCK_ROWS) for start in range(0, rows, PCA_BLOCK_ROWS)]
    covariance = np.zeros((dim, dim))
    for block in blocks:
        centred = vectors[block].astype(np.float32) - mean
        covariance += centred.T @ centred
    values, axes = np.linalg.eigh(covariance)  # ascending
    values, axes = values[::-1][:k], axes[:, ::-1][:, :k]
    spread = values > max(values[0], 0.0) * NO_SPREAD  # the rest is rounding noise, not a direction of the data
    axes = axes[:, spread]
    axes = axes * np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(axes.shape[1])])  # a fixed orientation
    axes = axes.astype(np.float32)
    for block in blocks:
        out[block, :axes.shape[1]] = (vectors[block].astype(np.float32) - mean) @ axes
    return out


def compute(run: RunDir, params: ProjectionParams, out: Path) -> None:
    """The map step's work: project the run's embeddings with `params` into `out` (row i = the run's row id i).

    A run that carried rows over from an older one (config.json's `reuse`) keeps that run's map instead, so a picture
    people know does not reshuffle (`doggos.explore.map_carry`); its metadata adds `placed_from` (the old run's id),
    `kept` and `placed` (new images placed by their neighbours). `recompute` asks for a fresh map.
    """
    import time

    from doggos.base import store

    started = time.monotonic()
    progress = MAP.progress_file(run, params)

    def report(stage: str) -> None:  # the page shows it under "Computing …"; best effort, a map never fails for it
        with contextlib.suppress(OSError), atomic_output(progress) as tmp:
            progress.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(stage, encoding="utf-8")

    old = _carried_from(run, params)
    if old is not None:
        from doggos.explore import map_carry

        report(f"placing the images where run {old.id} had them")
        placement = map_carry.place(run, old, params)
        if placement is not None:
            meta = store.read_columns(run, ["path", "class"])
            _write_to(out, params, placement.coords, meta.column("path").to_pylist(), meta.column("class").to_pylist(),
                      placement.note, time.monotonic() - started,
                      {"placed_from": old.id, "kept": placement.kept, "placed": placement.placed})
            progress.unlink(missing_ok=True)
            return
    report("reading the embeddings")
    vectors, meta = store.load_embeddings(run)
    coords, note = project(vectors, params, report)
    report("writing the map")
    _write_to(out, params, coords, meta["path"].tolist(), meta["label"].tolist(), note, time.monotonic() - started)
    progress.unlink(missing_ok=True)


def _carried_from(run: RunDir, params: ProjectionParams) -> RunDir | None:
    """The run this one carried its rows over from (config.json's `reuse`), if it is still there and no fresh map was
    asked for (`recompute`)."""
    run = run_dir_of(run)
    config = read_json(run.config, {})
    reuse = config.get("reuse") if isinstance(config, dict) else None
    if not reuse or fresh_marker(run, params).exists():
        return None
    old = RunDir(reuse)
    return old if old.path.is_dir() and old.path != run.path else None


def fresh_marker(run_dir, params: ProjectionParams) -> Path:
    """Present when the map for `params` must be a fresh one of this run alone, not carried over from its old run."""
    return run_dir_of(run_dir).projections / f"{params.name}.fresh"


def recompute(run_dir, params: ProjectionParams = DEFAULT_PARAMS) -> StepStatus:
    """Replace the map for `params` with a fresh one that ignores the old run (every point may move): marked fresh, the
    stored map removed, the map step started in the background."""
    marker = fresh_marker(run_dir, params)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    projection_path(run_dir, params).unlink(missing_ok=True)
    return MAP.start(run_dir, params)


def _default_slots() -> int:
    # Each UMAP is single-threaded (a fixed random_state) and holds the run's vectors and a neighbour graph in memory;
    # without a cap, a workshop's worth of sessions trying parameters would start one each and exhaust the machine.
    return max(1, (os.cpu_count() or 2) // 2)


map_slots = slots_from_env("DOGGOS_MAP_SLOTS", _default_slots)  # UMAPs computing at once on this machine
MAP = Step(name="map", home=f"{__name__}:MAP", folder="projections", phase="projecting", params_type=ProjectionParams,
           compute=compute, slots=map_slots, needs_slot=lambda params: params.method == "umap",  # PCA never waits
           warm_up=warm_up)


def write(run_dir, params: ProjectionParams, coords: np.ndarray, paths: list[str], labels: list[str],
          note: str, seconds: float | None = None) -> Path:
    """Store coordinates computed elsewhere as the map for `params` (tests and benchmarks use it)."""
    path = projection_path(run_dir, params)
    _write_to(path, params, coords, paths, labels, note, seconds)
    return path


def _write_to(path: Path, params: ProjectionParams, coords: np.ndarray, paths: list[str], labels: list[str],
              note: str, seconds: float | None, extra: dict | None = None) -> None:
    """Coordinates as Parquet, atomically: readers see all of it or nothing. `extra` joins the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    coords = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    table = pa.table({
        "row": pa.array(np.arange(len(coords)), pa.int64()),
        "path": pa.array(paths, pa.string()),
        "class": pa.array(labels, pa.string()),
        "x": pa.array(coords[:, 0]),
        "y": pa.array(coords[:, 1]),
    })
    info = {"params": asdict(params), "method": note, "points": len(coords), "seconds": seconds, **(extra or {})}
    with atomic_output(path) as tmp:
        pq.write_table(table.replace_schema_metadata({"doggos": json.dumps(info)}), tmp)


def load(path: str | os.PathLike):
    """A projection as a DataFrame (row, path, label, x, y) and what made it (params, method, points, seconds)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {}).get(b"doggos", b"{}"))
    frame = table.to_pandas().rename(columns={"class": "label"})
    return frame, info


def info(path: str | os.PathLike) -> dict:
    """What made a stored map (params, method, points, seconds; placed_from, kept and placed for a map carried over from
    an older run), from its file's metadata alone: no column is read."""
    import pyarrow.parquet as pq

    return json.loads((pq.read_schema(path).metadata or {}).get(b"doggos", b"{}"))
