"""The Map's binary point buffer, the facts and thumbnails its routes serve, and the names they refuse."""

import numpy as np
import pandas as pd
import pytest

from doggos.base import store
from doggos.base.rundir import RunDir
from doggos.explore import map_payload, map_serving

from _dashboard_fixtures import damage_thumbnails, precompute_map, write_fake_run

RUN_ID = "20250101-120000-0001"


def points_frame(labels, x, y):
    return pd.DataFrame({"row": np.arange(len(labels)), "x": x, "y": y, "label": labels})


def test_a_buffer_round_trips_positions_labels_and_agreement():
    labels = ["husky", "beagle", "husky", "collie"]
    points = points_frame(labels, [0.0, 10.0, 5.0, 2.5], [-1.0, 1.0, 0.0, 4.0])
    agreement = pd.DataFrame({"row": [0, 2, 3], "agreement": [1.0, 0.25, np.nan],
                              "suggested": ["husky", "beagle", None]})
    buffer, names = map_payload.pack(points, agreement)
    assert names == ["beagle", "collie", "husky"]
    assert len(buffer) == 32 + 8 * 4  # header, x, y, label (2 bytes each), agreement and suspect (1 each)
    out = map_payload.unpack(buffer)
    assert [names[code] for code in out["label"]] == labels
    # One scale for both axes: the wider span (x: 10) fills the grid, y is centred, order is kept.
    assert out["x"][0] == 0 and out["x"][1] == map_payload.GRID
    assert np.argsort(out["y"]).tolist() == np.argsort([-1.0, 1.0, 0.0, 4.0]).tolist()
    assert out["x"][2] - out["x"][0] == pytest.approx(map_payload.GRID / 2, abs=1)
    assert out["agreement"][0] == 1.0 and out["agreement"][2] == 0.25
    assert np.isnan(out["agreement"][1]) and np.isnan(out["agreement"][3])  # not checked, or NaN in the check
    assert out["suspect"].tolist() == [False, False, True, False]  # only row 2's neighbours say another label


def test_one_point_and_two_identical_points_still_pack():
    single = map_payload.unpack(map_payload.pack(points_frame(["a"], [3.0], [3.0]))[0])
    assert single["x"][0] == single["y"][0] == map_payload.GRID // 2 + 1  # the middle of the map
    pair = map_payload.unpack(map_payload.pack(points_frame(["a", "b"], [1.0, 1.0], [2.0, 2.0]))[0])
    assert pair["x"].tolist() == [32768, 32768] and "agreement" not in pair
    assert map_payload.unpack(map_payload.pack(points_frame([], [], []))[0])["x"].size == 0


def test_a_damaged_buffer_or_misordered_rows_are_refused_with_the_reason():
    buffer, _ = map_payload.pack(points_frame(["a", "b"], [0.0, 1.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="must be 44 bytes"):
        map_payload.unpack(buffer[:-1])
    with pytest.raises(ValueError, match="DGMAP1"):
        map_payload.unpack(b"x" * 64)
    with pytest.raises(ValueError, match="row ids 0..n-1"):
        map_payload.pack(pd.DataFrame({"row": [1, 0], "x": [0.0, 1.0], "y": [0.0, 1.0], "label": ["a", "b"]}))


def test_the_hover_facts_say_the_label_file_and_verdict():
    facts = map_payload.point_facts("s3://b/husky/h1.jpg", "husky", 7, 0.2, "wolf")
    assert facts == {"row": 7, "label": "husky", "name": "h1.jpg", "path": "s3://b/husky/h1.jpg",
                     "verdict": "agreement 20 % · neighbours say wolf"}
    assert "verdict" not in map_payload.point_facts("/d/a.jpg", "a", 0, float("nan"), None)


@pytest.fixture
def served_run(tmp_path):
    run = write_fake_run(tmp_path, RUN_ID, labels={"beagle": 5, "husky": 4}, files=2)
    precompute_map(run)
    return tmp_path, RunDir(run)


def test_routes_serve_a_finished_runs_points_facts_and_thumbnails(served_run):
    root, run = served_run
    assert map_serving.finished_run(root, RUN_ID).path == run.path
    name = "umap-n15-d0.1-cosine"
    out = map_payload.unpack(map_serving.points_buffer(run, name))
    assert len(out["x"]) == 9
    index = store.load_index(run)
    facts = map_serving.point_facts(run, name, 6)
    assert (facts["label"], facts["path"]) == (index.label[6], index.path[6])
    assert map_serving.thumbnail(run, 6) == store.load_thumbnails(run, [6])[0]
    assert map_serving.label_counts(run, name) == (["beagle", "husky"], [5, 4])
    picked = map_serving.map_rows(run, name, [8, 0])
    assert picked["row"].tolist() == [8, 0] and picked["path"].tolist() == [index.path[8], index.path[0]]


def test_a_damaged_thumbnail_is_served_as_the_placeholder(tmp_path):
    run = write_fake_run(tmp_path, RUN_ID, labels={"beagle": 3}, files=1)
    damage_thumbnails(run, {1: b"not a jpeg", 2: None})
    assert map_serving.thumbnail(RunDir(run), 1) == store.placeholder()
    assert map_serving.thumbnail(RunDir(run), 2) == store.placeholder()


@pytest.mark.parametrize("run_id", ["..", "../etc", "a/b", "", "20250101-120000-0002", ".hidden"])
def test_routes_refuse_what_is_not_a_finished_run(served_run, run_id):
    root, _ = served_run
    with pytest.raises(map_serving.NotServed):
        map_serving.finished_run(root, run_id)


@pytest.mark.parametrize("name", ["../manifest", "nope", "a/b", ""])
def test_routes_refuse_unknown_maps_and_checks(served_run, name):
    _, run = served_run
    with pytest.raises(map_serving.NotServed):
        map_serving.points_buffer(run, name)
    with pytest.raises(map_serving.NotServed):
        map_serving.points_buffer(run, "umap-n15-d0.1-cosine", quality_name=name or "x")


def test_routes_refuse_rows_past_the_end(served_run):
    _, run = served_run
    with pytest.raises(map_serving.NotServed, match="9 points"):
        map_serving.point_facts(run, "umap-n15-d0.1-cosine", 9)
    with pytest.raises(map_serving.NotServed):
        map_serving.thumbnail(run, 9)
    with pytest.raises(map_serving.NotServed):
        map_serving.thumbnail(run, -1)


def test_a_missing_label_is_coded_as_the_empty_label_on_both_sides(tmp_path):
    points = pd.DataFrame({"row": [0, 1, 2], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0], "label": ["b", None, "a"]})
    buffer, names = map_payload.pack(points)
    assert names == ["", "a", "b"] and map_payload.unpack(buffer)["label"].tolist() == [2, 0, 1]


def test_thumbnails_come_from_the_shelf_once_there_and_absurd_rows_are_refused(served_run, monkeypatch):
    from doggos.base import shelf

    _, run = served_run
    with pytest.raises(map_serving.NotServed):
        map_serving.thumbnail(run, 2**70)
    stored = store.load_thumbnails(run, [3])[0]
    assert map_serving.thumbnail(run, 3) == stored  # no shelf yet: read from the Parquet
    shelf.build(run)
    monkeypatch.setattr(store, "load_thumbnails", lambda *args: pytest.fail("read the Parquet despite a shelf"))
    assert map_serving.thumbnail(run, 3) == stored
