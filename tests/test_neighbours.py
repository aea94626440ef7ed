"""explore.neighbours: blocked k nearest neighbours (numpy threads, Ray tasks) against the plain n × n reference."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from doggos.explore import neighbours as nb


def random_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("query_rows, tile_bytes", [
    (1024, nb.TILE_BYTES),  # one block, one tile
    (7, 4 * 7 * 9),  # blocks of 7 rows against tiles of 9: blocks straddle tiles, tiles narrower than k
    (64, 4 * 64 * 50),  # several of each, a short last tile
])
def test_blocked_search_matches_the_full_matrix(query_rows, tile_bytes):
    vectors = random_rows(300, 16)
    found = nb.nearest_neighbours(vectors, 10, backend="numpy", query_rows=query_rows, tile_bytes=tile_bytes)
    reference = nb.brute_force(vectors, 10)
    np.testing.assert_array_equal(found.indices, reference.indices)
    np.testing.assert_allclose(found.similarities, reference.similarities, atol=1e-6)
    assert found.indices.dtype == np.int64 and found.similarities.dtype == np.float32
    assert not (found.indices == np.arange(300)[:, None]).any()  # never its own neighbour
    assert (np.diff(found.similarities, axis=1) <= 0).all()  # best first


def test_equal_similarities_go_to_the_lowest_row_whatever_the_blocks():
    same = np.ones((40, 4), np.float32)  # every pair at similarity 1: only the tie rule decides
    for query_rows, tile_bytes in ((1024, nb.TILE_BYTES), (3, 4 * 3 * 5), (16, 4 * 16 * 7)):
        found = nb.nearest_neighbours(same, 5, backend="numpy", query_rows=query_rows, tile_bytes=tile_bytes)
        assert found.indices[0].tolist() == [1, 2, 3, 4, 5]
        assert found.indices[3].tolist() == [0, 1, 2, 4, 5]
        assert found.indices[39].tolist() == [0, 1, 2, 3, 4]
    zeros = nb.nearest_neighbours(np.zeros((8, 3)), 2, backend="numpy")  # zero rows: similarity 0 to all, no NaN
    assert zeros.indices[0].tolist() == [1, 2] and not np.isnan(zeros.similarities).any()


def test_an_exact_copy_is_the_first_neighbour():
    vectors = random_rows(100, 8, seed=1)
    vectors[60] = vectors[7] * 3  # the same direction, another length
    found = nb.nearest_neighbours(vectors, 3, backend="numpy")
    assert found.indices[7, 0] == 60 and found.indices[60, 0] == 7
    assert found.similarities[7, 0] == pytest.approx(1.0, abs=1e-6)


def test_bad_k_and_too_few_rows_are_refused_naming_k():
    for bad in (0, 101, 2.5, True, "3.5", "ten", "", None):
        with pytest.raises(ValueError, match=r"^k: must be a whole number from 1 to 100"):
            nb.check_k(bad)
    assert nb.check_k(10.0) == 10 and nb.check_k(" 12 ") == 12  # text, as the CLI and forms give it
    with pytest.raises(ValueError, match=r"^k: must be smaller than the number of images \(5\).*at least 6 images"):
        nb.nearest_neighbours(random_rows(5, 4), 5, backend="numpy")
    with pytest.raises(ValueError, match="^backend"):
        nb.nearest_neighbours(random_rows(5, 4), 2, backend="torch")
    with pytest.raises(ValueError, match="^vectors"):
        nb.nearest_neighbours(np.zeros(5), 2, backend="numpy")


def test_score_tiles_respect_the_memory_budget_and_never_hold_n_by_n():
    for rows in (1, 50, 100_000, 1_000_000):
        block, tile = nb.plan(rows)
        assert block * tile * 4 <= nb.TILE_BYTES and tile <= rows
    vectors = random_rows(4000, 8, seed=2)  # n × n float32 would be 64 MB
    tracemalloc.start()
    try:
        nb.nearest_neighbours(vectors, 10, backend="numpy", query_rows=128, tile_bytes=4 * 128 * 512, threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB"


@pytest.mark.ray
def test_ray_tasks_give_exactly_the_numpy_answer(ray_session):
    vectors = random_rows(700, 24, seed=3)
    vectors[500] = vectors[20]  # an exact copy: a tie that float noise must not reorder differently
    options = dict(query_rows=64, tile_bytes=4 * 64 * 150)  # 11 tasks over 5 tiles
    seen = []
    on_ray = nb.nearest_neighbours(vectors, 10, backend="ray", progress=lambda done, rows: seen.append((done, rows)),
                                   **options)
    here = nb.nearest_neighbours(vectors, 10, backend="numpy", **options)
    np.testing.assert_array_equal(on_ray.indices, here.indices)
    np.testing.assert_array_equal(on_ray.similarities, here.similarities)
    reference = nb.brute_force(vectors, 10)
    same = lambda indices: np.where(indices == 500, 20, indices)  # the copies' order may differ by a rounding
    np.testing.assert_array_equal(same(on_ray.indices), same(reference.indices))
    np.testing.assert_allclose(on_ray.similarities, reference.similarities, atol=1e-6)
    assert seen[-1] == (700, 700) and len(seen) == 11
    assert ray_session.is_initialized()  # the caller's Ray connection is left as it was


@pytest.mark.ray
def test_rows_put_in_the_object_store_give_the_same_neighbours_and_read_back(ray_session):
    """The quality step's path: chunks of any size go to the store; neighbours, rows and chunks read back from there."""
    vectors = random_rows(300, 16, seed=5)
    stored = nb.put_tiles(vectors[start:start + size] for start, size in [(0, 100), (100, 37), (137, 163)])
    assert len(stored) == 300 and stored.shape == (300, 16)
    found = nb.neighbours_of_tiles(stored, 7)
    reference = nb.brute_force(vectors, 7)
    np.testing.assert_array_equal(found.indices, reference.indices)
    np.testing.assert_allclose(found.similarities, reference.similarities, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(list(stored.chunks())), nb.normalise(vectors))
    np.testing.assert_array_equal(stored.take([299, 0, 136, 137]), nb.normalise(vectors)[[299, 0, 136, 137]])
    with pytest.raises(ValueError, match="chunks: every chunk needs 16 columns"):
        nb.put_tiles([vectors[:5], vectors[5:10, :8]])
