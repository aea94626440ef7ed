"""Comparing two runs (explore.compare): settings, speed, neighbour overlap, label purity; the command; the page."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from _dashboard_fixtures import LABELS, NASTY_LABEL, open_page, write_failed_run, write_fake_run

from doggos.base import store, units
from doggos.base.records import read_manifest, update_status, write_manifest
from doggos.base.rundir import RunDir
from doggos.explore import compare, quality

RUN_A = "20250101-120000-0001"
RUN_B = "20250102-120000-0002"


pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why


def edit_manifest(run: Path, config: dict | None = None, plan: dict | None = None, **changes) -> None:
    """Rewrite a fake run's manifest with other settings, as if the run had been launched with them."""
    run_dir = RunDir(run)
    manifest = read_manifest(run_dir)
    if config:
        changes["config"] = manifest.config.replace(**config)
    if plan:
        changes["plan"] = dataclasses.replace(manifest.plan, **plan)
    write_manifest(run_dir, dataclasses.replace(manifest, **changes))


def command(*argv: str) -> int:
    """`python -m doggos compare …` through the parser the lead's cli.build_parser gets from add_parser."""
    parser = argparse.ArgumentParser()
    compare.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", *argv])
    return args.handler(args)


# ---- the comparison --------------------------------------------------------------------------------------------------

def test_a_run_compared_with_itself_agrees_completely(runs_root):
    run = write_fake_run(runs_root, RUN_A)
    result = compare.compare_runs(run, run)
    found = result.agreement
    assert found.neighbour_overlap == 1.0
    assert (found.images_in_both, found.only_in_a, found.only_in_b, found.k) == (sum(LABELS.values()), 0, 0, 10)
    assert result.settings_diff == {} and not result.settings["differs"].any()
    assert found.label_purity("a") == found.label_purity("b") and set(found.label_purity("a")) == set(LABELS)
    assert (found.labels["difference"] == 0).all() and (found.labels["overlap"] == 1.0).all()


def test_purity_is_quality_s_on_the_shared_images_and_other_embeddings_overlap_less(runs_root):
    a = write_fake_run(runs_root, RUN_A, seed=0)
    b = write_fake_run(runs_root, RUN_B, seed=5, labels={"beagle": 12, "border collie": 9, "pug": 4})
    found = compare.agreement(a, b)
    assert (found.images_in_both, found.only_in_a, found.only_in_b, found.k) == (21, 6, 4, 10)
    assert 0 < found.neighbour_overlap < 1  # the same labels, other vectors: neighbourhoods differ inside each label
    assert list(found.labels["label"]) == ["beagle", "border collie"]  # labels of the shared images only
    assert list(found.labels["images"]) == [12, 9]
    for side, run in (("a", a), ("b", b)):
        vectors, meta = store.load_embeddings(run)
        shared = meta["label"].isin(["beagle", "border collie"]).to_numpy()
        order = np.argsort(meta["path"].to_numpy()[shared])
        expected = quality.assess(vectors[shared][order], meta["label"][shared].to_numpy()[order],
                                  meta["path"][shared].to_numpy()[order], backend="numpy").labels
        assert found.label_purity(side) == pytest.approx(dict(zip(expected["label"], expected["purity"])))
    assert found.labels["difference"].to_numpy() == pytest.approx(
        found.labels["purity_b"].to_numpy() - found.labels["purity_a"].to_numpy())


def test_k_shrinks_to_the_shared_images_minus_one(runs_root):
    a = write_fake_run(runs_root, RUN_A, labels={"beagle": 3, "pug": 5})
    b = write_fake_run(runs_root, RUN_B, labels={"beagle": 4}, seed=1)
    found = compare.agreement(a, b)
    assert (found.images_in_both, found.k, found.only_in_a, found.only_in_b) == (3, 2, 5, 1)
    assert found.label_purity("a") == {"beagle": 1.0}  # every neighbour of a beagle is a beagle: there is nothing else


