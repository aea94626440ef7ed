"""k nearest neighbours by cosine similarity, computed in blocks (in this process, or as Ray tasks), never n × n.

How: the rows are normalised to unit length and cut into tiles of `tile_rows` rows. One unit of work takes a block
of `query_rows` query rows and walks the tiles in order: block × tile similarities (one matrix product), then only
the candidates that can still enter the block's top k are kept. The first tile sets each row's bar with one
`np.partition`; later tiles keep only scores strictly above the current k-th best, which is exact because their
row indices are all larger (an equal score from a later row loses the tie). A task's memory is one block × tile
score matrix (`tile_bytes`, 8 MB by default), a copy for the first tile's partition and masks: ~2.5 × tile_bytes
(measured: 20 MB), whatever n is.

Order: each row's neighbours are sorted by similarity, highest first; equal similarities by row index, lowest first.
The row itself is never its own neighbour (an exact copy of it is, with similarity ~1).

On Ray, the normalised tiles are `ray.put` once each (`put_tiles`: the driver holds one tile at a time, so a caller
that reads its matrix tile by tile, as the label-quality step does, never holds the whole of it), every task maps
them read-only from the object store, tasks ask for one CPU and are spread over the cluster's nodes. The "numpy"
backend runs the same blocks on a thread pool in this process (matrix products release the GIL). Both run
`block_top_k` on the same blocks and tiles with single-threaded BLAS (a multi-threaded sgemm rounds some sums
differently), so on one machine they give identical answers, bit for bit.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

BACKENDS = ("ray", "numpy")
QUERY_ROWS = 1024  # query rows per task: ~100 tasks for 100,000 rows, enough to spread, few enough to cost little overhead
TILE_BYTES = 8 * 2**20  # one block × tile float32 score matrix: a task peaks at ~20 MB; 16 MB was 5 % faster, 40 MB a task


@dataclass(frozen=True)
class Neighbours:
    """Row i's k nearest rows (`indices`, int64) and their cosine similarities (`similarities`, float32), best first."""

    indices: np.ndarray
    similarities: np.ndarray

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; NaN and infinities become 0, and a zero row stays zero."""
    vectors = np.nan_to_num(np.asarray(vectors, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def check_k(k, rows: int | None = None) -> int:
    """`k` as an int, or a ValueError naming "k": a whole number from 1 to 100, and fewer than the rows.

    Text from a form or the command line ("10") is read as the number it spells."""
    if isinstance(k, str) and k.strip().isdigit():
        k = int(k.strip())
    if isinstance(k, bool) or not isinstance(k, (int, np.integer, float)) or int(k) != k or not 1 <= k <= 100:
        raise ValueError(f"k: must be a whole number from 1 to 100 (got {k!r})")
    if rows is not None and k >= rows:
        raise ValueError(f"k: must be smaller than the number of images ({rows}): each image needs {int(k)} "
                         f"neighbours besides itself, so the run needs at least {int(k) + 1} images (got k={k!r})")
    return int(k)


def plan(rows: int, query_rows: int = QUERY_ROWS, tile_bytes: int = TILE_BYTES) -> tuple[int, int]:
    """(query rows per block, rows per tile) so that one block × tile float32 score matrix fits `tile_bytes`."""
    if query_rows < 1:
        raise ValueError(f"query_rows: must be at least 1 (got {query_rows!r})")
    block = max(1, min(query_rows, rows))
    tile = max(1, min(rows, tile_bytes // (4 * block)))
    return block, tile


def nearest_neighbours(vectors: np.ndarray, k: int = 10, *, backend: str = "ray", ray_address: str | None = None,
                       query_rows: int = QUERY_ROWS, tile_bytes: int = TILE_BYTES,
                       threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> Neighbours:
    """Each row's k most cosine-similar other rows (see the module docstring for the method and the order).

    backend "ray" runs the blocks as Ray tasks on the Ray this process is connected to (else `ray_address`, else
    RAY_ADDRESS, else a local Ray started for the call); "numpy" runs them here on `threads` threads (default: one
    per core). `progress(rows_done, rows)` is called as blocks finish.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)} (got {backend!r})")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors: expected a 2-D array (rows × dim), got shape {vectors.shape}")
    rows = len(vectors)
    k = check_k(k, rows)
    block, tile = plan(rows, query_rows, tile_bytes)
    blocks = [(start, min(start + block, rows)) for start in range(0, rows, block)]
    tiles = range(0, rows, tile)
    if backend == "numpy":
        parts = _on_threads(vectors, k, blocks, tiles, tile, threads or os.cpu_count() or 1, progress)
    else:
        parts = _on_ray(vectors, k, blocks, tiles, tile, ray_address, progress)
    indices = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.int64)
    similarities = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.float32)
    return Neighbours(indices, similarities)


