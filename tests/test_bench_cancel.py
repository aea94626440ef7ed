"""The cancel benchmark, small: a few phases of a tiny tree, every figure printed, nothing left behind."""

from __future__ import annotations

import json
import os

import pytest

from doggos.bench import cancel


@pytest.mark.ray
@pytest.mark.slow
def test_a_few_phases_report_every_figure(image_tree, tiny_clip, capsys):
    root, _ = image_tree
    held = os.environ.get("DOGGOS_TEST_HOLD")
    assert cancel.main(["--source", str(root), "--model", tiny_clip, "--held", "--json",
                        "--phases", "queued,listing,embedding"]) == 0
    assert os.environ.get("DOGGOS_TEST_HOLD") == held  # the benchmark's hold does not outlive it
    out = capsys.readouterr().out
    results = json.loads(out[:out.rindex("]") + 1])
    assert [r["phase"] for r in results] == ["queued", "listing", "embedding"]
    for result in results:
        assert result["reached"] and result["state"] == "cancelled", result
        assert result["cancelled_s"] is not None and result["returned_s"] >= 0, result
        assert result["left"] == 0 and not result["published"], result
        assert result["stopping"].startswith("stopping"), result


def test_the_table_names_the_worst_phase_and_the_goal():
    results = [{"phase": "listing", "how": "held", "reached": True, "state": "cancelled", "stopping": "stopping",
                "cancelled_s": 0.04, "returned_s": 0.2, "left": 0, "published": False},
               {"phase": "embedding", "how": "live", "reached": True, "state": "cancelled",
                "stopping": "stopping — 2 batches in flight", "cancelled_s": 0.12, "returned_s": 3.4, "left": 0,
                "published": False}]
    text = cancel.table(results)
    assert "stopping — 2 batches in flight" in text
    assert text.splitlines()[-1] == ("worst: embedding, 3.40 s to cancelled and returned "
                                     "(goal 3 s at every phase: NOT met)")
    results[1]["returned_s"] = 0.8
    assert cancel.table(results).endswith("(goal 3 s at every phase: met)")


@pytest.mark.parametrize("bad", [["--phases", "sleeping"], ["--source", "x"], ["--phases", ","]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        cancel.main(bad)
    assert exit_.value.code == 2