def test_settings_that_differ_are_named_with_both_values_and_the_speed_ratio(runs_root):
    a = write_fake_run(runs_root, RUN_A)
    b = write_fake_run(runs_root, RUN_B)
    edit_manifest(b, config={"concurrency": 2}, plan={"actors": 2}, images_per_s=25.0, duration_s=20.0)
    result = compare.compare_runs(a, b)
    assert result.settings_diff == {"concurrency": [None, 2], "plan.actors": [1, 2]}
    table = result.settings.set_index("setting")
    assert table.loc["concurrency", ["a", "b"]].tolist() == ["auto", "2"] and table.loc["concurrency", "differs"]
    assert not table.loc["batch_size", "differs"] and "output" not in table.index  # always differs: not a setting
    report = result.to_json()
    assert report["throughput"] == {"a": 12.5, "b": 25.0} and report["throughput_ratio"] == 2.0
    assert report["duration_s"] == {"a": 30.0, "b": 20.0}
    text = compare.format_comparison(result)
    assert "settings (2 of" in text and "B/A 2.00×" in text
    starred = [line.split()[1] for line in text.splitlines() if line.strip().startswith("*")]
    assert starred == ["concurrency", "plan.actors"]


def test_runs_with_fewer_than_two_images_in_common_cannot_be_compared(runs_root):
    a = write_fake_run(runs_root, RUN_A, labels={"beagle": 3})
    elsewhere = write_fake_run(runs_root, RUN_B, labels={"beagle": 3}, source="/other/dogs")
    with pytest.raises(ValueError, match=r"^run_b: shares no images with run_a \(matched by path; 3 images in run_a, "
                                         r"3 in run_b\)"):
        compare.compare_runs(a, elsewhere)
    one = write_fake_run(runs_root, "20250103-120000-0003", labels={"beagle": 1})
    with pytest.raises(ValueError, match=r"^run_b: shares only 1 image \(/data/dogs/beagle/beagle-0000.jpg\)"):
        compare.agreement(a, one)


# ---- which runs: resolve_run --------------------------------------------------------------------------------------

def test_a_run_is_found_by_folder_or_by_id_under_the_runs_root(runs_root, tmp_path, monkeypatch):
    run = write_fake_run(runs_root, RUN_A)
    outside = write_fake_run(tmp_path / "elsewhere", "my-run")
    assert compare.resolve_run(RUN_A, runs_root).path == run
    assert compare.resolve_run(str(run), tmp_path / "nowhere").path == run
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert compare.resolve_run("my-run", runs_root).path == outside  # a bare name: a folder here first


def test_missing_and_unfinished_runs_are_refused_naming_the_argument(runs_root, tmp_path):
    with pytest.raises(ValueError, match=r"^run_a: no run 'nope': not a run folder, and not a run id under "):
        compare.resolve_run("nope", runs_root, "run_a")
    with pytest.raises(ValueError, match=r"^run_b: no run folder '.*/missing/run'$"):
        compare.resolve_run(str(tmp_path / "missing" / "run"), runs_root, "run_b")
    with pytest.raises(ValueError, match=r"^run_a: .*empty is a folder but holds no run"):
        (tmp_path / "empty").mkdir()
        compare.resolve_run(str(tmp_path / "empty"), runs_root, "run_a")
    with pytest.raises(ValueError, match=r"^run_a: is required"):
        compare.resolve_run("  ", runs_root, "run_a")
    write_failed_run(runs_root, "20250101-130000-0002")
    with pytest.raises(ValueError, match=r"^run_b: run 20250101-130000-0002 failed: only a run that succeeded"):
        compare.resolve_run("20250101-130000-0002", runs_root, "run_b")
    running = write_fake_run(runs_root, RUN_B)
    RunDir(running).manifest.unlink()  # what a run still embedding looks like: no manifest yet
    update_status(RunDir(running), state="running")
    with pytest.raises(ValueError, match=rf"^run_a: run {RUN_B} is still running: compare it once it has succeeded"):
        compare.resolve_run(RUN_B, runs_root, "run_a")


# ---- the command ---------------------------------------------------------------------------------------------------

