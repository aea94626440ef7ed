"""The Quality page and the Map's "label agreement" colour (AppTest), and dashboard.quality_view, on fake runs whose quality
results are computed here with the numpy backend (no Ray)."""

from __future__ import annotations

import base64
import dataclasses
import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _dashboard_fixtures import (MISFILED, NASTY_LABEL, NEAR_COPY, button, map_data, markdown_bodies, misfile, open_page,
                                 precompute_map, unescape_markdown, write_fake_run)

from dashboard import quality_view
from doggos.base import store, units
from doggos.base.rundir import RunDir
from doggos.explore.neighbours import Neighbours
from doggos.explore.quality import DEFAULT_PARAMS, QualityParams, ZeroShot, assess, label_names
from doggos.explore.quality_step import QUALITY, write_results
from doggos.explore import map_payload, map_serving
from doggos.explore.projection import DEFAULT_PARAMS as PROJECTION_DEFAULTS

RUN_ID = "20250101-120000-0001"
SHARED_HASH = (0, 13)  # identical bytes: a beagle and a border collie, a cross-label exact pair


pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why


def precompute_quality(run: Path, params: QualityParams = DEFAULT_PARAMS, zero_shot: bool = True):
    """Quality results on disk as the QUALITY step writes them. Zero-shot (when asked) names each image's true label,
    so a misfiled image whose zero-shot is not overridden is a strongest suspect; row 4's zero-shot sides with its
    folder (a suspect, not a strongest one)."""
    vectors, meta = store.load_embeddings(run)
    labels, paths = meta["label"].tolist(), meta["path"].tolist()
    hashes = [f"h{row}" for row in range(len(labels))]
    hashes[SHARED_HASH[1]] = hashes[SHARED_HASH[0]]
    options = {"zero_shot_note": "the model's text tower could not be loaded: no text_config"}
    if zero_shot:
        names = label_names(labels)
        truth = [("beagle" if row in MISFILED else label) for row, label in enumerate(labels)]
        truth[4] = labels[4]
        options = {"zero_shot_result": ZeroShot(np.array([names.index(t) for t in truth]), np.full(len(labels), 0.8, np.float32))}
    results = assess(vectors, labels, paths, params, hashes=hashes, backend="numpy", **options)
    write_results(RunDir(run).quality, params, results)
    return results


@pytest.fixture
def quality_run(runs_root):
    run = write_fake_run(runs_root, RUN_ID)
    misfile(run)
    precompute_map(run)
    return run, precompute_quality(run)


@pytest.fixture
def recorded_quality_starts(monkeypatch):
    """QUALITY.start without the background process (it would start Ray): it records the call and leaves a live
    computation's marker (this test process's pid), so the page sees "running" as it would."""
    from doggos.runs.steps import Step

    calls = []
    real_start = Step.start

    def fake_start(self, run, params):
        if self is not QUALITY:
            return real_start(self, run, params)
        calls.append(params)
        marker = QUALITY.result(run, params).with_suffix(".running")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        QUALITY.result(run, params).with_suffix(".error.txt").unlink(missing_ok=True)
        marker.write_text(json.dumps({"created": time.time(), "pid": os.getpid()}))
        return QUALITY.status(run, params)

    monkeypatch.setattr(Step, "start", fake_start)  # Step is frozen: its instances take no attributes of their own
    return calls


def decoded(value) -> np.ndarray:
    """A numpy array as Plotly's JSON stores it ({'dtype', 'bdata'})."""
    return np.frombuffer(base64.b64decode(value["bdata"]), value["dtype"])


def shown_captions(at) -> list[str]:
    return [unescape_markdown(c) for image in at.image for c in image.captions]


# ---- dashboard.quality_view -----------------------------------------------------------------------------------------

