"""explore.projection: 2-D maps, their fallbacks and their cache; MAP through doggos.runs.steps (its mechanism)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _dashboard_fixtures import write_fake_run
from conftest import wait_for

from doggos.base import store
from doggos.explore import map_neighbours, projection
from doggos.explore.projection import DEFAULT_PARAMS, MAP, ProjectionParams

PCA = ProjectionParams(method="pca")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path):
    return write_fake_run(tmp_path, labels={"a": 20, "b": 20, "c": 20})


@pytest.fixture
def no_umap(monkeypatch):
    """Fail loudly if anything reaches UMAP: these tests stay fast and never import umap."""
    def refuse(*args, **kwargs):
        raise AssertionError("UMAP was called")

    monkeypatch.setattr(projection, "_umap", refuse)


def wait_until_settled(run_dir, params, timeout_s=60.0):
    return wait_for(lambda: (state := MAP.status(run_dir, params)).state != "running" and state, timeout_s=timeout_s)


def test_params_validate_and_name_their_cache_file():
    assert DEFAULT_PARAMS == ProjectionParams(15, 0.1, "cosine", "umap")
    assert DEFAULT_PARAMS.name == "umap-n15-d0.1-cosine"
    assert ProjectionParams(30, 0.25, "euclidean").name == "umap-n30-d0.25-euclidean"
    assert ProjectionParams(30, 0.5, method="pca").name == "pca-cosine"  # UMAP knobs do not change a PCA
    assert ProjectionParams(n_neighbors=15.0).n_neighbors == 15
    for bad in (dict(n_neighbors=1), dict(n_neighbors=2.5), dict(n_neighbors=True), dict(min_dist=1.5),
                dict(metric="manhattan"), dict(method="tsne")):
        with pytest.raises(ValueError):
            ProjectionParams(**bad)


def test_pca_handles_every_small_size():
    for n in (1, 2, 3):
        coords = projection.pca_2d(np.random.default_rng(n).normal(size=(n, 8)))
        assert coords.shape == (n, 2) and np.isfinite(coords).all()
    one_dimensional = projection.pca_2d(np.arange(5, dtype=float)[:, None])
    assert one_dimensional.shape == (5, 2) and np.all(one_dimensional[:, 1] == 0)


def test_tiny_inputs_fall_back_to_pca_without_umap(no_umap):
    assert projection.project(np.zeros((0, 4)))[0].shape == (0, 2)
    for n in (1, 2, 3):
        coords, note = projection.project(np.random.default_rng(0).normal(size=(n, 8)))
        assert coords.shape == (n, 2) and note.startswith("pca (only")
    # Many rows but three distinct vectors: still too few for UMAP.
    vectors = np.repeat(np.eye(3, 8), 10, axis=0)
    coords, note = projection.project(vectors)
    assert "3 distinct points" in note and coords.shape == (30, 2)


def test_duplicates_share_one_point_and_n_neighbors_is_clamped(monkeypatch):
    seen = {}

    def fake_umap(vectors, n_neighbors, min_dist, report):
        seen.update(rows=len(vectors), n_neighbors=n_neighbors, unit=np.allclose(np.linalg.norm(vectors, axis=1), 1))
        return vectors[:, :2].copy()

    monkeypatch.setattr(projection, "_umap", fake_umap)
    base = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    vectors = np.vstack([base, base[:2], base[:2] * 3.0])  # exact copies, and copies that differ only in length
    coords, note = projection.project(vectors, DEFAULT_PARAMS)
    assert seen == {"rows": 6, "n_neighbors": 4, "unit": True}  # cosine: lengths do not matter
    assert "clamped to 4" in note
    assert np.array_equal(coords[6], coords[0]) and np.array_equal(coords[9], coords[1])
    projection.project(vectors, ProjectionParams(n_neighbors=3, metric="euclidean"))
    assert seen["rows"] == 8 and seen["n_neighbors"] == 3 and not seen["unit"]


def test_principal_components_match_the_svd_with_a_fixed_orientation(monkeypatch):
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(300, 40)) * np.linspace(3, 0.1, 40)).astype(np.float32)
    scores = projection.principal_components(vectors, 5)
    u, s, vt = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    reference = u[:, :5] * s[:5]
    assert scores.shape == (300, 5) and scores.dtype == np.float32
    assert np.allclose(np.abs(scores), np.abs(reference), atol=1e-3)  # the same components, up to orientation
    loadings = np.linalg.lstsq(vectors - vectors.mean(axis=0), scores, rcond=None)[0]
    assert (loadings[np.abs(loadings).argmax(axis=0), np.arange(5)] > 0).all()  # largest loading positive: no flips
    monkeypatch.setattr(projection, "PCA_BLOCK_ROWS", 7)  # blocks that do not divide the rows: the same answer
    assert np.allclose(projection.principal_components(vectors, 5), scores, atol=1e-4)


def test_principal_components_are_zero_where_the_data_has_no_spread():
    line = np.outer(np.arange(10.0), np.ones(8)).astype(np.float32)  # 10 points on one line in 8 dimensions
    scores = projection.principal_components(line, 3)
    assert np.ptp(scores[:, 0]) > 1 and np.all(scores[:, 1:] == 0)
    assert np.all(projection.principal_components(line[:1], 3) == 0)


def test_distinct_rows_group_rows_as_numpy_does_even_when_keys_collide():
    rows = np.repeat(np.random.default_rng(0).normal(size=(5, 6)), [3, 1, 2, 1, 4], axis=0)[::-1].copy()
    for keys in (None, np.zeros(len(rows))):  # zeros: every row shares a key, so rows are compared in full
        first, inverse = projection._distinct_rows(rows, keys)
        assert len(first) == 5 and np.array_equal(rows[first][inverse], rows)
        assert all(np.flatnonzero((rows == rows[i]).all(axis=1))[0] == i for i in first)  # each one's first copy


def test_cell_neighbours_find_the_exact_ones_on_clustered_rows():
    rng = np.random.default_rng(0)
    for rows, k in ((600, 15), (40, 15)):  # 40 rows: ~6 per cell, so more cells are searched to find 15
        vectors = (rng.normal(size=(6, 10))[np.arange(rows) % 6] + rng.normal(0, 0.3, (rows, 10))).astype(np.float32)
        indices, distances = map_neighbours.cell_neighbours(vectors, k, projection.SEED)
        exact = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
        assert np.array_equal(indices[:, 0], np.arange(rows)) and np.all(distances[:, 0] == 0)  # itself first
        assert np.allclose(distances, np.take_along_axis(exact, indices, 1), atol=1e-4)
        assert np.all(np.diff(distances, axis=1) >= 0)
        assert map_neighbours.recall(vectors, indices, projection.SEED) > 0.99
        assert np.array_equal(map_neighbours.cell_neighbours(vectors, k, projection.SEED)[0], indices)  # seeded: the same every time
    noise = rng.normal(size=(2000, 50)).astype(np.float32)  # no structure: cells miss most neighbours, and say so
    assert map_neighbours.recall(noise, map_neighbours.cell_neighbours(noise, 15, projection.SEED)[0], projection.SEED) < \
        map_neighbours.MIN_RECALL


def test_large_maps_get_fewer_layout_epochs_but_never_too_few():
    assert projection.layout_epochs(720) is None and projection.layout_epochs(projection.FULL_LAYOUT_ROWS) is None
    assert projection.layout_epochs(2 * projection.FULL_LAYOUT_ROWS) == projection.LARGE_EPOCHS // 2
    assert projection.layout_epochs(10**7) == projection.MIN_EPOCHS


def test_compiled_code_is_cached_on_disk_except_what_could_never_be_found_again(tmp_path, monkeypatch, request):
    """numba only (no umap): a probe package with a plain function, a serial/parallel pair and a function-taking one."""
    import importlib

    import numba

    (tmp_path / "doggos_numba_probe.py").write_text(
        "import numba\n"
        "def twice(x):\n    return 2 * x\n"
        "def half(x):\n    return x / 2\n"
        "def call(f, x):\n    return f(x)\n"
        "plain = numba.njit(twice)\n"
        "serial = numba.njit(half)\n"
        "parallel = numba.njit(half, parallel=True)\n"
        "apply = numba.njit(call)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))  # numba looks here first
    request.addfinalizer(lambda: sys.modules.pop("doggos_numba_probe", None))  # gone after the test, with its folder
    probe = importlib.import_module("doggos_numba_probe")
    projection._cache_compiled_code(("doggos_numba_probe",))
    assert type(probe.plain._cache).__name__ == "_StableCache" and type(probe.serial._cache).__name__ == "_StableCache"
    assert type(probe.parallel._cache).__name__ == "NullCache"  # it would share the serial one's entry
    assert probe.plain(2.0) == 4.0 and probe.apply(probe.plain, 3.0) == 6.0
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi")}
    assert cached == {"doggos_numba_probe.twice"}  # `call` took a compiled function: keyed per process, so never saved


def test_cosine_survives_zero_and_nan_vectors(no_umap):
    vectors = np.array([[0, 0, 0], [np.nan, 1, 0], [1, 0, 0]], dtype=np.float32)
    coords, _ = projection.project(vectors, PCA)
    assert np.isfinite(coords).all()


def test_compute_writes_a_cached_file_aligned_with_the_run_rows(run, no_umap):
    path = MAP.run(run, PCA)
    assert path == run / "projections" / "pca-cosine.parquet"
    frame, info = projection.load(path)
    index = store.load_index(run)
    assert frame["row"].tolist() == index["row"].tolist() and frame["path"].tolist() == index["path"].tolist()
    assert frame["label"].tolist() == index["label"].tolist()
    assert info["params"]["method"] == "pca" and info["points"] == 60 and info["method"] == "pca"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    mtime = path.stat().st_mtime_ns
    assert MAP.run(run, PCA) == path and path.stat().st_mtime_ns == mtime  # cached: not recomputed
    MAP.run(run, PCA, force=True)
    again, _ = projection.load(path)
    assert np.allclose(again[["x", "y"]], frame[["x", "y"]])  # and deterministic


def test_compute_accepts_a_path_string_or_a_rundir(run, no_umap):
    from doggos.base.rundir import RunDir

    assert MAP.run(str(run), PCA) == MAP.run(RunDir(run), PCA)


def test_status_start_and_background_result(run):
    assert MAP.status(run, PCA).state == "missing"
    started = MAP.start(run, PCA)
    assert started.state == "running" and started.started is not None
    assert MAP.start(run, PCA).state in ("running", "ready")  # a second start never launches a second process
    MAP.progress_file(run, PCA).write_text("principal components")  # what a computation says it is doing
    assert MAP.status(run, PCA).stage in ("principal components", None)  # None: it already finished
    state = wait_until_settled(run, PCA)
    assert state.state == "ready", state.error
    frame, info = projection.load(state.path)
    assert len(frame) == 60 and info["params"] == {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "method": "pca"}
    assert not (run / "projections" / "pca-cosine.running").exists()


def test_a_failed_background_computation_reports_why_and_can_be_retried(run):
    hidden = run / "embeddings.hidden"
    (run / "embeddings").rename(hidden)
    MAP.start(run, PCA)
    state = wait_until_settled(run, PCA)
    assert state.state == "failed" and "no Parquet" in state.error
    hidden.rename(run / "embeddings")
    assert MAP.start(run, PCA).state == "running"  # the error file is cleared on retry
    assert wait_until_settled(run, PCA).state == "ready"


def test_a_computation_that_died_is_reported(run):
    marker = run / "projections" / "pca-cosine.running"
    marker.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    marker.write_text(json.dumps({"created": time.time(), "pid": dead.pid}))
    state = MAP.status(run, PCA)
    assert state.state == "failed" and "exited unexpectedly" in state.error
    marker.write_text(json.dumps({"created": time.time() - 3600}))  # a launcher that died before writing the pid
    assert MAP.status(run, PCA).state == "failed"


def test_command_line_entry_point(run, no_umap, capsys):
    from doggos.runs import steps

    assert MAP.home == "doggos.explore.projection:MAP"  # what the background process is told to import
    assert steps.main([MAP.home, str(run), '{"method": "pca", "metric": "euclidean"}']) == 0
    assert (run / "projections" / "pca-euclidean.parquet").exists()
    assert steps.main([MAP.home, str(run), '{"n_neighbors": 1}']) == 1
    assert "n_neighbors" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # not a step: refused by the command line, exit 2
        steps.main(["doggos.explore.projection:DEFAULT_PARAMS", str(run), "{}"])
    assert refused.value.code == 2 and "is not a post-run step" in capsys.readouterr().err


def test_importing_projection_does_not_import_umap():
    code = ("import sys, doggos.explore.projection, doggos.base.store, dashboard.ui; "
            "print('umap' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.slow
def test_umap_is_deterministic_clusters_labels_and_survives_duplicates_and_tiny_runs(tmp_path, monkeypatch):
    """The one test that imports umap in this process (seconds to tens of seconds: numba compiles, or loads its cache)."""
    projection.warm_up()  # what a run's driver does while images embed: umap imported, its code loaded
    assert "umap" in sys.modules
    import numba

    run = write_fake_run(tmp_path, labels={"a": 20, "b": 20, "c": 20}, dim=64)  # > PCA_DIMS: UMAP gets 50 components
    path = MAP.run(run, DEFAULT_PARAMS)
    frame, info = projection.load(path)
    assert info["method"] == "umap" and len(frame) == 60 and np.isfinite(frame[["x", "y"]]).all().all()
    assert_three_clusters(frame[["x", "y"]].to_numpy(), frame["label"].to_numpy())
    vectors = store.load_embeddings(run)[0]
    stages = []
    again, _ = projection.project(vectors, DEFAULT_PARAMS, report=stages.append)
    assert np.allclose(again, frame[["x", "y"]].to_numpy(), atol=1e-4)
    # What the Map page shows while a map computes: each stage, and the layout's epochs as umap's bar counts them.
    assert stages[:5] == ["finding duplicate images", "loading UMAP", "principal components (50)",
                          "neighbour graph (15 per point)", "layout"]
    assert stages[-1] == "layout: epoch 500 of 500" and all(s.startswith("layout: epoch ") for s in stages[5:])
    assert not MAP.progress_file(run, DEFAULT_PARAMS).exists()  # cleared when the map was written
    # Large maps find neighbours by cells, or, where cells miss, with pynndescent on every core: either way the
    # same map on one thread as on all of them.
    monkeypatch.setattr(map_neighbours, "EXACT_NEIGHBOURS_BELOW", 10)
    by_cells = projection.project(vectors, DEFAULT_PARAMS)[0]
    assert_three_clusters(by_cells, frame["label"].to_numpy())
    monkeypatch.setattr(map_neighbours, "MIN_RECALL", 1.01)  # cells never do: pynndescent searches
    on_all = projection.project(vectors, DEFAULT_PARAMS)[0]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        on_one = projection.project(vectors, DEFAULT_PARAMS)[0]
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(on_all, on_one)
    assert_three_clusters(on_all, frame["label"].to_numpy())
    small = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    with_duplicates = np.vstack([small, small, small[:1]])
    coords, note = projection.project(with_duplicates, ProjectionParams(n_neighbors=15, min_dist=0.0))
    assert coords.shape == (11, 2) and np.isfinite(coords).all() and "clamped to 3" in note
    assert np.array_equal(coords[0], coords[5]) and np.array_equal(coords[0], coords[10])


def assert_three_clusters(coords: np.ndarray, labels: np.ndarray) -> None:
    """Three well-separated clusters in, three clusters out."""
    centers = {label: coords[labels == label].mean(axis=0) for label in "abc"}
    spread = np.mean([coords[labels == label].std(axis=0).mean() for label in "abc"])
    gaps = [np.linalg.norm(centers[a] - centers[b]) for a, b in (("a", "b"), ("a", "c"), ("b", "c"))]
    assert min(gaps) > 2 * spread


@pytest.mark.slow
def test_umaps_beyond_the_machines_slots_wait_their_turn(run, monkeypatch):
    monkeypatch.setenv("DOGGOS_MAP_SLOTS", "1")  # the background process inherits it
    params = ProjectionParams(n_neighbors=5)
    from doggos.runs.steps import machine_slot

    with machine_slot("map-slots", 1):  # this test holds the only slot, as another session's UMAP would
        assert MAP.start(run, params).state == "running"
        state = wait_for(lambda: (s := MAP.status(run, params)).waiting and s)
        assert state.state == "running" and state.waiting
        assert not projection.projection_path(run, params).exists()
    state = wait_until_settled(run, params, timeout_s=120)
    assert state.state == "ready" and not state.waiting, state.error
    assert not (run / "projections" / f"{params.name}.waiting").exists()


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_map_slots_refuses_a_bad_setting(monkeypatch, value):
    monkeypatch.setenv("DOGGOS_MAP_SLOTS", value)
    with pytest.raises(ValueError, match="DOGGOS_MAP_SLOTS: must be a whole number of at least 1"):
        projection.map_slots()
    monkeypatch.delenv("DOGGOS_MAP_SLOTS")
    assert projection.map_slots() == max(1, (os.cpu_count() or 2) // 2)