def test_compare_command_prints_json_with_what_the_issue_asks(runs_root, capsys):
    write_fake_run(runs_root, RUN_A)
    b = write_fake_run(runs_root, RUN_B, seed=3)
    assert command(RUN_A, str(b), "--runs-dir", str(runs_root), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images_in_both"] == 27 and report["settings_diff"] == {}
    assert report["throughput"] == {"a": 12.5, "b": 12.5}
    assert 0 < report["neighbour_overlap"] < 1
    assert set(report["label_purity"]["a"]) == set(report["label_purity"]["b"]) == set(LABELS)
    assert set(report["overall_purity"]) == {"a", "b"} and report["k"] == 10
    assert report["runs"]["b"]["id"] == RUN_B


def test_compare_command_prints_a_table_and_uses_doggos_runs_dir_by_default(runs_root, capsys):
    write_fake_run(runs_root, RUN_A)
    assert command(RUN_A, RUN_A) == 0  # DOGGOS_RUNS_DIR (the runs_root fixture) is the default root
    out = capsys.readouterr().out
    assert "neighbour overlap: 100 %" in out and "settings (0 of" in out  # shares as every screen writes them
    purity = next(line for line in out.splitlines() if line.strip().startswith("beagle"))
    assert purity.split()[1:] == ["12", "100", "%", "100", "%", "±0", "points", "100", "%"]
    assert NASTY_LABEL in out and "RANDOM WEIGHTS made both runs" in out


def test_compare_command_exits_2_naming_each_bad_argument(runs_root, capsys):
    write_fake_run(runs_root, RUN_A, labels={"beagle": 3})
    write_fake_run(runs_root, RUN_B, labels={"beagle": 3}, source="/other")
    assert command("nope", "20990101-000000-ffff") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run_a: no run 'nope'") and "; run_b: no run '20990101-000000-ffff'" in err
    assert command(RUN_A, RUN_B) == 2
    assert capsys.readouterr().err.startswith("error: run_b: shares no images with run_a")


# ---- two real runs: the same model at another batch size, and another model ------------------------------------------

@pytest.fixture(scope="module")
def real_runs(ray_session, tiny_clip, tmp_path_factory):
    """A photo tree embedded three times: batch size 2 and 7 with the same tiny CLIP, and batch 7 with another one."""
    from imagegen import write_image_tree

    from doggos.base.config import RunConfig
    from doggos.pipeline.demo import save_random_clip
    from doggos.runs import driver

    base = tmp_path_factory.mktemp("compare")
    write_image_tree(base / "photos", per_label=8)  # 24 images: k = 10 leaves 13 non-neighbours to disagree on
    other_model = str(save_random_clip(base / "other-clip", preset="tiny", seed=1))
    runs = {}
    for name, model, batch in (("batch2", tiny_clip, 2), ("batch7", tiny_clip, 7), ("other", other_model, 7)):
        driver.run(RunConfig(source=str(base / "photos"), output=str(base / name), model=model, batch_size=batch,
                             projection=False, quality=False))
        runs[name] = base / name
    return runs


@pytest.mark.ray
def test_two_runs_that_differ_in_batch_size_only_embed_alike(real_runs):
    result = compare.compare_runs(real_runs["batch2"], real_runs["batch7"])
    assert result.settings_diff == {"batch_size": [2, 7], "plan.batch_size": [2, 7]}
    vectors = {}
    for name in ("batch2", "batch7"):
        matrix, meta = store.load_embeddings(real_runs[name])
        vectors[name] = matrix[np.argsort(meta["path"].to_numpy())]
    np.testing.assert_allclose(vectors["batch2"], vectors["batch7"], rtol=1e-4, atol=1e-5)
    assert result.agreement.images_in_both == 24 and result.agreement.k == 10
    assert result.agreement.neighbour_overlap >= 0.98  # float noise may swap a tie at the 10th place, no more
    assert result.agreement.overall_purity_a == pytest.approx(result.agreement.overall_purity_b, abs=0.02)


@pytest.mark.ray
def test_two_different_models_see_different_neighbours(real_runs):
    result = compare.compare_runs(real_runs["batch7"], real_runs["other"])
    assert set(result.settings_diff) == {"model"}
    assert result.agreement.images_in_both == 24
    assert result.agreement.neighbour_overlap < 0.95


# ---- the page --------------------------------------------------------------------------------------------------------

def test_compare_page_needs_two_finished_runs(runs_root):
    write_fake_run(runs_root, RUN_A)
    write_failed_run(runs_root, "20250103-130000-0003")  # not finished: not offered
    at = open_page("pages/compare.py")
    assert any("Comparing needs two finished runs" in i.value for i in at.info)
    assert not at.main.selectbox and not at.dataframe


def test_compare_page_defaults_to_the_current_run_and_the_one_before(runs_root):
    for number, run_id in enumerate(("20250101-120000-0001", "20250102-120000-0002", "20250103-120000-0003")):
        write_fake_run(runs_root, run_id, seed=number)
    at = open_page("pages/compare.py")
    assert (at.selectbox(key="compare_a").value, at.selectbox(key="compare_b").value) == (
        "20250102-120000-0002", "20250103-120000-0003")
    oldest = open_page("pages/compare.py", current_run_id="20250101-120000-0001")  # nothing before it: the next one
    assert (oldest.selectbox(key="compare_a").value, oldest.selectbox(key="compare_b").value) == (
        "20250102-120000-0002", "20250101-120000-0001")


def test_compare_page_highlights_settings_that_differ_and_shows_the_agreement(runs_root):
    write_fake_run(runs_root, RUN_A)
    edit_manifest(write_fake_run(runs_root, RUN_B, seed=4), config={"concurrency": 2}, plan={"actors": 2},
                  images_per_s=25.0)
    at = open_page("pages/compare.py")
    assert not at.error
    settings, labels = (frame.value for frame in at.dataframe)
    assert settings.loc[settings["differs"], "setting"].tolist() == ["concurrency", "plan.actors"]
    metrics = {m.label: m for m in at.metric}
    assert metrics["Images/s · start to Parquet · B"].value == "25.0"
    assert metrics["Images/s · start to Parquet · B"].delta == "+12.5 (2.00× A)"
    assert metrics["Images in both"].value == "27"
    expected = compare.agreement(runs_root / RUN_A, runs_root / RUN_B)
    assert metrics["Neighbour overlap"].value == units.share(expected.neighbour_overlap)
    assert metrics["Label purity · A"].value == units.share(expected.overall_purity_a)  # as Quality writes it
    assert labels["purity_a"].tolist() == pytest.approx((expected.labels["purity_a"] * 100).tolist())  # percents
    assert sorted(labels["label"]) == sorted(LABELS)  # the nasty label arrives as data, exactly
    assert list(labels.columns) == list(compare.LABEL_COLUMNS)
    at.toggle(key="compare_only_differing").set_value(True).run()
    assert at.dataframe[0].value["setting"].tolist() == ["concurrency", "plan.actors"]


def test_compare_page_draws_no_arrow_for_no_change(runs_root):
    """Two runs alike: B − A is zero everywhere. The deltas read '±0 points', '±0 s' and '+0.0', and Streamlit drew
    each with a green rising arrow (any delta not led by '-' is a rise): no change now shows no delta."""
    write_fake_run(runs_root, RUN_A)
    write_fake_run(runs_root, RUN_B)
    at = open_page("pages/compare.py")
    deltas = {m.label: m.delta for m in at.metric if m.label.endswith(" · B")}
    assert set(deltas) == {"Images/s · start to Parquet · B", "Duration · B", "Embedding time · B", "Label purity · B"}
    assert all(not delta for delta in deltas.values()), deltas
    assert compare.metric_delta("±0 points") is compare.metric_delta("+0.0 (1.00× A)") is None
    assert compare.metric_delta("-0.50") == "-0.50" and compare.metric_delta("+1 min 06 s") == "+1 min 06 s"


def test_compare_page_still_compares_settings_of_runs_without_shared_images(runs_root):
    write_fake_run(runs_root, RUN_A, labels={"beagle": 3})
    write_fake_run(runs_root, RUN_B, labels={"beagle": 3}, source="/other/dogs")
    at = open_page("pages/compare.py")
    assert any("shares no images with run" in w.value for w in at.warning)
    assert at.dataframe[0].value.set_index("setting").loc["source", "differs"]
    assert "Neighbour overlap" not in [m.label for m in at.metric]
