"""The map's neighbour graph (umap's `precomputed_knn`): exact for small maps, by k-means cells for large ones.

umap measures small sets' distances with a Python loop over every pair and searches large ones with pynndescent,
which compiles anew in every process; here the search is matrix products on every core, with nothing to compile.
Every function is seeded: the same rows and seed give the same graph, so a map stays reproducible.
"""

from __future__ import annotations

import numpy as np

EXACT_NEIGHBOURS_BELOW = 4096  # fewer rows get exact neighbours (an n × n matrix: 64 MB at most), more approximate ones
PROBE_CELLS = 8  # cells searched per cell: on 100,000 clustered rows, 1.4 s and every exact neighbour found (4: 0.98)
KMEANS_ROUNDS = 6  # Lloyd rounds that shape the cells; well-shaped cells need fewer probes
KMEANS_BLOCK_ROWS = 8192  # rows assigned to cells at a time: ~10 MB of scores at 100,000 rows (316 cells)
RECALL_SAMPLE = 256  # rows whose exact neighbours check the approximate ones (~0.1 s at 100,000 rows)
MIN_RECALL = 0.9  # below this share of exact neighbours found, pynndescent searches instead


def knn_graph(vectors: np.ndarray, k: int, seed: int):
    """(indices, distances, None): each row's k nearest rows (euclidean), itself first, as umap's precomputed_knn.

    Exact below EXACT_NEIGHBOURS_BELOW rows. Above, by `cell_neighbours` (matrix products, nothing to compile),
    checked against exact neighbours for a sample of rows; data it misses too often (little structure, like pure
    noise) goes to pynndescent instead, on every core: its result depends on its seed, not on its thread count.
    """
    if len(vectors) < EXACT_NEIGHBOURS_BELOW:
        return (*_exact_neighbours(vectors, np.arange(len(vectors)), k), None)
    indices, distances = cell_neighbours(vectors, k, seed)
    if recall(vectors, indices, seed) >= MIN_RECALL:
        return indices, distances, None
    from umap.umap_ import nearest_neighbors

    return nearest_neighbors(vectors, k, "euclidean", {}, False, np.random.RandomState(seed), n_jobs=-1)


def _exact_neighbours(vectors: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of all rows to each of `rows`, itself first: one (len(rows) × n) distance matrix."""
    squares = np.einsum("ij,ij->i", vectors, vectors)
    scores = squares[None, :] - 2 * (vectors[rows] @ vectors.T)  # the squared distance, less the row's own square
    scores[np.arange(len(rows)), rows] = -np.inf
    best, distances = _closest(scores, squares[rows], k)
    return best, distances


def cell_neighbours(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest neighbours by cells: k-means cuts the rows into ~√n cells; a cell's rows are compared with
    the rows of the PROBE_CELLS cells nearest to it (its own first). Seeded, so the same rows give the same answer.
    """
    rows = len(vectors)
    squares = np.einsum("ij,ij->i", vectors, vectors)
    cell, centroids = _kmeans(vectors, max(1, round(rows ** 0.5)), seed)
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=len(centroids)))])
    centre_squares = np.einsum("ij,ij->i", centroids, centroids)
    nearest_cells = np.argsort(centre_squares[:, None] - 2 * centroids @ centroids.T, axis=1, kind="stable")
    indices, distances = np.empty((rows, k), np.int64), np.empty((rows, k), np.float32)
    for c in range(len(centroids)):
        members = order[bounds[c]:bounds[c + 1]]
        if not len(members):
            continue
        probes = [c] + [p for p in nearest_cells[c] if p != c]
        taken = np.cumsum([bounds[p + 1] - bounds[p] for p in probes])
        probes = probes[:max(PROBE_CELLS, int(np.searchsorted(taken, k)) + 1)]  # enough cells for k candidates
        candidates = np.concatenate([order[bounds[p]:bounds[p + 1]] for p in probes])
        scores = squares[candidates][None, :] - 2 * (vectors[members] @ vectors[candidates].T)
        scores[np.arange(len(members)), np.arange(len(members))] = -np.inf  # itself (its cell comes first)
        best, distances[members] = _closest(scores, squares[members], k)
        indices[members] = candidates[best]
    return indices, distances


def _closest(scores: np.ndarray, own_squares: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns of the k lowest scores, lowest first (itself, scored -inf, first), and their distances."""
    best = np.argpartition(scores, k - 1, axis=1)[:, :k]
    best = np.take_along_axis(best, np.argsort(np.take_along_axis(scores, best, 1), axis=1, kind="stable"), 1)
    distances = np.sqrt(np.maximum(own_squares[:, None] + np.take_along_axis(scores, best, 1), 0)).astype(np.float32)
    distances[:, 0] = 0.0
    return best, distances


def _kmeans(vectors: np.ndarray, cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(each row's cell, the cells' centres) after KMEANS_ROUNDS rounds of Lloyd's algorithm from seeded rows."""
    rng = np.random.default_rng(seed)
    centroids = vectors[np.sort(rng.choice(len(vectors), cells, replace=False))].astype(np.float32)
    for round_ in range(KMEANS_ROUNDS + 1):
        centre_squares = np.einsum("ij,ij->i", centroids, centroids)
        cell = np.concatenate([np.argmax(2 * block @ centroids.T - centre_squares, axis=1)
                               for block in np.array_split(vectors, max(1, len(vectors) // KMEANS_BLOCK_ROWS))])
        if round_ == KMEANS_ROUNDS:
            return cell, centroids
        counts = np.bincount(cell, minlength=cells)
        sums = np.stack([np.bincount(cell, weights=column, minlength=cells) for column in vectors.T], axis=1)
        filled = counts > 0  # an empty cell keeps its centre
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)


def recall(vectors: np.ndarray, indices: np.ndarray, seed: int) -> float:
    """The share of exact nearest neighbours found, over RECALL_SAMPLE seeded rows."""
    rows, k = indices.shape
    sample = np.random.default_rng(seed).choice(rows, min(rows, RECALL_SAMPLE), replace=False)
    exact = _exact_neighbours(vectors, sample, k)[0]
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(exact, indices[sample])]))
