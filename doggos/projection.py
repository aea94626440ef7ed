"""2-D maps of a run's embeddings (UMAP, or PCA) and their cache under <run>/projections/; `MAP` is the post-run step.

`import umap` costs seconds to tens of seconds (numba), so it happens only inside `project()`, never on import. Computing
in the background, status files and machine-wide slots are `doggos.steps`' job.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from doggos.rundir import RunDir, atomic_output
from doggos.steps import Step, slots_from_env

METHODS = ("umap", "pca")
METRICS = ("cosine", "euclidean")
SEED = 42  # a fixed random_state: the same run and parameters give the same map
MIN_UMAP_POINTS = 4  # below this UMAP has no neighbourhood to speak of; PCA draws the few points instead


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
        if isinstance(self.n_neighbors, bool) or int(self.n_neighbors) != self.n_neighbors or not 2 <= self.n_neighbors <= 500:
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


def project(vectors: np.ndarray, params: ProjectionParams = DEFAULT_PARAMS) -> tuple[np.ndarray, str]:
    """2-D coordinates (n × 2, float32) for the rows of `vectors`, and a note on the method actually used.

    Duplicate vectors are projected once and share their point (UMAP trips over exact duplicates); tiny inputs
    clamp n_neighbors, or fall back to PCA, instead of failing.
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
    # Rounded keys: copies that differ only in float noise (say, one rescaled) count as duplicates too.
    _, first, inverse = np.unique(np.round(vectors, 6), axis=0, return_index=True, return_inverse=True)
    unique, inverse = vectors[first], inverse.reshape(-1)
    if params.method == "pca" or len(unique) < MIN_UMAP_POINTS:
        note = "pca" if params.method == "pca" else f"pca (only {len(unique)} distinct points; too few for UMAP)"
        return pca_2d(unique)[inverse], note
    neighbors = max(2, min(params.n_neighbors, len(unique) - 2))
    coords = _umap(unique, neighbors, params.min_dist)
    note = "umap" if neighbors == params.n_neighbors else f"umap (n_neighbors clamped to {neighbors}: {len(unique)} distinct points)"
    return coords[inverse], note


def _umap(vectors: np.ndarray, n_neighbors: int, min_dist: float) -> np.ndarray:
    import warnings

    import umap  # slow: numba compiles on first use; keep it off every start-up path

    # Spectral initialization needs a connected neighbour graph of some size; tiny sets start from random instead.
    init = "spectral" if len(vectors) > 2 * n_neighbors + 2 else "random"
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="euclidean", init=init,
                        random_state=SEED, n_jobs=1, n_components=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state" and friends: expected, not news
        coords = reducer.fit_transform(vectors)
    return np.asarray(coords, dtype=np.float32)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (zeros where the data has fewer dimensions of spread)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(vectors), 2), dtype=np.float32)
    if len(vectors) < 2:
        return out
    centered = vectors - vectors.mean(axis=0)
    u, s, vt = np.linalg.svd(centered, full_matrices=False)
    k = min(2, len(s))
    components = u[:, :k] * s[:k]
    signs = np.sign(vt[:k, np.argmax(np.abs(vt[:k]), axis=1)].diagonal())  # a fixed orientation: no random flips
    out[:, :k] = components * np.where(signs == 0, 1, signs)
    return out


def compute(run: RunDir, params: ProjectionParams, out: Path) -> None:
    """The map step's work: project the run's embeddings with `params` into `out` (row i = the run's row id i)."""
    import time

    from doggos import store

    started = time.monotonic()
    vectors, meta = store.load_embeddings(run)
    coords, note = project(vectors, params)
    _write_to(out, params, coords, meta["path"].tolist(), meta["label"].tolist(), note, time.monotonic() - started)


def _default_slots() -> int:
    # Each UMAP is single-threaded (a fixed random_state) and holds the run's vectors and a neighbour graph in memory;
    # without a cap, a workshop's worth of sessions trying parameters would start one each and exhaust the machine.
    return max(1, (os.cpu_count() or 2) // 2)


map_slots = slots_from_env("DOGGOS_MAP_SLOTS", _default_slots)  # UMAPs computing at once on this machine
MAP = Step(name="map", folder="projections", phase="projecting", params_type=ProjectionParams, compute=compute,
           slots=map_slots, needs_slot=lambda params: params.method == "umap")  # PCA is instant: it never waits


def write(run_dir, params: ProjectionParams, coords: np.ndarray, paths: list[str], labels: list[str],
          note: str, seconds: float | None = None) -> Path:
    """Store coordinates computed elsewhere as the map for `params` (tests and benchmarks use it)."""
    path = projection_path(run_dir, params)
    _write_to(path, params, coords, paths, labels, note, seconds)
    return path


def _write_to(path: Path, params: ProjectionParams, coords: np.ndarray, paths: list[str], labels: list[str],
              note: str, seconds: float | None) -> None:
    """Coordinates as Parquet, atomically: readers see all of it or nothing."""
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
    info = {"params": asdict(params), "method": note, "points": len(coords), "seconds": seconds}
    with atomic_output(path) as tmp:
        pq.write_table(table.replace_schema_metadata({"doggos": json.dumps(info)}), tmp)


def load(path: str | os.PathLike):
    """A projection as a DataFrame (row, path, label, x, y) and what made it (params, method, points, seconds)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {}).get(b"doggos", b"{}"))
    frame = table.to_pandas().rename(columns={"class": "label"})
    return frame, info