def test_quality_view_label_table_puts_the_least_pure_label_first(quality_run):
    _, results = quality_run
    table = quality_view.label_table(results)
    assert list(table.columns) == ["label", "images", "purity", "zero-shot accuracy", "most confused with",
                                   "likely mislabeled"]
    assert list(table["purity"]) == sorted(table["purity"])
    collie = table.set_index("label").loc["border collie"]
    assert collie["images"] == 11 and collie["likely mislabeled"] == 2 and collie["most confused with"] == "beagle"
    # row 3 is named beagle, row 4 border collie; shares in percent, shown with units.SHARE_COLUMN as share() writes
    assert collie["zero-shot accuracy"] == pytest.approx(100 * 10 / 11)
    assert units.SHARE_COLUMN % collie["zero-shot accuracy"] == units.share(10 / 11) == "91 %"
    assert table.set_index("label").loc["beagle", "most confused with"] == ""


def test_quality_view_confusion_cells_and_the_clicked_cell(quality_run):
    _, results = quality_run
    cells = quality_view.confusion_cells(results).set_index(["filed", "suggested"])
    assert cells["images"].sum() == len(results.images)
    assert cells.loc[("border collie", "beagle"), "images"] == 2
    assert cells.loc[("border collie", "beagle"), "share"] == pytest.approx(2 / 11)
    names = list(results.labels["label"])
    i, j = names.index("border collie"), names.index("beagle")
    points = [{"curve_number": 1, "point_index": 4, "customdata": [i, j]}]
    assert quality_view.cell_from_selection(points, names) == ("border collie", "beagle")
    assert quality_view.cell_from_selection([{"customdata": {"0": i, "1": j}}], names) == ("border collie", "beagle")
    assert quality_view.cell_from_selection([{"customdata": [i, 99]}], names) is None
    vega = [{"filed_index": i, "suggested_index": j}]  # what the chart's CELL_PARAM selection holds
    assert quality_view.cell_from_selection(vega, names) == ("border collie", "beagle")
    assert quality_view.cell_from_selection([{"filed_index": i, "suggested_index": None}], names) is None
    assert quality_view.cell_from_selection([], names) is None
    behind = quality_view.cell_images(results, "border collie", "beagle")
    assert sorted(behind["row"]) == [3, 4] and set(behind["label"]) == {"border collie"}


def test_quality_view_suspects_put_the_strongest_first_with_their_captions(quality_run):
    _, results = quality_run
    ranked = quality_view.suspects(results)
    assert list(ranked["row"]) == [3, 4] and list(ranked["strongest"]) == [True, False]
    assert [quality_view.suspect_caption(s) for s in ranked.to_dict("records")] == [
        "filed as border collie · neighbours say beagle · zero-shot says beagle",
        "filed as border collie · neighbours say beagle · zero-shot says border collie",
    ]
    assert quality_view.suspect_caption({"label": "a", "suggested": "b", "zero_shot": None}) == \
        "filed as a · neighbours say b"


def test_quality_view_csv_worklists(quality_run):
    _, results = quality_run
    suspects = list(csv.DictReader(io.StringIO(quality_view.suspects_csv(results))))
    assert [s["path"] for s in suspects] == [f"/data/dogs/beagle/beagle-{i:04d}.jpg" for i in (3, 4)]
    assert suspects[0] == {"path": "/data/dogs/beagle/beagle-0003.jpg", "filed_label": "border collie",
                           "suggested_label": "beagle", "agreement": f"{results.images['agreement'][3]:.4f}",
                           "zero_shot_label": "beagle", "strongest": "true"}
    pairs = list(csv.DictReader(io.StringIO(quality_view.duplicates_csv(results))))
    assert list(pairs[0]) == list(quality_view.DUPLICATE_CSV_COLUMNS)
    first = pairs[0]  # the cross-label exact pair comes first
    assert (first["label_a"], first["label_b"], first["kind"], first["cross_label"]) == \
        ("beagle", "border collie", "exact", "true")
    near = [p for p in pairs if p["kind"] == "near"]
    assert [(p["path_a"], p["path_b"]) for p in near] == [tuple(f"/data/dogs/beagle/beagle-{i:04d}.jpg" for i in NEAR_COPY)]
    assert float(near[0]["similarity"]) > 0.999


