"""An updated run's map from its old run's: carried-over images keep their places, new ones join their neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from doggos.base import store, units
from doggos.base.rundir import run_dir_of
from doggos.explore.neighbours import normalise

K = 5  # a new image lands at the similarity-weighted mean of its K most similar placed images
QUERY_ROWS = 1024  # new images compared at a time; with TILE_ROWS, one 16 MB score matrix whatever the run's size
TILE_ROWS = 4096  # the run's rows read and compared at a time (8 MB at 512 dimensions)


@dataclass(frozen=True)
class Placement:
    """Coordinates for the new run's rows (n × 2 float32, its row order), and how they came about. Unpacks as
    (coords, note), as projection.project() returns."""

    coords: np.ndarray
    kept: int  # rows carried over that kept their old place
    placed: int  # new rows placed by their neighbours
    old_id: str
    method: str

    @property
    def note(self) -> str:
        return f"{self.method} ({units.count(self.kept)} kept their places from run {self.old_id}; {units.count(self.placed)} " \
               "placed by their neighbours)"

    def __iter__(self):
        return iter((self.coords, self.note))


def place(run, old_run, params) -> Placement | None:
    """The old run's map for `params` (a projection.ProjectionParams), carried over to `run`: None when the old run has
    no such map, either run has no content hashes, or the two share no image.

    Rows are matched by content hash (the same bytes at the same path first, else anywhere: a moved file keeps its
    place). A new image lands at the similarity-weighted mean of the places of its K most cosine-similar placed images.
    """
    run, old = run_dir_of(run), run_dir_of(old_run)
    # The file projection.projection_path names: projection calls this module, and importing it back is a cycle.
    old_map = old.projections / f"{params.name}.parquet"
    new_rows, old_rows = _hashes(run), _hashes(old)
    if not old_map.exists() or new_rows is None or old_rows is None:
        return None
    places = _old_places(old_rows, old_map)
    xy = _carried(new_rows, places)
    kept = ~np.isnan(xy[:, 0])
    if not kept.any():
        return None
    new = np.nonzero(~kept)[0]
    if len(new):
        indices, similarities = _nearest_placed(run, new, kept, min(K, int(kept.sum())))
        weights = np.clip(similarities, 0, None)
        weights[weights.sum(axis=1) == 0] = 1  # nothing similar at all: the plain mean of the nearest
        xy[new] = np.einsum("ij,ijc->ic", weights, xy[indices]) / weights.sum(axis=1, keepdims=True)
    return Placement(xy.astype(np.float32), int(kept.sum()), len(new), old.id, params.method)


def _hashes(run) -> pd.DataFrame | None:
    """The run's rows as path, hash (None where a row has none); None when its Parquet has no content_hash column."""
    try:
        table = store.read_columns(run, ["path", "content_hash"])
    except (pa.ArrowInvalid, KeyError, FileNotFoundError):
        return None
    return pd.DataFrame({"path": table.column("path").to_pylist(), "hash": table.column("content_hash").to_pylist()})


def _old_places(old_rows: pd.DataFrame, old_map) -> pd.DataFrame:
    """The old run's rows (hash, path) with their places on its map (x, y): by row number, or by path where the map's
    rows are not the run's (a map from before the run was republished)."""
    places = pq.read_table(old_map, columns=["path", "x", "y"]).to_pandas()
    if places["path"].tolist() != old_rows["path"].tolist():
        places = old_rows[["path"]].merge(places.drop_duplicates("path"), on="path", how="left")
    found = old_rows.assign(x=places["x"].to_numpy(np.float64), y=places["y"].to_numpy(np.float64))
    return found.dropna(subset=["hash", "x"])


def _carried(new_rows: pd.DataFrame, places: pd.DataFrame) -> np.ndarray:
    """Each new row's old place (n × 2, float64), NaN for images the old map does not have."""
    by_file = places.drop_duplicates(["hash", "path"]).set_index(["hash", "path"])[["x", "y"]]
    by_hash = places.drop_duplicates("hash").set_index("hash")[["x", "y"]]
    xy = by_file.reindex(pd.MultiIndex.from_frame(new_rows[["hash", "path"]])).to_numpy(np.float64)
    moved = np.isnan(xy[:, 0])
    xy[moved] = by_hash.reindex(new_rows["hash"][moved]).to_numpy(np.float64)
    return xy


def _nearest_placed(run, rows: np.ndarray, placed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `rows`, its k most cosine-similar rows among `placed` (a mask over the run's rows): (indices,
    similarities), each len(rows) × k, in no particular order. The run is read a tile at a time, never all at once."""
    wanted = []
    for start, chunk in _tiles(run):  # first pass: the new rows' vectors (`rows` is ascending)
        mine = rows[np.searchsorted(rows, start):np.searchsorted(rows, start + len(chunk))]
        wanted.append(normalise(chunk[mine - start]))
    queries = np.concatenate(wanted)
    best_sim = np.full((len(rows), k), -np.inf, np.float32)
    best_idx = np.zeros((len(rows), k), np.int64)
    for start, chunk in _tiles(run):
        ids = start + np.nonzero(placed[start:start + len(chunk)])[0]
        if not len(ids):
            continue
        tile = normalise(chunk[ids - start])
        for lo in range(0, len(rows), QUERY_ROWS):
            scores = queries[lo:lo + QUERY_ROWS] @ tile.T
            sims, idx = best_sim[lo:lo + QUERY_ROWS], best_idx[lo:lo + QUERY_ROWS]  # views: updated in place
            # Only rows where some score beats their current k-th best need a new top k: fewer with every tile.
            hit = np.nonzero((scores > sims.min(axis=1, keepdims=True)).any(axis=1))[0]
            if not len(hit):
                continue
            scores = scores[hit]
            top = np.argpartition(scores, -min(k, len(ids)), axis=1)[:, -k:]
            cand_sim = np.concatenate([sims[hit], np.take_along_axis(scores, top, axis=1)], axis=1)
            cand_idx = np.concatenate([idx[hit], ids[top]], axis=1)
            keep = np.argpartition(cand_sim, -k, axis=1)[:, -k:]
            sims[hit], idx[hit] = np.take_along_axis(cand_sim, keep, axis=1), np.take_along_axis(cand_idx, keep, axis=1)
    return best_idx, best_sim


def _tiles(run):
    start = 0
    for chunk in store.embedding_chunks(run, TILE_ROWS):
        yield start, chunk
        start += len(chunk)
