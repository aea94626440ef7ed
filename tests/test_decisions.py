"""base.decisions: the log's record / undo / fold semantics, effective labels by row or path, torn lines, label checks,
writers in several processes."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pandas as pd
import pytest

from doggos.base import decisions
from doggos.base.decisions import DecisionError, Image

PATHS = [f"/data/{label}/{label}-{i}.jpg" for label in ("beagle", "pug") for i in range(3)]
FOLDERS = ["beagle"] * 3 + ["pug"] * 3


def image(row: int) -> Image:
    return Image(row, PATHS[row], FOLDERS[row])


def effect(run, row: int):
    return decisions.state(run).effects.get(PATHS[row])


def test_relabel_then_keep_keeps_the_new_label(tmp_path):
    decisions.record(tmp_path, "relabel", [image(0)], "husky")
    first = effect(tmp_path, 0)
    assert (first.label, first.folder_label, first.reviewed, first.excluded, first.decision) == \
        ("husky", "beagle", True, False, "relabel")
    decisions.record(tmp_path, "keep", [image(0)])
    kept = effect(tmp_path, 0)
    assert (kept.label, kept.reviewed, kept.excluded) == ("husky", True, False), "keep says the label now is right"
    assert kept.to_dict() == {"path": PATHS[0], "label": "beagle", "new_label": "husky", "decision": "relabel",
                              "at": kept.at}
    assert decisions.state(tmp_path).decisions == 2


def test_exclude_then_keep_brings_an_image_back_with_its_label(tmp_path):
    decisions.record(tmp_path, "relabel", [image(1)], "husky")
    decisions.record(tmp_path, "exclude", [image(1)])
    out = effect(tmp_path, 1)
    assert out.excluded and out.decision == "exclude" and out.label == "husky"
    state = decisions.state(tmp_path)
    assert (state.excluded, state.reviewed) == (1, 0)
    decisions.record(tmp_path, "keep", [image(1)])
    back = effect(tmp_path, 1)
    assert not back.excluded and back.reviewed and back.label == "husky"
    assert (decisions.state(tmp_path).excluded, decisions.state(tmp_path).reviewed) == (0, 1)


def test_exclude_alone_is_not_reviewed_and_a_keep_is_plain(tmp_path):
    decisions.record(tmp_path, "exclude", [image(2)])
    decisions.record(tmp_path, "keep", [image(3)], source="cli")
    state = decisions.state(tmp_path)
    assert not state.effects[PATHS[2]].reviewed
    assert state.effects[PATHS[3]].to_dict()["decision"] == "keep"
    assert state.effects[PATHS[3]].to_dict()["new_label"] is None
    assert [e.source for e in decisions.read_log(tmp_path)] == ["dashboard", "cli"]


def test_undo_of_a_bulk_action_takes_all_its_images_back(tmp_path):
    decisions.record(tmp_path, "keep", [image(0)])
    bulk = decisions.record(tmp_path, "relabel", [image(r) for r in (1, 2, 3)], "husky")
    assert len(decisions.state(tmp_path).effects) == 4
    assert decisions.describe(tmp_path, bulk) == "relabel 3 images as husky"
    assert decisions.undo(tmp_path) == [bulk]
    state = decisions.state(tmp_path)
    assert set(state.effects) == {PATHS[0]}, "the undone relabel is not in effect for any of its images"
    assert (state.decisions, state.actions) == (1, [1])


def test_undo_brings_back_the_decision_before(tmp_path):
    decisions.record(tmp_path, "relabel", [image(0)], "husky")
    decisions.record(tmp_path, "exclude", [image(0)])
    decisions.undo(tmp_path)
    back = effect(tmp_path, 0)
    assert (back.label, back.excluded, back.reviewed) == ("husky", False, True)


def test_undo_n_takes_the_newest_actions_newest_first(tmp_path):
    actions = [decisions.record(tmp_path, "keep", [image(r)]) for r in range(4)]
    assert decisions.undo(tmp_path, 2, source="cli") == actions[:1:-1]
    state = decisions.state(tmp_path)
    assert state.actions == actions[:2] and set(state.effects) == {PATHS[0], PATHS[1]}
    undo_lines = [e for e in decisions.read_log(tmp_path) if e.decision == "undo"]
    assert [(e.undoes, e.source) for e in undo_lines] == [(actions[3], "cli"), (actions[2], "cli")]
    # the next undo skips those already undone
    assert decisions.undo(tmp_path) == [actions[1]]


def test_undo_more_than_in_effect_names_n_and_writes_nothing(tmp_path):
    with pytest.raises(DecisionError, match=r"^N: asks to undo 1, but nothing can be undone") as caught:
        decisions.undo(tmp_path)
    assert caught.value.field == "N"
    decisions.record(tmp_path, "keep", [image(0)])
    decisions.record(tmp_path, "keep", [image(1)])
    before = decisions.log_path(tmp_path).read_bytes()
    with pytest.raises(DecisionError, match=r"^N: asks to undo 3, but only 2 actions can be undone"):
        decisions.undo(tmp_path, 3)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(DecisionError, match="^N: must be a whole number"):
            decisions.undo(tmp_path, bad)
    assert decisions.log_path(tmp_path).read_bytes() == before


def test_undo_of_one_action_and_of_an_undone_one(tmp_path):
    first = decisions.record(tmp_path, "exclude", [image(0)])
    second = decisions.record(tmp_path, "exclude", [image(1)])
    assert decisions.undo(tmp_path, action=first) == [first]
    assert set(decisions.state(tmp_path).effects) == {PATHS[1]}
    with pytest.raises(DecisionError, match=f"^action: action {first} is not in effect"):
        decisions.undo(tmp_path, action=first)
    with pytest.raises(DecisionError, match="^action: action 99 is not in effect"):
        decisions.undo(tmp_path, action=99)
    assert decisions.state(tmp_path).actions == [second]


def test_apply_by_recorded_row_and_by_path_when_rows_moved(tmp_path):
    decisions.record(tmp_path, "relabel", [image(0), image(4)], ["pug", "husky"])
    decisions.record(tmp_path, "exclude", [image(2)])
    decisions.record(tmp_path, "keep", [image(5)])
    state = decisions.state(tmp_path)
    applied = state.apply(pd.Series(PATHS), pd.Series(FOLDERS))
    assert list(applied.labels) == ["pug", "beagle", "beagle", "pug", "husky", "pug"]
    assert list(applied.excluded) == [False, False, True, False, False, False]
    assert list(applied.reviewed) == [True, False, False, False, True, True]
    assert list(applied.changed) == [True, False, False, False, True, False]
    # The run republished: other rows, two new images, one image gone. Effects follow their paths.
    moved = ["/data/new/a.jpg", PATHS[5], PATHS[4], "/data/new/b.jpg", PATHS[0], PATHS[1]]
    folders = ["new", "pug", "pug", "new", "beagle", "beagle"]
    shifted = state.apply(moved, folders)
    assert list(shifted.labels) == ["new", "pug", "husky", "new", "pug", "beagle"]
    assert list(shifted.reviewed) == [False, True, True, False, True, False]
    assert not shifted.excluded.any(), "the excluded image is not in the republished run"
    assert isinstance(shifted.labels, np.ndarray) and len(state.apply([], []).labels) == 0
    assert decisions.LabelState().apply(PATHS, FOLDERS).labels.tolist() == FOLDERS


def test_a_torn_last_line_is_skipped_and_the_next_decision_still_lands(tmp_path):
    decisions.record(tmp_path, "keep", [image(0)])
    with open(decisions.log_path(tmp_path), "ab") as log:
        log.write(b'{"seq": 2, "action": 2, "decision": "excl')  # a crash mid-write
    assert set(decisions.state(tmp_path).effects) == {PATHS[0]}
    decisions.record(tmp_path, "exclude", [image(1)])
    state = decisions.state(tmp_path)
    assert set(state.effects) == {PATHS[0], PATHS[1]} and state.effects[PATHS[1]].excluded
    assert [e.seq for e in decisions.read_log(tmp_path)] == [1, 2]


def test_lines_are_plain_json_with_the_documented_fields(tmp_path):
    action = decisions.record(tmp_path, "relabel", [image(3)], "  shiba inu ", source="cli")
    decisions.undo(tmp_path, source="cli")
    lines = [json.loads(line) for line in decisions.log_path(tmp_path).read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"seq": 1, "action": action, "at": lines[0]["at"], "decision": "relabel", "source": "cli",
                        "path": PATHS[3], "row": 3, "label": "pug", "new_label": "shiba inu"}
    assert lines[1] == {"seq": 2, "action": action + 1, "at": lines[1]["at"], "decision": "undo", "source": "cli",
                        "undoes": action}


@pytest.mark.parametrize("bad, message", [
    ("", "must not be empty"), ("   ", "must not be empty"), (None, "must not be empty"), (3, "must not be empty"),
    ("a/b", "holds a '/'"), ("a\\b", "holds a '/'"), (".", "cannot be a folder"), ("..", "cannot be a folder"),
    ("a\tb", "control character"), ("a\nb", "control character"), ("a\x00b", "control character"),
    ("x" * (decisions.MAX_LABEL_CHARS + 1), f"at most {decisions.MAX_LABEL_CHARS}"),
])
def test_check_label_refuses_what_is_no_folder_name(bad, message):
    with pytest.raises(DecisionError, match=f"^to: .*{message}") as caught:
        decisions.check_label(bad, "to")
    assert caught.value.field == "to"
    with pytest.raises(DecisionError, match="^label: "):
        decisions.check_label(bad)


def test_check_label_trims_and_takes_unicode():
    assert decisions.check_label("  Shiba Inu ") == "Shiba Inu"
    assert decisions.check_label("épagneul-breton_2") == "épagneul-breton_2"
    assert decisions.check_label("x" * decisions.MAX_LABEL_CHARS) == "x" * decisions.MAX_LABEL_CHARS


def test_record_refuses_bad_requests_naming_the_argument(tmp_path):
    cases = [
        (dict(decision="rename", images=[image(0)]), "decision"),
        (dict(decision="keep", images=[image(0)], source="web"), "source"),
        (dict(decision="keep", images=[]), "images"),
        (dict(decision="relabel", images=[image(0)]), "to"),
        (dict(decision="relabel", images=[image(0)], new_label="a/b"), "to"),
        (dict(decision="relabel", images=[image(0), image(1)], new_label=["x"]), "to"),
        (dict(decision="exclude", images=[image(0)], new_label="x"), "to"),
    ]
    for kwargs, field in cases:
        with pytest.raises(DecisionError, match=f"^{field}: ") as caught:
            decisions.record(tmp_path, **kwargs)
        assert caught.value.field == field and isinstance(caught.value, ValueError)
    with pytest.raises(DecisionError, match="^source: "):
        decisions.undo(tmp_path, source="web")
    assert not decisions.log_path(tmp_path).exists()


def test_version_changes_with_every_action(tmp_path):
    seen = [decisions.version(tmp_path)]
    assert seen[0] == (0, 0) and decisions.state(tmp_path).version == (0, 0)
    for row in range(4):
        decisions.record(tmp_path, "keep", [image(row)])
        seen.append(decisions.version(tmp_path))
    decisions.undo(tmp_path)
    seen.append(decisions.version(tmp_path))
    assert len(set(seen)) == len(seen)
    assert decisions.state(tmp_path).version == seen[-1]


def test_describe_says_what_an_action_did(tmp_path):
    one = decisions.record(tmp_path, "exclude", [image(2)])
    two = decisions.record(tmp_path, "relabel", [image(0), image(1)], ["pug", "husky"])
    three = decisions.record(tmp_path, "keep", [image(4)])
    assert decisions.describe(tmp_path, one) == "exclude beagle-2.jpg"
    assert decisions.describe(tmp_path, two) == "relabel 2 images under 2 labels"
    assert decisions.describe(tmp_path, three) == "mark right pug-1.jpg"
    assert decisions.describe(tmp_path, 42) == "action 42"


WRITERS, ACTIONS_EACH, IMAGES_EACH = 4, 15, 3


def _write_many(run: str, writer: int, barrier) -> None:
    barrier.wait()  # all at once: the lock, not the start order, keeps them apart
    for number in range(ACTIONS_EACH):
        images = [Image(writer * 1000 + number * 10 + i, f"/w{writer}/{number}-{i}.jpg", f"w{writer}")
                  for i in range(IMAGES_EACH)]
        if number % 3 == 2:
            decisions.record(run, "relabel", images, f"to-{writer}", source="cli")
        else:
            decisions.record(run, "keep" if number % 2 else "exclude", images)


def test_writers_in_several_processes_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")  # separate interpreters: each its own flock holder
    barrier = context.Barrier(WRITERS)
    writers = [context.Process(target=_write_many, args=(str(tmp_path), w, barrier)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    lines = decisions.log_path(tmp_path).read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1]), "whole lines only"
    entries = decisions.read_log(tmp_path)
    total = WRITERS * ACTIONS_EACH * IMAGES_EACH
    assert sorted(e.seq for e in entries) == list(range(1, total + 1))
    assert len(entries) == len({e.path for e in entries}) == total
    by_action = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        by_action.setdefault(entry.action, []).append((entry.seq, entry.path.rsplit("-", 1)[0]))
    assert len(by_action) == WRITERS * ACTIONS_EACH
    for lines in by_action.values():  # one writer's one call, in consecutive lines
        first = lines[0][0]
        assert len({call for _, call in lines}) == 1
        assert [seq for seq, _ in lines] == list(range(first, first + IMAGES_EACH))
    state = decisions.state(tmp_path)
    assert state.decisions == total and len(state.actions) == WRITERS * ACTIONS_EACH


def test_a_keep_or_an_exclude_follows_the_folder_label_the_run_has_now(tmp_path):
    """A run published again after the file moved folders: a keep or an exclude does not pin the old folder label;
    a relabel still gives its label."""
    decisions.record(tmp_path, "keep", [decisions.Image(0, "/d/a.jpg", "beagle")], source="cli")
    decisions.record(tmp_path, "exclude", [decisions.Image(1, "/d/b.jpg", "beagle")], source="cli")
    decisions.record(tmp_path, "relabel", [decisions.Image(2, "/d/c.jpg", "beagle")], "wolf", source="cli")
    applied = decisions.state(tmp_path).apply(["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"], ["husky", "husky", "husky"])
    assert list(applied.labels) == ["husky", "husky", "wolf"] and list(applied.changed) == [False, False, True]
    assert list(applied.excluded) == [False, True, False]