def test_quality_view_neighbours_and_params(quality_run):
    _, results = quality_run
    near = quality_view.neighbours_of(results, 3)
    assert len(near) == DEFAULT_PARAMS.k and list(near["similarity"]) == sorted(near["similarity"], reverse=True)
    assert 3 not in set(near["row"]) and not near["same_label"].all()
    assert quality_view.params_from_form(5, "  a picture of {label}  ") == QualityParams(k=5, template="a picture of {label}")
    with pytest.raises(ValueError, match="^k: must be a whole number from 1 to 100"):
        quality_view.params_from_form(0, "a {label}")
    with pytest.raises(ValueError, match="^template: must contain"):
        quality_view.params_from_form(5, "a photo")
    with pytest.raises(ValueError, match="^k: must be smaller than the number of images \\(5\\)"):
        quality_view.params_from_form(5, "a {label}", rows=5)


def test_quality_view_confusion_counts_filed_against_suggested(quality_run):
    _, results = quality_run
    names = list(results.labels["label"])
    expected = pd.crosstab(results.images["class"], results.images["suggested"]).reindex(
        index=names, columns=names, fill_value=0).rename_axis(index="filed", columns="suggested")
    pd.testing.assert_frame_equal(results.confusion(), expected, check_names=True)


def test_quality_view_confusion_chart_is_a_clickable_vega_heatmap(quality_run):
    _, results = quality_run
    chart = quality_view.confusion_chart(results)
    cells = quality_view.confusion_cells(results)
    assert [(v["filed"], v["suggested"], v["images"]) for v in chart["data"]["values"]] == \
        list(zip(cells["filed"], cells["suggested"], cells["images"]))
    rect, text = chart["layer"]  # three labels: the counts are written in the cells
    assert rect["params"] == [{"name": quality_view.CELL_PARAM,
                               "select": {"type": "point", "fields": ["filed_index", "suggested_index"]}}]
    assert text["mark"]["type"] == "text"
    json.dumps(chart, allow_nan=False)  # plain JSON, as Streamlit sends it


def test_read_results_reads_the_neighbours_when_first_asked_for(quality_run):
    from doggos.explore import quality_step

    run, results = quality_run
    back = quality_step.read_results(RunDir(run).quality, DEFAULT_PARAMS)
    assert back.neighbours._loaded is None  # the page draws without them
    # Written again meanwhile (a new file renamed over it), with other neighbours: these results still read theirs.
    other = Neighbours(np.roll(results.neighbours.indices, 1, axis=0), results.neighbours.similarities[::-1].copy())
    write_results(RunDir(run).quality, DEFAULT_PARAMS, dataclasses.replace(results, neighbours=other))
    np.testing.assert_array_equal(back.neighbours.indices, results.neighbours.indices)
    np.testing.assert_array_equal(back.neighbours.similarities, results.neighbours.similarities)
    assert back.neighbours.k == DEFAULT_PARAMS.k and back.neighbours.load() is back.neighbours.load()
    pd.testing.assert_frame_equal(quality_view.neighbours_of(back, 3), quality_view.neighbours_of(results, 3))
    again = quality_step.read_results(RunDir(run).quality, DEFAULT_PARAMS)
    np.testing.assert_array_equal(again.neighbours.indices, other.indices)  # a new read reads the new file


def confusion_chart(at) -> tuple[dict, pd.DataFrame]:
    """The Quality page's confusion chart: its Vega-Lite spec and the cells Streamlit sent beside it (as Arrow)."""
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    proto = charts[0].proto
    return json.loads(proto.spec), pa.ipc.open_stream(proto.data.data).read_all().to_pandas()


# ---- the Quality page --------------------------------------------------------------------------------------------

