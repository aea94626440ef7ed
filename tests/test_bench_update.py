"""The update and resume benchmark (doggos.bench.update) on a tiny tree: every figure printed, parity checks met."""

from __future__ import annotations

import json

import pytest

from doggos.bench import update


@pytest.mark.ray
@pytest.mark.slow
def test_a_tiny_tree_reports_every_figure(ray_session, tiny_clip, tmp_path, capsys):
    # Killed as soon as it runs: a tiny run would finish before its status ever showed half of it embedded.
    code = update.main(["--images", "24", "--new", "0.25", "--model", tiny_clip, "--workdir", str(tmp_path),
                        "--kill-at", "0", "--json", str(tmp_path / "update.json")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for row in ("| full | 24 | 24 | 0 |", "| no-change update | 24 | 0 | 24 |", "| update (+6 new) | 30 | 6 | 24 |",
                "| no-change update (after) | 30 | 0 | 30 |"):
        assert row in printed
    assert "| update: (update − F) / (full − F) ≤ 0.15 |" in printed
    assert "| resume: embedded across both attempts / images ≤ 1.1 |" in printed
    assert printed.count("min cosine 1.0000") + printed.count("min cosine 0.9999") == 4
    assert "paths DIFFER" not in printed and "fixed start F: the mean of two no-change updates" in printed
    report = json.loads((tmp_path / "update.json").read_text(encoding="utf-8"))
    resume = report["resume"]
    assert resume["killed"] and resume["attempts"] == 2 and resume["first_s"] > 0 and resume["second_s"] > 0
    assert resume["reused"] <= resume["kept_rows"] and resume["reused"] + resume["embedded"] == 24
    assert f"| embedded: killed attempt + resumed run | {resume['first_embedded']:,} + {resume['embedded']:,} |" \
        in printed
    full, before, updated, after = report["runs"]
    assert report["fixed_s"] == pytest.approx((before["seconds"] + after["seconds"]) / 2)
    assert report["update_ratio"] == pytest.approx((updated["seconds"] - report["fixed_s"]) /
                                                   (full["seconds"] - report["fixed_s"]))
    for run in report["runs"]:
        assert 0 < run["marks"]["listed"] < run["marks"]["ray up"] < run["seconds"] <= run["returned"]
        assert sum(run["stretches"].values()) == pytest.approx(run["seconds"])
    assert [p["rows"] for p in report["parity"]] == [24, 24, 24, 6]


@pytest.mark.parametrize("bad", [["--new", "0"], ["--kill-at", "1"], ["--images", "0"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        update.build_parser().parse_args(bad)
    assert f"error: argument {bad[0]}: not a" in capsys.readouterr().err
