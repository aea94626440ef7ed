"""2-D maps of a run's embeddings (UMAP, or PCA), cached on disk per run and parameters, computable in the background.

`import umap` costs seconds to tens of seconds (numba), so it happens only inside `project()`, never on import.
Files under <run>/projections/: NAME.parquet (the result, written atomically), NAME.running (a background
computation's pid), NAME.waiting (it waits for a UMAP slot), NAME.error.txt (why it failed) and NAME.log (its output).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from doggos.processes import alive, reap, spawn_detached
from doggos.rundir import RunDir

METHODS = ("umap", "pca")
METRICS = ("cosine", "euclidean")
SEED = 42  # a fixed random_state: the same run and parameters give the same map
MIN_UMAP_POINTS = 4  # below this UMAP has no neighbourhood to speak of; PCA draws the few points instead
STALE_START_S = 60.0  # a .running file with no pid after this long belongs to a launcher that died
SLOT_POLL_S = 0.5  # how often a UMAP waiting for a slot looks again


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


@dataclass(frozen=True)
class ProjectionStatus:
    """Where one projection stands: ready | running | failed | missing."""

    state: str
    path: Path
    error: str | None = None
    started: float | None = None  # when a running computation was launched (time.time())
    waiting: bool = False  # running, but queued behind other UMAPs for a slot (see umap_slot)


def projection_path(run_dir, params: ProjectionParams = DEFAULT_PARAMS) -> Path:
    return _run_dir(run_dir).projections / f"{params.name}.parquet"


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


def compute(run_dir, params: ProjectionParams = DEFAULT_PARAMS, force: bool = False) -> Path:
    """Project the run's embeddings with `params` and cache the result; returns the Parquet path.

    Idempotent: an existing result is returned as is unless `force`. Safe to run twice at once (atomic rename).
    """
    from doggos import store

    run = _run_dir(run_dir)
    path = projection_path(run, params)
    if path.exists() and not force:
        return path
    with umap_slot(_sidecar(run, params, ".waiting")) if params.method == "umap" else contextlib.nullcontext():
        started = time.monotonic()
        vectors, meta = store.load_embeddings(run)
        coords, note = project(vectors, params)
    return write(run, params, coords, meta["path"].tolist(), meta["label"].tolist(), note,
                 seconds=time.monotonic() - started)


def map_slots() -> int:
    """How many UMAPs may compute at once on this machine: $DOGGOS_MAP_SLOTS, else half the cores.

    Each UMAP is single-threaded (a fixed random_state) and holds the run's vectors and a neighbour graph in memory;
    without a cap, a workshop's worth of sessions trying parameters would start one each and exhaust the machine.
    """
    configured = os.environ.get("DOGGOS_MAP_SLOTS", "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"DOGGOS_MAP_SLOTS: must be a whole number of at least 1 (got {configured!r})")
        return int(configured)
    return max(1, (os.cpu_count() or 2) // 2)


@contextlib.contextmanager
def umap_slot(waiting_marker: Path | None = None):
    """Hold one of the machine's map_slots() for the block; `waiting_marker` exists while queued for one.

    The slots are lock files (flock) in the temp folder, so the limit spans every process of this user, and a
    process that dies releases its slot with it.
    """
    folder = Path(tempfile.gettempdir()) / f"doggos-map-slots-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    slots, held = map_slots(), None
    try:
        while held is None:
            for slot in range(slots):
                handle = open(folder / f"slot-{slot}.lock", "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = handle
                    break
                except BlockingIOError:
                    handle.close()
            if held is None:
                if waiting_marker is not None and not waiting_marker.exists():
                    waiting_marker.parent.mkdir(parents=True, exist_ok=True)
                    waiting_marker.touch()
                time.sleep(SLOT_POLL_S)
        if waiting_marker is not None:
            waiting_marker.unlink(missing_ok=True)
        yield
    finally:
        if waiting_marker is not None:
            waiting_marker.unlink(missing_ok=True)
        if held is not None:
            held.close()  # releases the lock


def write(run_dir, params: ProjectionParams, coords: np.ndarray, paths: list[str], labels: list[str],
          note: str, seconds: float | None = None) -> Path:
    """Write coordinates (row i = the run's row id i) as NAME.parquet, atomically: readers see all of it or nothing."""
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
    table = table.replace_schema_metadata({"doggos": json.dumps(info)})
    path = projection_path(run_dir, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike):
    """A projection as a DataFrame (row, path, label, x, y) and what made it (params, method, points, seconds)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {}).get(b"doggos", b"{}"))
    frame = table.to_pandas().rename(columns={"class": "label"})
    return frame, info


def status(run_dir, params: ProjectionParams = DEFAULT_PARAMS) -> ProjectionStatus:
    run = _run_dir(run_dir)
    path = projection_path(run, params)
    reap()
    if path.exists():
        return ProjectionStatus("ready", path)
    error_file, marker = _sidecar(run, params, ".error.txt"), _sidecar(run, params, ".running")
    if error_file.exists():
        return ProjectionStatus("failed", path, error_file.read_text(encoding="utf-8", errors="replace").strip())
    if marker.exists():
        started = _read_marker(marker)
        pid = started.get("pid")
        if pid and alive(pid):
            return ProjectionStatus("running", path, started=started.get("created"),
                                    waiting=_sidecar(run, params, ".waiting").exists())
        if not pid and time.time() - started.get("created", 0) < STALE_START_S:
            return ProjectionStatus("running", path, started=started.get("created"))
        if path.exists():  # finished between our two looks
            return ProjectionStatus("ready", path)
        log = _sidecar(run, params, ".log")
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:] if log.exists() else []
        return ProjectionStatus("failed", path, "the projection process exited unexpectedly"
                                + (":\n" + "\n".join(tail) if tail else ""))
    return ProjectionStatus("missing", path)


def start(run_dir, params: ProjectionParams = DEFAULT_PARAMS) -> ProjectionStatus:
    """Compute in a separate process unless the result exists or is on its way; returns at once.

    A failed computation is retried: its error file is cleared first.
    """
    run = _run_dir(run_dir)
    current = status(run, params)
    if current.state in ("ready", "running"):
        return current
    marker = _sidecar(run, params, ".running")
    marker.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(run, params, ".error.txt").unlink(missing_ok=True)
    if current.state == "failed":
        marker.unlink(missing_ok=True)  # a dead computation's leftovers; a missing map has none to remove
        _sidecar(run, params, ".waiting").unlink(missing_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one launcher wins when two sessions race
    except FileExistsError:
        return status(run, params)
    with os.fdopen(fd, "w") as handle:
        json.dump({"created": time.time()}, handle)
    command = ["-m", "doggos.projection", str(run.path), "--n-neighbors", str(params.n_neighbors),
               "--min-dist", str(params.min_dist), "--metric", params.metric, "--method", params.method]
    child = spawn_detached(command, _sidecar(run, params, ".log"))
    created = time.time()
    _write_marker(marker, {"created": created, "pid": child.pid})
    return ProjectionStatus("running", projection_path(run, params), started=created)


def main(argv: list[str] | None = None) -> int:
    """`python -m doggos.projection RUN_DIR [--n-neighbors N] [--min-dist D] [--metric M] [--method M]`."""
    parser = argparse.ArgumentParser(prog="python -m doggos.projection", description=main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--n-neighbors", type=int, default=DEFAULT_PARAMS.n_neighbors)
    parser.add_argument("--min-dist", type=float, default=DEFAULT_PARAMS.min_dist)
    parser.add_argument("--metric", default=DEFAULT_PARAMS.metric, choices=METRICS)
    parser.add_argument("--method", default=DEFAULT_PARAMS.method, choices=METHODS)
    parser.add_argument("--force", action="store_true", help="recompute even if the result is cached")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    marker, error_file = None, None
    try:
        params = ProjectionParams(args.n_neighbors, args.min_dist, args.metric, args.method)
        marker, error_file = _sidecar(run, params, ".running"), _sidecar(run, params, ".error.txt")
        print(f"projecting {run.path} with {params.describe()}", flush=True)
        path = compute(run, params, force=args.force)
        print(f"wrote {path}", flush=True)
        return 0
    except Exception as error:  # recorded for the page that waits on it; the process still fails
        message = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
        print(f"projection failed: {message}", file=sys.stderr, flush=True)
        if error_file is not None:
            error_file.parent.mkdir(parents=True, exist_ok=True)
            error_file.write_text(message, encoding="utf-8")
        return 1
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def _run_dir(run_dir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(getattr(run_dir, "path", run_dir))


def _sidecar(run: RunDir, params: ProjectionParams, suffix: str) -> Path:
    return run.projections / f"{params.name}{suffix}"


def _read_marker(marker: Path) -> dict:
    try:
        return json.loads(marker.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {"created": time.time()}  # being written right now


def _write_marker(marker: Path, data: dict) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, marker)


if __name__ == "__main__":
    sys.exit(main())
