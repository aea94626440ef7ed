"""The re-check benchmark (doggos.bench.recheck) on a small synthetic run: its figures, its plan of decisions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from doggos.bench import recheck


def test_a_small_run_reports_every_figure(tmp_path, capsys):
    assert recheck.main(["--rows", "300", "--labels", "6", "--dim", "16", "--decisions", "0.1", "--repeats", "2",
                         "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| rows | first check: neighbours + assess (s) |" in printed and "| 300 |" in printed
    report = json.loads((tmp_path / "recheck.json").read_text(encoding="utf-8"))
    assert report["settings"]["decisions"] == 0.1 and report["settings"]["repeats"] == 2
    (result,) = report["results"]
    assert result["rows"] == 300 and result["misfiled"] > 0
    assert 0 < result["neighbours_s"] <= result["first_s"]
    assert len(result["load_s"]) == len(result["queue_s"]) == len(result["recheck_s"]) == 2
    assert result["recheck_median_s"] > 0 and result["ratio"] == pytest.approx(
        result["recheck_median_s"] / result["first_s"])
    assert len(result["record_ms"]) == result["actions"] > 0 and result["decisions"] > 0
    assert result["suspects_before"] > 0 and result["purity_text"].startswith("purity ")
    assert result["progress_text"].endswith("reviewed") and result["peak_rss_mb"] > 0
    assert result["goal_s"] is None and result["meets_goal"] is None
    assert set(result["fresh"]) == {"imports_s", "recheck_s", "peak_rss_mb"} and result["fresh"]["recheck_s"] > 0
    assert "| 300 | " in printed.split("fresh process")[1]


def test_the_plan_works_the_queue_first_and_mixes_decisions():
    suspects = pd.DataFrame({"row": np.arange(100, 160), "suggested": [f"to-{i}" for i in range(60)]})
    rng = np.random.default_rng(0)
    actions = recheck.plan_actions(suspects, rows=5000, count=400, rng=rng)
    rows = [row for _, part, _ in actions for row in part]
    assert len(rows) == len(set(rows)) == 400 and rows[:60] == list(range(100, 160))
    assert {decision for decision, _, _ in actions} == {"relabel", "keep", "exclude"}
    assert any(len(part) > 1 for _, part, _ in actions) and sum(len(p) == 1 for _, p, _ in actions) > len(actions) / 2
    for decision, part, new_labels in actions:
        in_queue = {100 <= row < 160 for row in part}
        assert len(in_queue) == 1, "a bulk action never mixes the queue with other images"
        if decision == "relabel":
            assert in_queue == {True} and len(new_labels) == len(part)
            assert all(new == f"to-{row - 100}" or new.startswith("new-label-") for row, new in zip(part, new_labels))
        else:
            assert new_labels is None


def test_goals_and_the_table_say_whether_they_are_met():
    fast = recheck.SizeResult(2_880, 120, 512, neighbours_s=3.0, first_s=4.0, recheck_s=[0.5, 0.4, 0.6])
    slow = recheck.SizeResult(100_000, 120, 512, neighbours_s=50.0, first_s=60.0, recheck_s=[31.0])
    assert fast.to_dict()["meets_goal"] is True and fast.ratio == pytest.approx(0.125)
    assert slow.to_dict()["meets_goal"] is False
    table = recheck.format_table([fast, slow])
    assert "| 2,880 | 3.00 + 1.00 = 4.00 | – | – | 0.50 (0.60) | 0.125 | ≤ 2 s | yes |" in table
    assert "| 100,000 |" in table and "| ≤ 30 s | NO |" in table


@pytest.mark.parametrize("bad", [["--decisions", "0"], ["--decisions", "1.5"], ["--decisions", "x"],
                                 ["--rows", "0"], ["--repeats", "0"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        recheck.parse_args(bad)
    assert f"error: argument {bad[0]}: not a" in capsys.readouterr().err
