"""doggos.projection: 2-D maps, their fallbacks and their cache; MAP through doggos.steps (the mechanism: test_steps.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_for
from doggos import projection, store
from doggos.projection import DEFAULT_PARAMS, MAP, ProjectionParams
from _dashboard_fixtures import write_fake_run

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

    def fake_umap(vectors, n_neighbors, min_dist):
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
    from doggos.rundir import RunDir

    assert MAP.run(str(run), PCA) == MAP.run(RunDir(run), PCA)


def test_status_start_and_background_result(run):
    assert MAP.status(run, PCA).state == "missing"
    started = MAP.start(run, PCA)
    assert started.state == "running" and started.started is not None
    assert MAP.start(run, PCA).state in ("running", "ready")  # a second start never launches a second process
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
    from doggos import steps

    assert steps.main(["map", str(run), '{"method": "pca", "metric": "euclidean"}']) == 0
    assert (run / "projections" / "pca-euclidean.parquet").exists()
    assert steps.main(["map", str(run), '{"n_neighbors": 1}']) == 1
    assert "n_neighbors" in capsys.readouterr().err


def test_importing_projection_does_not_import_umap():
    code = "import sys, doggos.projection, doggos.store, doggos.ui; print('umap' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.slow
def test_umap_is_deterministic_clusters_labels_and_survives_duplicates_and_tiny_runs(run):
    """The one test that imports umap in this process (seconds to tens of seconds: numba compiles)."""
    path = MAP.run(run, DEFAULT_PARAMS)
    frame, info = projection.load(path)
    assert info["method"] == "umap" and len(frame) == 60 and np.isfinite(frame[["x", "y"]]).all().all()
    centers = frame.groupby("label")[["x", "y"]].mean()
    spread = frame.groupby("label")[["x", "y"]].std().to_numpy().mean()
    gaps = [np.linalg.norm(centers.loc[a] - centers.loc[b]) for a, b in (("a", "b"), ("a", "c"), ("b", "c"))]
    assert min(gaps) > 2 * spread  # three well-separated clusters in, three clusters out
    again, _ = projection.project(store.load_embeddings(run)[0], DEFAULT_PARAMS)
    assert np.allclose(again, frame[["x", "y"]].to_numpy(), atol=1e-4)
    vectors = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    with_duplicates = np.vstack([vectors, vectors, vectors[:1]])
    coords, note = projection.project(with_duplicates, ProjectionParams(n_neighbors=15, min_dist=0.0))
    assert coords.shape == (11, 2) and np.isfinite(coords).all() and "clamped to 3" in note
    assert np.array_equal(coords[0], coords[5]) and np.array_equal(coords[0], coords[10])


@pytest.mark.slow
def test_umaps_beyond_the_machines_slots_wait_their_turn(run, monkeypatch):
    monkeypatch.setenv("DOGGOS_MAP_SLOTS", "1")  # the background process inherits it
    params = ProjectionParams(n_neighbors=5)
    from doggos.steps import machine_slot

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