def _on_threads(vectors, k, blocks, tiles, tile, threads, progress) -> list[tuple[np.ndarray, np.ndarray]]:
    from threadpoolctl import threadpool_limits

    unit = normalise(vectors)
    chunks = [unit[start:start + tile] for start in tiles]
    done = 0
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(block_top_k, start, stop, k, *chunks) for start, stop in blocks]
        for future, (start, stop) in zip(futures, blocks):
            future.result()
            done += stop - start
            if progress:
                progress(done, len(vectors))
    return [future.result() for future in futures]


def _on_ray(vectors, k, blocks, tiles, tile, ray_address, progress) -> list[tuple[np.ndarray, np.ndarray]]:
    from doggos.pipeline.cluster import ray_connection

    with ray_connection(ray_address):
        # Normalised one tile at a time: the driver never holds a second full copy, the object store holds one.
        stored = put_tiles(vectors[start:start + tile] for start in tiles)
        parts = _blocks_on_ray(stored, k, blocks, progress)
        del stored
    return parts


@dataclass
class StoredTiles:
    """A matrix's rows, normalised, in Ray's object store as consecutive tiles: what the neighbour tasks read, and what
    the driver reads back without a copy (`ray.get` of a numpy array maps the store's memory, read-only)."""

    refs: list
    sizes: list[int]
    dim: int

    def __len__(self) -> int:
        return sum(self.sizes)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    def chunks(self):
        """The tiles in row order, one at a time, as read-only float32 arrays."""
        import ray

        for ref in self.refs:
            yield ray.get(ref)

    def take(self, rows) -> np.ndarray:
        """The unit rows at these row ids (a copy, in the order given)."""
        import ray

        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        starts = np.cumsum([0] + self.sizes)
        tile_of = np.searchsorted(starts, rows, side="right") - 1
        for number in np.unique(tile_of):
            mine = tile_of == number
            out[mine] = ray.get(self.refs[number])[rows[mine] - starts[number]]
        return out


def put_tiles(chunks) -> StoredTiles:
    """Normalise each chunk of consecutive rows (float32 arrays, rows × dim) and put it in Ray's object store.

    Needs a connected Ray. Chunks may differ in size; the driver holds one chunk at a time."""
    import ray

    refs, sizes, dim = [], [], None
    for chunk in chunks:
        unit = normalise(chunk)
        if dim is None:
            dim = unit.shape[1]
        elif unit.shape[1] != dim:
            raise ValueError(f"chunks: every chunk needs {dim} columns, one has {unit.shape[1]}")
        refs.append(ray.put(unit))
        sizes.append(len(unit))
    return StoredTiles(refs, sizes, dim or 0)


def neighbours_of_tiles(stored: StoredTiles, k: int = 10, *, query_rows: int = QUERY_ROWS,
                        progress: Callable[[int, int], None] | None = None) -> Neighbours:
    """`nearest_neighbours` with backend "ray" for rows already in the object store (`put_tiles`), on the connected
    Ray: the caller never needs the whole matrix in its own memory."""
    rows = len(stored)
    k = check_k(k, rows)
    block = plan(rows, query_rows, TILE_BYTES)[0]
    blocks = [(start, min(start + block, rows)) for start in range(0, rows, block)]
    parts = _blocks_on_ray(stored, k, blocks, progress)
    return Neighbours(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _blocks_on_ray(stored: StoredTiles, k, blocks, progress) -> list[tuple[np.ndarray, np.ndarray]]:
    import ray

    rows = len(stored)
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_single_threaded_block)
    pending = {task.remote(start, stop, k, *stored.refs): number for number, (start, stop) in enumerate(blocks)}
    parts: list = [None] * len(blocks)
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            number = pending.pop(ref)
            parts[number] = ray.get(ref)
            done += blocks[number][1] - blocks[number][0]
        if progress:
            progress(done, rows)
    return parts


