"""A run of one label (issue 25 item 6): the label checks say they need two or more labels, on the Quality page and in
`doggos quality`, instead of "Zero-shot accuracy 100 %" and "no suspects"."""

from __future__ import annotations

import numpy as np
import pytest
from _dashboard_fixtures import open_page, unescape_markdown, write_fake_run

from doggos.base import store
from doggos.base.rundir import RunDir
from doggos.cli import main
from doggos.explore.quality import DEFAULT_PARAMS, ZeroShot, assess
from doggos.explore.quality_step import report_json, write_results

RUN_ID = "20250101-120000-0001"


def checked(run, labels=None):
    """The label check on disk, as the QUALITY step writes it, with a zero-shot that picks each image's folder."""
    vectors, meta = store.load_embeddings(run)
    labels = meta["label"].tolist() if labels is None else labels
    names = sorted(set(labels))
    zero_shot = ZeroShot(np.array([names.index(label) for label in labels]), np.full(len(labels), 0.9, np.float32))
    results = assess(vectors, labels, meta["path"].tolist(), DEFAULT_PARAMS, backend="numpy",
                     zero_shot_result=zero_shot)
    write_results(RunDir(run).quality, DEFAULT_PARAMS, results)
    return results


@pytest.fixture
def one_label_run(runs_root):
    return write_fake_run(runs_root, RUN_ID, labels={"digits": 30})


def test_one_label_has_no_label_checks_and_no_perfect_zero_shot(one_label_run):
    from dashboard import quality_view

    results = checked(one_label_run)
    assert results.label_checks_note.startswith("this run has 1 label (digits): label checks need two or more labels")
    assert results.zero_shot_accuracy is None  # not "100 %": it could not have missed
    report = report_json(results)
    assert report["label_checks"] == {"available": False, "reason": results.label_checks_note}
    assert report["zero_shot"]["available"] is False and report["zero_shot"]["reason"] == results.label_checks_note
    assert quality_view.label_checks_off(results).startswith("This run has 1 label (digits)")


def test_two_labels_keep_their_checks(runs_root):
    from dashboard import quality_view

    run = write_fake_run(runs_root, RUN_ID, labels={"a": 15, "b": 15})
    results = checked(run)
    assert results.label_checks_note is None and quality_view.label_checks_off(results) is None
    assert results.zero_shot_accuracy == 1.0 and report_json(results)["label_checks"]["available"] is True


def test_the_quality_command_says_label_checks_need_two_labels(one_label_run, capsys):
    checked(one_label_run)
    assert main(["quality", str(one_label_run)]) == 0
    out, err = capsys.readouterr()
    assert "label checks need two or more labels" in err
    assert "zero-shot: not available (this run has 1 label (digits)" in out
    assert "suspects: none" not in out and "0 likely mislabeled" not in out  # no finding where none can be made
    assert "mislabeled – (label checks need two or more labels)" in out and "suspects: – (" in out


@pytest.mark.usefixtures("every_run_goes_through_app_py")
def test_the_quality_page_says_label_checks_need_two_labels_not_100_percent(one_label_run):
    checked(one_label_run)
    at = open_page("pages/quality.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Zero-shot accuracy"] == "–" and metrics["Likely mislabeled"] == "–"  # units.DASH: not known
    assert any("label checks need two or more labels" in unescape_markdown(w.value) for w in at.warning)
    assert not any("no suspects" in s.value for s in at.success)
    assert not any("100 %" in str(value) for value in metrics.values())
