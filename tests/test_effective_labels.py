"""Effective labels everywhere: after label decisions, the index, counts, Browse's filters, Search, the Map's points,
Compare and the CSVs show the labels as decided, and leave excluded images out unless asked for."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from _dashboard_fixtures import map_data, open_page, precompute_map, unescape_markdown, write_fake_run

from dashboard import ui
from doggos.base import decisions, store
from doggos.base.rundir import RunDir
from doggos.explore import compare, map_payload, map_serving, search
from doggos.explore.projection import DEFAULT_PARAMS as MAP_PARAMS

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
RUN_ID = "20250101-120000-0001"
# Rows 0-4 are beagle-0000..0004.jpg, rows 5-8 husky-0000..0003.jpg (write_fake_run writes them in order).
EFFECTIVE = ["wolf", "husky", "beagle", "beagle", "beagle", "husky", "husky", "husky", "husky"]
EXCLUDED = 5


def decide(run) -> None:
    """Row 0 relabelled to a new label, row 1 to another folder's, row 5 excluded: one action each."""
    index = store.folder_index(run)

    def image(row):
        return decisions.Image(row, index.path[row], index.label[row])

    decisions.record(run, "relabel", [image(0)], "wolf", source="cli")
    decisions.record(run, "relabel", [image(1)], "husky", source="cli")
    decisions.record(run, "exclude", [image(EXCLUDED)], source="cli")


@pytest.fixture(autouse=True)
def fresh_search_cache():
    search.clear_cache()
    yield
    search.clear_cache()


@pytest.fixture
def run(runs_root):
    run = write_fake_run(runs_root, RUN_ID, labels={"beagle": 5, "husky": 4}, files=2)
    precompute_map(run)  # the map's stored class column holds the folder labels
    decide(run)
    return run


def names(frame: pd.DataFrame) -> list[str]:
    return [store.file_name(p) for p in frame["path"]]


# ---- the index, counts and Browse's filters --------------------------------------------------------------------

def test_the_index_holds_effective_and_folder_labels_and_who_is_excluded(run):
    index = store.load_index(run)
    assert index["label"].tolist() == EFFECTIVE
    assert index["folder_label"].tolist() == ["beagle"] * 5 + ["husky"] * 4
    assert np.flatnonzero(index["excluded"].to_numpy()).tolist() == [EXCLUDED]
    assert isinstance(index["label"].array, pd.arrays.ArrowStringArray)  # still Arrow: no Python string per row
    assert store.label_counts(index).to_dict("records") == [
        {"label": "husky", "images": 4}, {"label": "beagle", "images": 3}, {"label": "wolf", "images": 1}]
    assert store.label_counts(index, include_excluded=True)["images"].tolist() == [5, 3, 1]
    assert store.matching_rows(index).tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert store.matching_rows(index, include_excluded=True) is None
    assert store.matching_rows(index, ["husky"]).tolist() == [1, 6, 7, 8]
    assert store.matching_rows(index, ["husky"], "0000", include_excluded=True).tolist() == [EXCLUDED]
    assert names(store.filter_index(index, ["wolf", "beagle"])) == [
        "beagle-0002.jpg", "beagle-0003.jpg", "beagle-0004.jpg", "beagle-0000.jpg"]  # by label: wolf's last


def test_undoing_a_decision_brings_the_folder_label_back(run):
    decisions.undo(run, 2, source="cli")  # the exclusion and the relabel to husky
    index = store.load_index(run)
    assert index["label"].tolist() == ["wolf"] + ["beagle"] * 4 + ["husky"] * 4 and not index["excluded"].any()


def test_a_run_without_decisions_keeps_its_folder_labels_as_they_are(runs_root):
    folder = store.folder_index(write_fake_run(runs_root, RUN_ID, labels={"beagle": 3}))
    index = store.with_decisions(folder, decisions.LabelState())
    assert index["label"] is folder["label"] or index["label"].array is folder["label"].array
    assert index["folder_label"].tolist() == ["beagle"] * 3 and not index["excluded"].any()


# ---- Search ------------------------------------------------------------------------------------------------------

