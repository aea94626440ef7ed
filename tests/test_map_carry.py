"""explore.map_carry: an updated run's map keeps its old run's places; projection.compute uses it, until recompute."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import wait_for

from doggos.base import store
from doggos.explore import map_carry, projection
from doggos.explore.projection import DEFAULT_PARAMS, MAP, ProjectionParams

PCA = ProjectionParams(method="pca")
DIM = 8


def content_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_run(folder: Path, paths: list[str], vectors: np.ndarray, hashes: list[str | None] | None = None,
              reuse: Path | None = None, files: int = 2) -> Path:
    """A run's embeddings (path, class: the parent folder, embedding, content_hash: the file name's, unless given) in
    `files` Parquet files, and a config.json naming the run it reuses."""
    hashes = [content_hash(Path(p).name) for p in paths] if hashes is None else hashes
    vectors = np.asarray(vectors, np.float32)
    table = pa.table({
        "path": pa.array(paths, pa.string()),
        "class": pa.array([Path(p).parent.name for p in paths], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        "content_hash": pa.array(hashes, pa.string()),
    })
    (folder / "embeddings").mkdir(parents=True)
    bounds = np.linspace(0, len(paths), files + 1).astype(int)
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(start, stop - start), folder / "embeddings" / f"part-{part:06d}.parquet")
    (folder / "config.json").write_text(json.dumps({"source": "/data", "reuse": str(reuse) if reuse else None}))
    return folder


def write_map(run: Path, params=PCA, seed: int = 0) -> np.ndarray:
    """Random places for the run's rows, stored as its map for `params`."""
    _, meta = store.load_embeddings(run)
    coords = np.random.default_rng(seed).normal(0, 10, (len(meta), 2)).astype(np.float32)
    projection.write(run, params, coords, meta["path"].tolist(), meta["label"].tolist(), "umap")
    return coords