def _single_threaded_block(start: int, stop: int, k: int, *chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from threadpoolctl import threadpool_limits

    from doggos.base.processes import return_free_memory

    with threadpool_limits(limits=1, user_api="blas"):
        found = block_top_k(start, stop, k, *chunks)
    return_free_memory()  # the worker stays up after the step: it should not keep the block's ~20 MB of scores
    return found


def block_top_k(start: int, stop: int, k: int, *chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top k (indices, similarities) of query rows start..stop against all rows, given as consecutive unit-row tiles."""
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    pieces = [chunk[max(start - lo, 0):stop - lo] for chunk, lo, hi in zip(chunks, offsets[:-1], offsets[1:])
              if lo < stop and hi > start]
    query = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    size, total = stop - start, int(offsets[-1])
    # Start from k placeholders per row that lose to any real row: similarity -inf, an index past the last row.
    best_sim = np.full((size, k), -np.inf, np.float32)
    best_idx = np.full((size, k), total, np.int64)
    own = np.arange(start, stop)
    for number, (chunk, lo) in enumerate(zip(chunks, offsets[:-1])):
        scores = query @ chunk.T
        mine = (own >= lo) & (own < lo + len(chunk))
        scores[np.nonzero(mine)[0], own[mine] - lo] = -np.inf  # never one's own neighbour
        if number == 0:
            keep = _first_tile_candidates(scores, k)
        else:
            keep = scores > best_sim[:, -1:]  # strictly: an equal score from a later row loses the tie
        r, c = np.nonzero(keep)
        best_idx, best_sim = _merge(best_idx, best_sim, r, c + lo, scores[r, c], k)
    return best_idx, best_sim


def _first_tile_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """A mask of each row's top k scores in this tile (ties at the k-th score: the lowest columns)."""
    width = scores.shape[1]
    if width <= k:
        return np.ones(scores.shape, bool)
    kth = np.partition(scores, width - k, axis=1)[:, width - k:width - k + 1]
    above = scores > kth
    keep = above | (scores == kth)
    need = k - above.sum(axis=1)
    crowded = np.nonzero(keep.sum(axis=1) > k)[0]  # rows with more ties at the k-th score than places left
    if len(crowded):
        ties = scores[crowded] == kth[crowded]
        rank = np.cumsum(ties, axis=1, dtype=np.int32)
        keep[crowded] = above[crowded] | (ties & (rank <= need[crowded, None]))
    return keep


def _merge(best_idx, best_sim, rows, cols, sims, k) -> tuple[np.ndarray, np.ndarray]:
    """The top k per row of the current best and the new candidates (row, col, sim), by similarity then index."""
    size = len(best_idx)
    all_rows = np.concatenate([np.repeat(np.arange(size), k), rows])
    all_cols = np.concatenate([best_idx.ravel(), cols])
    all_sims = np.concatenate([best_sim.ravel(), sims.astype(np.float32, copy=False)])
    order = np.lexsort((all_cols, -all_sims, all_rows))
    first = np.concatenate([[0], np.cumsum(np.bincount(all_rows, minlength=size))[:-1]])
    take = order[(first[:, None] + np.arange(k)).ravel()]
    return all_cols[take].reshape(size, k), all_sims[take].reshape(size, k)


def brute_force(vectors: np.ndarray, k: int) -> Neighbours:
    """The plain reference: the full n × n similarity matrix, sorted per row. For tests on small inputs only."""
    unit = normalise(vectors)
    rows = len(unit)
    k = check_k(k, rows)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    columns = np.broadcast_to(np.arange(rows), scores.shape)
    order = np.lexsort((columns, -scores), axis=1)[:, :k]
    return Neighbours(order.astype(np.int64), np.take_along_axis(scores, order, axis=1))