def test_quality_page_shows_labels_confusion_suspects_and_duplicates(quality_run):
    run, results = quality_run
    at = open_page("pages/quality.py")
    assert not at.error, [e.value for e in at.error]
    assert any("random weights" in w.value for w in at.warning)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Likely mislabeled"] == "2" and metrics["Strongest suspects"] == "1"
    assert metrics["Duplicate pairs"] == str(len(results.duplicates))
    table = at.dataframe[0].value
    assert list(table["label"]) == list(quality_view.label_table(results)["label"])
    spec, cells = confusion_chart(at)
    rect = spec["layer"][0]
    assert rect["mark"]["type"] == "rect" and rect["params"][0]["name"] == quality_view.CELL_PARAM  # a click selects
    names = list(results.labels["label"])
    assert spec["encoding"]["y"]["scale"]["domain"] == names and spec["encoding"]["x"]["scale"]["domain"] == names
    expected = quality_view.confusion_cells(results)
    assert cells[["filed_index", "suggested_index"]].to_numpy().tolist() == \
        expected[["filed_index", "suggested_index"]].to_numpy().tolist()  # a click's answer
    assert list(cells["filed"]) == list(expected["filed"]) and list(cells["images"]) == list(expected["images"])
    captions = shown_captions(at)
    assert [c for c in captions if c.startswith("filed as")][:2] == ["filed as border collie · neighbours say beagle · zero-shot says beagle",
                            "filed as border collie · neighbours say beagle · zero-shot says border collie"]
    pair_words = [unescape_markdown(m.value) for m in at.markdown if "duplicate" in m.value or "copy" in m.value]
    # a Material icon (a font Streamlit ships), not an emoji: a machine without an emoji font draws a box
    assert pair_words[0].startswith(":material/warning: exact copy (identical files) · filed under different labels: "
                                    "beagle and border collie")
    assert any(w.startswith("near duplicate, similarity 1.0000 · both filed as beagle") for w in pair_words)
    assert "beagle · beagle-0000.jpg" in captions and "border collie · border collie-0001.jpg" in captions