@pytest.fixture
def old(tmp_path):
    """40 images in two far-apart clusters (a/ and b/), with a map."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (2, DIM))
    paths = [f"/data/{'ab'[i % 2]}/{i:03d}.jpg" for i in range(40)]
    vectors = centres[np.arange(40) % 2] + rng.normal(0, 0.05, (40, DIM))
    run = write_run(tmp_path / "old", paths, vectors)
    write_map(run)
    return run


def old_places(old: Path, params=PCA) -> dict[str, np.ndarray]:
    frame, _ = projection.load(projection.projection_path(old, params))
    return {content_hash(Path(p).name): np.array([x, y], np.float32) for p, x, y in zip(frame.path, frame.x, frame.y)}


def test_carried_rows_keep_their_exact_old_places(old, tmp_path):
    vectors, meta = store.load_embeddings(old)
    order = np.random.default_rng(2).permutation(len(meta))[:30]  # another order, 10 images gone
    new = write_run(tmp_path / "new", meta.path[order].tolist(), vectors[order], reuse=old, files=3)
    placement = map_carry.place(new, old, PCA)
    places = old_places(old)
    assert placement.coords.dtype == np.float32 and placement.coords.shape == (30, 2)
    assert np.array_equal(placement.coords, [places[content_hash(Path(p).name)] for p in meta.path[order]])
    assert (placement.kept, placement.placed) == (30, 0)
    coords, note = placement  # unpacks as project() returns
    assert coords is placement.coords
    assert note == "pca (30 kept their places from run old; 0 placed by their neighbours)"


def test_a_moved_file_keeps_its_place_and_copies_keep_their_own(old, tmp_path):
    vectors, meta = store.load_embeddings(old)
    paths = meta.path.tolist()
    paths[3] = "/data/elsewhere/renamed.jpg"  # moved and renamed (a new label too): the same bytes
    hashes = [content_hash(Path(p).name) for p in meta.path]
    new = write_run(tmp_path / "new", paths, vectors, hashes=hashes)
    placement = map_carry.place(new, old, PCA)
    assert np.array_equal(placement.coords, projection.load(projection.projection_path(old, PCA))[0][["x", "y"]])

    # The same bytes at two paths, at two places on the old map: each path keeps its own place.
    twins = tmp_path / "twins"
    write_run(twins, ["/data/a/x.jpg", "/data/b/x.jpg", "/data/a/y.jpg"], vectors[:3],
              hashes=["same", "same", "other"])
    coords = write_map(twins)
    swapped = write_run(tmp_path / "swapped", ["/data/b/x.jpg", "/data/a/x.jpg", "/data/c/x.jpg"], vectors[:3],
                        hashes=["same", "same", "same"])
    assert np.array_equal(map_carry.place(swapped, twins, PCA).coords, coords[[1, 0, 0]])  # the unknown path: any twin


def test_a_new_image_lands_among_its_nearest_placed_images(old, tmp_path, monkeypatch):
    monkeypatch.setattr(map_carry, "TILE_ROWS", 7)  # many tiles and query blocks: the running top k is merged often
    monkeypatch.setattr(map_carry, "QUERY_ROWS", 3)
    vectors, meta = store.load_embeddings(old)
    rng = np.random.default_rng(3)
    # Near copies of a/ images (even rows), and one image between a/ and b/.
    fresh = np.concatenate([vectors[[0, 2, 4, 6, 8]] + rng.normal(0, 0.01, (5, DIM)),
                            (vectors[:1] + vectors[1:2]) / 2])
    paths = meta.path.tolist() + [f"/data/new/{i}.jpg" for i in range(len(fresh))]
    new = write_run(tmp_path / "new", paths, np.concatenate([vectors, fresh]), files=4)
    placement = map_carry.place(new, old, PCA)
    assert (placement.kept, placement.placed) == (40, 6)

    places = np.stack(list(old_places(old).values()))  # old rows in order
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for number, vector in enumerate(fresh):
        similarity = unit @ (vector / np.linalg.norm(vector))
        nearest = np.argsort(-similarity)[:map_carry.K]
        expected = (similarity[nearest, None] * places[nearest]).sum(axis=0) / similarity[nearest].sum()
        assert np.allclose(placement.coords[40 + number], expected, atol=1e-4)
        if number < 5:  # among a/'s images, nowhere near b/'s
            assert set(nearest % 2) == {0}
            a_box = places[0::2]
            assert (a_box.min(axis=0) <= placement.coords[40 + number]).all()
            assert (placement.coords[40 + number] <= a_box.max(axis=0)).all()


def test_nothing_to_place_from(old, tmp_path):
    vectors, meta = store.load_embeddings(old)
    same = write_run(tmp_path / "same", meta.path.tolist(), vectors)
    assert map_carry.place(same, old, DEFAULT_PARAMS) is None  # the old run has no map for these parameters
    strangers = write_run(tmp_path / "strangers", meta.path.tolist(), vectors, hashes=["?"] * len(meta))
    assert map_carry.place(strangers, old, PCA) is None  # no image in common
    unhashed = tmp_path / "unhashed"
    write_run(unhashed, meta.path.tolist(), vectors)
    for part in (unhashed / "embeddings").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["content_hash"]), part)
    assert map_carry.place(unhashed, old, PCA) is None
    assert map_carry.place(same, unhashed, PCA) is None


def test_an_old_map_in_another_row_order_is_matched_by_path(old, tmp_path):
    frame, _ = projection.load(projection.projection_path(old, PCA))
    shuffled = frame.iloc[::-1]  # the map's rows no longer the run's
    projection.write(old, PCA, shuffled[["x", "y"]].to_numpy(), shuffled.path.tolist(), shuffled.label.tolist(), "pca")
    vectors, meta = store.load_embeddings(old)
    new = write_run(tmp_path / "new", meta.path.tolist(), vectors)
    assert np.array_equal(map_carry.place(new, old, PCA).coords, frame[["x", "y"]].to_numpy())


@pytest.mark.parametrize("params", [PCA, DEFAULT_PARAMS])
def test_compute_places_an_updated_run_until_recompute_asks_for_a_fresh_map(old, tmp_path, monkeypatch, params):
    if params is not PCA:
        write_map(old, params)

        def refuse(*args, **kwargs):
            raise AssertionError("UMAP was called")

        monkeypatch.setattr(projection, "_umap", refuse)  # placing a UMAP map needs no UMAP
    vectors, meta = store.load_embeddings(old)
    new = write_run(tmp_path / "new", meta.path.tolist() + ["/data/a/new.jpg"],
                    np.concatenate([vectors, vectors[:1] * 1.01]), reuse=old)
    path = MAP.run(new, params)
    frame, info = projection.load(path)
    assert info["placed_from"] == "old" and (info["kept"], info["placed"]) == (40, 1)
    assert info["method"] == f"{params.method} (40 kept their places from run old; 1 placed by their neighbours)"
    old_frame, _ = projection.load(projection.projection_path(old, params))
    assert np.array_equal(frame[["x", "y"]].to_numpy()[:40], old_frame[["x", "y"]].to_numpy())
    assert frame.path.iloc[-1] == "/data/a/new.jpg" and frame.label.iloc[-1] == "a"
    if params is not PCA:
        return

    state = projection.recompute(new, params)
    assert state.state in ("running", "ready") and projection.fresh_marker(new, params).exists()
    settled = wait_for(lambda: (s := MAP.status(new, params)).state != "running" and s)
    assert settled.state == "ready", settled.error
    frame, info = projection.load(settled.path)
    assert "placed_from" not in info and info["method"] == "pca"
    assert np.allclose(frame[["x", "y"]].to_numpy(), projection.project(store.load_embeddings(new)[0], params)[0])


def test_compute_draws_afresh_when_the_old_run_is_gone(old, tmp_path):
    vectors, meta = store.load_embeddings(old)
    new = write_run(tmp_path / "new", meta.path.tolist(), vectors, reuse=tmp_path / "deleted")
    _, info = projection.load(MAP.run(new, PCA))
    assert info["method"] == "pca" and "placed_from" not in info