def test_search_filters_by_effective_labels_and_leaves_excluded_images_out(run):
    index = search.load_index(run)
    assert index.label_names == ("beagle", "husky", "wolf") and index.labels.tolist() == EFFECTIVE
    assert {hit.row for hit in search.by_row(index, 6, k=20)} == {0, 1, 2, 3, 4, 7, 8}
    assert {hit.row for hit in search.by_row(index, 6, k=20, include_excluded=True)} == {0, 1, 2, 3, 4, 5, 7, 8}
    husky = search.by_row(index, 2, k=20, labels=["husky"])
    assert sorted(hit.row for hit in husky) == [1, 6, 7, 8] and {hit.label for hit in husky} == {"husky"}
    assert [(hit.row, hit.label) for hit in search.by_row(index, 2, labels="wolf")] == [(0, "wolf")]
    assert search.load_index(run) is index  # cached per decisions version


def test_search_reads_a_new_decision_without_reading_the_embeddings_again(run):
    first = search.load_index(run)
    decisions.record(run, "relabel", [decisions.Image(2, first.paths[2], "beagle")], "husky", source="cli")
    second = search.load_index(run)
    assert second.vectors is first.vectors and second.labels[2] == "husky" and first.labels[2] == "beagle"
    decisions.record(run, "relabel", [decisions.Image(0, first.paths[0], "beagle")], "husky", source="cli")
    assert "wolf" not in search.load_index(run).label_names  # its only image was relabelled again
    with pytest.raises(search.SearchError, match="^labels: no such label 'wolf'"):
        search.by_row(search.load_index(run), 2, labels=["wolf"])