def test_quality_page_offers_both_csv_worklists(quality_run, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    run, results = quality_run
    deferred = {}
    real = MediaFileManager.add_deferred

    def keep(self, data, mimetype, coordinates, file_name=None, **options):  # a spy: the real manager still keeps it
        deferred[file_name] = data
        return real(self, data, mimetype, coordinates, file_name=file_name, **options)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    at = open_page("pages/quality.py")
    assert [b.label for b in at.download_button] == ["Suspects CSV", "Duplicates CSV"]
    # Made when pressed, not while the page draws: what pressing each button hands over.
    assert deferred[f"suspects-{RUN_ID}.csv"]() == quality_view.suspects_csv(results)
    assert deferred[f"duplicates-{RUN_ID}.csv"]() == quality_view.duplicates_csv(results)


def test_quality_page_shows_the_images_behind_a_clicked_cell(quality_run):
    at = open_page("pages/quality.py", quality_cell={"run": RUN_ID, "params": DEFAULT_PARAMS.name,
                                                     "filed": "border collie", "suggested": "beagle"})
    assert any("2 images" in m.value and "border collie" in m.value for m in at.markdown)
    cell_captions = [c for c in shown_captions(at) if "agreement" in c]
    assert sorted(cell_captions) == sorted(f"beagle-{i:04d}.jpg · agreement {units.share(a)}" for i, a in
                                           zip((3, 4), quality_run[1].images["agreement"][[3, 4]]))
    button(at, "Clear cell").click().run()
    assert "quality_cell" not in at.session_state
    assert not [c for c in shown_captions(at) if "agreement" in c]


def test_quality_page_view_shows_a_suspects_neighbours(quality_run):
    at = open_page("pages/quality.py")
    at.button(key="quality-suspects-view-3").click().run()
    assert not at.exception
    assert "/data/dogs/beagle/beagle-0003.jpg" in [c.value for c in at.code]
    near = quality_view.neighbours_of(quality_run[1], 3)
    captions = shown_captions(at)
    assert all(f"{label} · {similarity:.3f}" in captions for label, similarity in zip(near["label"], near["similarity"]))


def test_quality_page_says_why_zero_shot_is_missing(runs_root):
    run = write_fake_run(runs_root, RUN_ID)
    precompute_quality(run, zero_shot=False)
    at = open_page("pages/quality.py")
    assert any("No zero-shot check" in i.value and "no text\\_config" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Zero-shot accuracy"] == units.DASH  # the one "not known" mark


def test_quality_page_computes_missing_results_in_the_background(runs_root, recorded_quality_starts):
    write_fake_run(runs_root, RUN_ID)
    at = open_page("pages/quality.py")
    assert recorded_quality_starts == [DEFAULT_PARAMS]
    assert any("in the background" in i.value for i in at.info)
    assert not at.get("vega_lite_chart") and not at.dataframe
    at.number_input(key="quality_k").set_value(5)
    button(at, "Apply").click().run()
    assert recorded_quality_starts == [DEFAULT_PARAMS, QualityParams(k=5)]
    assert at.session_state["quality_params"] == QualityParams(k=5)


def test_quality_page_refuses_bad_parameters(quality_run, recorded_quality_starts):
    at = open_page("pages/quality.py")
    at.text_input(key="quality_template").input("a photo of a dog")
    button(at, "Apply").click().run()
    assert any("template" in e.value and "exactly once" in unescape_markdown(e.value) for e in at.error)
    at.text_input(key="quality_template").input("a photo of a {label}.")
    at.number_input(key="quality_k").set_value(27)  # the run has 27 images: each needs 27 others
    button(at, "Apply").click().run()
    assert any("smaller than the number of images (27)" in unescape_markdown(e.value) for e in at.error)
    assert recorded_quality_starts == []


def test_quality_page_shows_a_failure_and_tries_again(runs_root, recorded_quality_starts):
    run = write_fake_run(runs_root, RUN_ID)
    QUALITY.fail(run, DEFAULT_PARAMS, "MemoryError: <b>too big</b>")
    at = open_page("pages/quality.py")
    assert any("too big" in unescape_markdown(e.value) and "<b>" not in e.value for e in at.error)
    assert recorded_quality_starts == []
    button(at, "Try again").click().run()
    assert recorded_quality_starts == [DEFAULT_PARAMS]
    assert any("in the background" in i.value for i in at.info)


def test_quality_page_shows_nasty_labels_literally(runs_root):
    run = write_fake_run(runs_root, RUN_ID)
    precompute_quality(run, zero_shot=False)
    at = open_page("pages/quality.py", quality_cell={"run": RUN_ID, "params": DEFAULT_PARAMS.name,
                                                     "filed": NASTY_LABEL, "suggested": NASTY_LABEL})
    for body in markdown_bodies(at):
        assert "<b>" not in body and "*x*" not in body, body
    assert any(NASTY_LABEL in unescape_markdown(m.value) for m in at.markdown)  # the clicked cell's heading
    folder = NASTY_LABEL.replace("/", "|")  # the fake run's folder for that label
    assert any(c.startswith(f"{folder}-0000.jpg · agreement ") for c in shown_captions(at))
    spec, cells = confusion_chart(at)  # Vega draws labels as text: they go as they are, and show as written
    assert NASTY_LABEL in spec["encoding"]["x"]["scale"]["domain"] and NASTY_LABEL in set(cells["filed"])


# ---- the Map's label agreement colour ----------------------------------------------------------------------------

def test_map_colours_by_label_agreement_when_the_results_exist(quality_run):
    run, results = quality_run
    at = open_page("pages/map.py")
    assert map_data(at)["colour_by"] == "label" and "quality=" not in map_data(at)["points_url"]
    at.button_group(key="map_colour").set_value("agreement").run()
    data = map_data(at)
    assert data["colour_by"] == "agreement" and f"quality={DEFAULT_PARAMS.name}" in data["points_url"]
    assert data["agreement_scale"][0] == [0.0, "#c0181b"]  # low agreement in red
    # What that URL serves: each point's agreement (to the half percent) and whether its neighbours say another label.
    points = map_payload.unpack(map_serving.points_buffer(RunDir(run), PROJECTION_DEFAULTS.name, DEFAULT_PARAMS.name))
    images = results.images.sort_values("row")
    assert np.allclose(points["agreement"], images["agreement"].to_numpy(), atol=0.005, equal_nan=True)
    suspect = images["suggested"].notna() & (images["suggested"] != images["class"])
    assert points["suspect"].tolist() == suspect.tolist()


def test_map_offers_to_compute_label_agreement(fake_map_run, recorded_quality_starts):
    at = open_page("pages/map.py")
    assert "not computed" in " ".join(at.button_group(key="map_colour").options)
    at.button_group(key="map_colour").set_value("agreement").run()
    assert map_data(at)["colour_by"] == "label"  # still by label meanwhile
    button(at, "Compute label agreement").click().run()
    assert recorded_quality_starts == [DEFAULT_PARAMS]
    assert any("computing in the background" in i.value for i in at.info)
    assert "computing" in " ".join(at.button_group(key="map_colour").options)


@pytest.fixture
def fake_map_run(runs_root):
    run = write_fake_run(runs_root, RUN_ID)
    precompute_map(run)
    return run


# ---- the review queue (label decisions) -------------------------------------------------------------------------------

def queue_where(at) -> str:
    return next(unescape_markdown(m.value).replace("**", "") for m in at.markdown if "in the queue" in m.value)


def captions_of(at) -> list[str]:
    return [unescape_markdown(c.value) for c in at.caption]


def test_the_queue_shows_the_strongest_suspect_first_with_its_evidence(quality_run):
    at = open_page("pages/quality.py")
    assert not at.error, [e.value for e in at.error]
    assert queue_where(at).startswith("Image 1 of 2 in the queue")
    assert any(c.startswith("0 of 2 reviewed") for c in captions_of(at))
    facts = [unescape_markdown(m.value) for m in at.markdown if m.value.startswith("filed as")]
    assert facts[0] == "filed as border collie · neighbours say beagle (agreement 0 %) · zero-shot says beagle (80 %)" \
        or facts[0].startswith("filed as border collie · neighbours say beagle")
    assert "/data/dogs/beagle/beagle-0003.jpg" in [c.value for c in at.code]
    labels = [b.label for b in at.button]
    assert "Accept suggestion (→ beagle)" in labels and "Label is right" in labels and "Exclude" in labels
    assert {b.proto.shortcut.lower() for b in at.button if b.key and b.key.startswith("queue")} >= \
        {"a", "k", "x", "l", "u", "left", "right"}


def test_accepting_moves_on_and_the_recheck_counts_it(quality_run):
    from doggos.base import decisions

    run, results = quality_run
    at = open_page("pages/quality.py")
    at.button(key="queue-accept").click().run()
    assert not at.exception, [e.value for e in at.exception]
    effects = decisions.state(run).effects
    assert [(e.row, e.folder_label, e.label, e.decision) for e in effects.values()] == \
        [(3, "border collie", "beagle", "relabel")]
    assert queue_where(at).startswith("Image 2 of 2 in the queue")  # on to the next open one
    assert any(c.startswith("1 of 2 reviewed") for c in captions_of(at))
    assert any("after 1 decision" in c and "purity" in c for c in captions_of(at))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Likely mislabeled"] == "1"
    assert [e.value for e in at.get("toast")] and "relabel beagle-0003.jpg as beagle" in at.get("toast")[0].value


def test_exclude_then_undo_in_the_queue(quality_run):
    from doggos.base import decisions

    run, _ = quality_run
    at = open_page("pages/quality.py")
    at.button(key="queue-exclude").click().run()
    assert [e.decision for e in decisions.state(run).effects.values()] == ["exclude"]
    at.button(key="queue-previous").click().run()
    assert queue_where(at).startswith("Image 1 of 2 in the queue · decided")
    assert any(m.value.startswith("**Excluded") for m in at.markdown)
    at.button(key="queue-undo").click().run()
    assert not decisions.state(run).effects
    assert len(decisions.read_log(run)) == 2  # append-only: the exclude and the undo
    assert any(c.startswith("0 of 2 reviewed") for c in captions_of(at))


def test_relabel_to_a_picked_label_then_label_is_right(quality_run):
    from doggos.base import decisions

    run, _ = quality_run
    at = open_page("pages/quality.py")
    at.selectbox(key="queue-target").set_value("border collie").run()
    at.button(key="queue-relabel").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [(e.row, e.label) for e in decisions.state(run).effects.values()] == [(3, "border collie")]
    at.button(key="queue-keep").click().run()  # the queue moved on to row 4
    assert sorted((e.row, e.decision) for e in decisions.state(run).effects.values()) == [(3, "keep"), (4, "keep")]
    assert any(c.startswith("2 of 2 reviewed") for c in captions_of(at))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Likely mislabeled"] == "0"


def test_a_new_label_from_a_relabel_is_a_label_like_any_other(quality_run):
    from doggos.base import decisions

    run, _ = quality_run
    decisions.record(run, "relabel", [decisions.Image(3, "/data/dogs/beagle/beagle-0003.jpg", "border collie")],
                     "golden retriever", source="cli")
    at = open_page("pages/quality.py")
    assert "golden retriever" in list(at.dataframe[0].value["label"])
    assert "golden retriever" in at.selectbox(key="queue-target").options


def test_duplicate_pairs_keep_left_right_or_both(quality_run):
    from doggos.base import decisions

    run, results = quality_run
    at = open_page("pages/quality.py")
    first = results.duplicates.iloc[0]
    at.button(key=f"pair-{first['a']}-{first['b']}-left").click().run()
    state = decisions.state(run)
    assert [(e.row, e.decision) for e in state.effects.values()] == [(int(first["b"]), "exclude")]
    assert not [b for b in at.button if b.key == f"pair-{first['a']}-{first['b']}-left"]  # the pair left the list
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duplicate pairs"] == str(len(results.duplicates) - 1)


def test_the_suspect_dialog_offers_the_decisions(quality_run):
    at = open_page("pages/quality.py")
    at.button(key="quality-suspects-view-4").click().run()
    keys = {b.key for b in at.button}
    assert {"suspect-accept", "suspect-relabel", "suspect-keep", "suspect-exclude"} <= keys
    assert not any(b.proto.shortcut for b in at.button if b.key.startswith("suspect-"))  # the queue's keys only


def test_undo_last_takes_back_the_newest_decision_and_shows_its_image(quality_run):
    from doggos.base import decisions

    run, _ = quality_run
    at = open_page("pages/quality.py")
    assert at.button(key="queue-undo-last").disabled  # nothing to undo yet
    at.button(key="queue-keep").click().run()
    assert queue_where(at).startswith("Image 2 of 2")
    at.button(key="queue-undo-last").click().run()
    assert not decisions.state(run).effects
    assert queue_where(at).startswith("Image 1 of 2")  # back to the image whose decision was taken back
    assert at.get("toast") and at.get("toast")[0].value.startswith("Undone: mark right")


def test_a_confusion_cell_leaves_excluded_images_out(quality_run):
    from doggos.base import decisions

    run, _ = quality_run
    decisions.record(run, "exclude", [decisions.Image(3, "/data/dogs/beagle/beagle-0003.jpg", "border collie")],
                     source="cli")
    at = open_page("pages/quality.py", quality_cell={"run": RUN_ID, "params": DEFAULT_PARAMS.name,
                                                     "filed": "border collie", "suggested": "beagle"})
    assert any("1 image" in m.value and "border collie" in m.value for m in at.markdown)
    assert not any("beagle-0003.jpg · agreement" in c for c in shown_captions(at))