def test_the_search_command_filters_by_effective_labels_and_leaves_excluded_images_out(run, capsys):
    from doggos.cli import main

    assert main(["search", str(run), "--row", "2", "-k", "20", "--label", "husky", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted(hit["row"] for hit in hits) == [1, 6, 7, 8] and {hit["class"] for hit in hits} == {"husky"}


# ---- the Map's points and routes ---------------------------------------------------------------------------------

def test_the_map_points_carry_effective_labels_and_flag_excluded_images(run):
    served = RunDir(run)
    points = map_payload.unpack(map_serving.points_buffer(served, MAP_PARAMS.name))
    labels, counts = map_serving.label_counts(served, MAP_PARAMS.name)
    assert (labels, counts) == (["beagle", "husky", "wolf"], [3, 4, 1])
    shown = ~points["left_out"]
    assert np.flatnonzero(points["left_out"]).tolist() == [EXCLUDED]
    assert [labels[code] for code in points["label"][shown]] == [label for row, label in enumerate(EFFECTIVE)
                                                                  if row != EXCLUDED]
    everything = map_payload.unpack(map_serving.points_buffer(served, MAP_PARAMS.name, include_excluded=True))
    assert "left_out" not in everything and [labels[code] for code in everything["label"]] == EFFECTIVE
    assert map_serving.label_counts(served, MAP_PARAMS.name, include_excluded=True) == (labels, [3, 5, 1])
    assert map_serving.point_facts(served, MAP_PARAMS.name, 0)["verdict"] == "was beagle"
    assert (map_serving.point_facts(served, MAP_PARAMS.name, 0)["label"],
            map_serving.point_facts(served, MAP_PARAMS.name, EXCLUDED)["verdict"]) == ("wolf", "excluded")
    picked = map_serving.map_rows(served, MAP_PARAMS.name, [EXCLUDED, 0])
    assert picked[["label", "folder_label", "excluded"]].values.tolist() == [["husky", "husky", True],
                                                                              ["wolf", "beagle", False]]


def test_a_new_decision_changes_the_served_points(run):
    served = RunDir(run)
    before = map_serving.points_buffer(served, MAP_PARAMS.name)
    decisions.record(run, "exclude", [decisions.Image(2, store.folder_index(run).path[2], "beagle")], source="cli")
    after = map_payload.unpack(map_serving.points_buffer(served, MAP_PARAMS.name))
    assert after["left_out"].tolist() != map_payload.unpack(before)["left_out"].tolist()
    assert np.flatnonzero(after["left_out"]).tolist() == [2, EXCLUDED]


def test_a_map_buffer_leaves_out_points_without_naming_their_labels():
    points = pd.DataFrame({"row": [0, 1, 2], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0], "label": ["b", "gone", "a"]})
    buffer, named = map_payload.pack(points, left_out=np.array([False, True, False]))
    out = map_payload.unpack(buffer)
    assert named == ["a", "b"] and out["left_out"].tolist() == [False, True, False]
    assert [named[code] for code in out["label"][[0, 2]]] == ["b", "a"]
    assert len(buffer) == 32 + 7 * 3  # x, y, label (2 bytes each) and the left_out byte
    assert "left_out" not in map_payload.unpack(map_payload.pack(points, left_out=np.zeros(3, bool))[0])
    with pytest.raises(ValueError, match="^left_out: expected one flag per point"):
        map_payload.pack(points, left_out=np.zeros(2, bool))


# ---- Compare -----------------------------------------------------------------------------------------------------

def test_compare_uses_each_runs_effective_labels_and_leaves_excluded_images_out(run, runs_root):
    other = write_fake_run(runs_root, "20250101-130000-0002", labels={"beagle": 5, "husky": 4}, files=1)
    found = compare.agreement(run, other)
    assert (found.images_in_both, found.only_in_a, found.only_in_b) == (8, 0, 1)  # run's row 5 is excluded
    table = found.labels.set_index("label")
    assert table["images"].to_dict() == {"beagle": 3, "husky": 4, "wolf": 1}  # husky: rows 1, 6, 7, 8
    assert np.isnan(table.loc["wolf", "purity_b"])  # B has no decisions: no wolf there


# ---- the CSVs ----------------------------------------------------------------------------------------------------

def test_every_csv_says_the_effective_labels(run):
    index = store.load_index(run)
    rows = list(csv.reader(io.StringIO(ui.selection_csv(index.iloc[[0, 1, 2]]))))  # Browse's and the Map's
    assert [row[1] for row in rows] == ["label", "wolf", "husky", "beagle"]
    picked = map_serving.map_rows(RunDir(run), MAP_PARAMS.name, [0, 1])
    assert [row[1] for row in csv.reader(io.StringIO(ui.selection_csv(picked)))] == ["label", "wolf", "husky"]
    hits = search.by_row(search.load_index(run), 2, k=20)
    found = {row[0]: row[1] for row in list(csv.reader(io.StringIO(search.hits_csv(hits))))[1:]}
    assert found[index.path[0]] == "wolf" and found[index.path[1]] == "husky" and index.path[EXCLUDED] not in found


# ---- captions ----------------------------------------------------------------------------------------------------

def test_a_caption_says_the_label_as_decided():
    assert ui.label_words("husky", "beagle") == "husky · was beagle"
    assert ui.label_words("husky", "husky") == ui.label_words("husky") == "husky"
    assert ui.label_words("husky", "beagle", excluded=True) == "excluded"
    assert ui.label_words("husky", float("nan")) == "husky · was (no label)"
    assert unescape_markdown(ui.thumbnail_caption("*a*", "x.jpg", "b")) == "*a* · was b · x.jpg"
    frame = pd.DataFrame({"label": ["wolf", "husky"], "path": ["/d/beagle/b.jpg", "/d/husky/h.jpg"],
                          "folder_label": ["beagle", "husky"], "excluded": [False, True]})
    assert [unescape_markdown(c) for c in ui.thumbnail_captions(frame)] == ["wolf · was beagle · b.jpg",
                                                                           "excluded · h.jpg"]
    assert [unescape_markdown(c) for c in ui.thumbnail_captions(frame[["label", "path"]])] == ["wolf · b.jpg",
                                                                                            "husky · h.jpg"]


# ---- the pages ---------------------------------------------------------------------------------------------------

def captions(at) -> list[str]:
    return [unescape_markdown(c) for image in at.image for c in image.captions]


def bulk_widgets(at, key: str) -> list:
    return [w for kind in ("button", "selectbox") for w in at.get(kind) if (w.key or "").startswith(key)]


def test_browse_shows_labels_as_decided_and_excluded_images_on_request(run):
    at = open_page("pages/browse.py")
    assert at.multiselect(key="browse_labels").options == ["beagle (3)", "husky (4)", "wolf (1)"]
    shown = captions(at)
    assert "wolf · was beagle · beagle-0000.jpg" in shown and "husky · was beagle · beagle-0001.jpg" in shown
    assert len(shown) == 8 and not any("husky-0000.jpg" in c for c in shown)
    at.toggle(key="browse_show_excluded").set_value(True).run()
    assert "excluded · husky-0000.jpg" in captions(at) and len(captions(at)) == 9
    assert at.multiselect(key="browse_labels").options == ["beagle (3)", "husky (5)", "wolf (1)"]
    at.multiselect(key="browse_labels").select("wolf").run()
    assert captions(at) == ["wolf · was beagle · beagle-0000.jpg"]


def test_browse_shows_a_decision_from_elsewhere_on_its_next_run(run):
    at = open_page("pages/browse.py")
    decisions.record(run, "relabel", [decisions.Image(2, store.folder_index(run).path[2], "beagle")], "akita",
                     source="cli")
    at.run()
    assert "akita · was beagle · beagle-0002.jpg" in captions(at)
    assert "akita (1)" in at.multiselect(key="browse_labels").options


def test_browse_selection_opens_the_bulk_bar(run):
    at = open_page("pages/browse.py")
    assert not bulk_widgets(at, "browse-bulk")
    at.checkbox(key=f"browse-pick-{RUN_ID}-0").check().run()
    assert any("1 selected image" in m.value for m in at.markdown) and bulk_widgets(at, "browse-bulk")
    next(b for b in at.button if b.label == "Select page").click().run()
    assert any("8 selected images" in m.value for m in at.markdown)
    assert all(box.value for box in at.checkbox if box.key.startswith("browse-pick-"))
    next(b for b in at.button if b.label == "Clear selection").click().run()
    assert not bulk_widgets(at, "browse-bulk") and not any(box.value for box in at.checkbox)


def test_browse_dialog_says_the_label_as_decided(run):
    at = open_page("pages/browse.py")
    at.button(key="browse-view-0").click().run()
    assert not at.exception and "wolf · was beagle" in [t.value for t in at.text]


def test_map_colours_by_effective_labels_and_shows_excluded_on_request(run):
    at = open_page("pages/map.py", map_selection={"run": RUN_ID, "rows": [0, EXCLUDED, 6]})
    data = map_data(at)
    assert (data["labels"], data["counts"]) == (["beagle", "husky", "wolf"], [3, 4, 1])
    assert "&labels=" in data["points_url"] and "&labels=" in data["point_url"]
    assert "excluded=" not in data["points_url"]
    assert captions(at) == ["wolf · was beagle · beagle-0000.jpg", "husky · husky-0001.jpg"]  # row 5 is excluded
    assert data["selected"] == [0, 6] and at.session_state["map_selection"]["rows"] == [0, 6]  # it left the selection
    assert bulk_widgets(at, "map-bulk")
    at.toggle(key="map_show_excluded").set_value(True).run()
    data = map_data(at)
    assert data["counts"] == [3, 5, 1] and data["points_url"].endswith("&excluded=shown")
    at.session_state["map_selection"] = {"run": RUN_ID, "rows": [EXCLUDED, 6]}  # a lasso while they are shown
    at.run()
    assert captions(at) == ["excluded · husky-0000.jpg", "husky · husky-0001.jpg"]
    before = data["points_url"]
    decisions.undo(run, source="cli")
    at.run()
    assert map_data(at)["points_url"] != before  # a new decisions version: the browser fetches the points again


def test_search_page_leaves_excluded_images_out_unless_shown(run):
    at = open_page("pages/search.py", search_mode="row", search_row=6)
    shown = [c for c in captions(at) if c != "the query"]
    assert len(shown) == 7 and not any("husky-0000.jpg" in c for c in shown)
    assert any(c.endswith(" · wolf · was beagle · beagle-0000.jpg") for c in shown)
    at.toggle(key="search_show_excluded").set_value(True).run()
    assert any(c.endswith(" · excluded · husky-0000.jpg") for c in captions(at))
    assert at.multiselect(key="search_labels").options == ["beagle", "husky", "wolf"]


def test_summary_counts_images_per_label_as_decided(run):
    at = open_page("pages/summary.py")
    assert {m.label: m.value for m in at.metric}["Labels"] == "3"  # wolf, made by relabelling, is one of them
    table = next(d.value for d in at.dataframe if list(d.value.columns) == ["label", "images"])
    assert table.to_dict("records") == [{"label": "husky", "images": 4}, {"label": "beagle", "images": 3},
                                        {"label": "wolf", "images": 1}]
    assert any("2 images relabelled, 1 excluded" in unescape_markdown(c.value) for c in at.caption)


def test_browse_relabels_and_excludes_a_selection_in_bulk_then_undoes(run):
    at = open_page("pages/browse.py")
    for row in (2, 3):
        at.checkbox(key=f"browse-pick-{RUN_ID}-{row}").check().run()
    at.selectbox(key="browse-bulk-target").set_value("husky").run()
    next(b for b in at.button if b.key == "browse-bulk-relabel").click().run()
    assert not at.exception, [e.value for e in at.exception]
    log = decisions.read_log(run)
    assert [(d.row, d.new_label) for d in log if d.action == log[-1].action] == [(2, "husky"), (3, "husky")]
    assert "husky · was beagle · beagle-0002.jpg" in captions(at)
    next(b for b in at.button if b.key == "browse-bulk-exclude").click().run()
    assert {e.row for e in decisions.state(run).effects.values() if e.excluded} == {EXCLUDED, 2, 3}
    assert not any("beagle-0002.jpg" in c for c in captions(at))  # out of view, and out of the selection
    assert not bulk_widgets(at, "browse-bulk")
    at.checkbox(key=f"browse-pick-{RUN_ID}-4").check().run()
    next(b for b in at.button if b.key == "browse-bulk-undo").click().run()  # the newest action: the exclude
    assert "husky · was beagle · beagle-0002.jpg" in captions(at)  # the exclude taken back, the relabel stays
    assert decisions.read_log(run)[-1].decision == "undo"


def test_the_map_selection_is_decided_in_bulk(run):
    at = open_page("pages/map.py", map_selection={"run": RUN_ID, "rows": [2, 3, 4]})
    next(b for b in at.button if b.key == "map-bulk-keep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(e.row for e in decisions.state(run).effects.values() if e.decision == "keep") == [2, 3, 4]
    assert decisions.read_log(run)[-1].source == "dashboard"


def test_the_maps_label_agreement_follows_the_recheck(runs_root):
    """Coloured by a label check: after decisions the agreement and suspects are the re-check's, and an image marked
    right is no suspect any more (as on the Quality page)."""
    from _dashboard_fixtures import misfile, precompute_quality

    from doggos.explore import label_review
    from doggos.explore.quality import DEFAULT_PARAMS

    run = write_fake_run(runs_root, RUN_ID)
    misfile(run)  # rows 3 and 4: beagles filed as border collies
    precompute_map(run)
    precompute_quality(run)
    served = RunDir(run)
    before = map_payload.unpack(map_serving.points_buffer(served, MAP_PARAMS.name, DEFAULT_PARAMS.name))
    assert before["suspect"][[3, 4]].tolist() == [True, True]
    index = store.folder_index(run)
    decisions.record(run, "keep", [decisions.Image(3, index.path[3], index.label[3])], source="cli")
    decisions.record(run, "relabel", [decisions.Image(4, index.path[4], index.label[4])], "beagle", source="cli")
    after = map_payload.unpack(map_serving.points_buffer(served, MAP_PARAMS.name, DEFAULT_PARAMS.name))
    assert after["suspect"][[3, 4]].tolist() == [False, False]
    now = label_review.load(run, DEFAULT_PARAMS)[1].images.set_index("row")["agreement"]
    assert np.allclose(after["agreement"][4], now[4], atol=0.005)  # stored in half-percent steps
    assert map_serving.point_facts(served, MAP_PARAMS.name, 4, DEFAULT_PARAMS.name)["label"] == "beagle"


def test_a_decision_made_on_browse_is_confirmed_there(run):
    at = open_page("pages/browse.py")
    at.checkbox(key=f"browse-pick-{RUN_ID}-2").check().run()
    next(b for b in at.button if b.key == "browse-bulk-keep").click().run()
    assert [t.value for t in at.get("toast")] == ["Done: mark right beagle-0002.jpg"]
    at.run()
    assert not at.get("toast")  # once
