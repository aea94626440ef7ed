"""`python -m doggos labels` and `quality` with label decisions, on a run over real files with planted mistakes."""

import csv
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _labels_fixtures import read_only, write_labelled_run

from doggos.base import decisions
from doggos.cli import main


@pytest.fixture
def labelled(tmp_path):
    return write_labelled_run(tmp_path)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def quality_json(capsys, run) -> dict:
    code, out, err = cli(capsys, "quality", run, "--json")
    assert code == 0, err
    return json.loads(out)


def log_bytes(run) -> bytes | None:
    path = decisions.log_path(run)
    return path.read_bytes() if path.exists() else None


def listing(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder` with its bytes (None when there is no folder): "unchanged" compares these."""
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_accepting_the_suggestions_fixes_exactly_the_planted_images(labelled, capsys):
    before = quality_json(capsys, labelled.run)
    assert {s["path"] for s in before["suspects"]} == set(labelled.planted)
    assert before["counts"]["decisions"] == 0 and before["counts"]["reviewed"] == 0
    assert [(d["paths"], d["kind"]) for d in before["duplicates"]] == [([labelled.copy, labelled.original], "exact")]

    code, out, err = cli(capsys, "labels", labelled.run, "accept")
    assert code == 0, err
    assert "relabelled 2 images" in out and all(path in out for path in labelled.planted)
    effects = decisions.state(labelled.run).effects
    assert {path: e.label for path, e in effects.items()} == labelled.planted
    assert all(e.decision == "relabel" for e in effects.values())

    after = quality_json(capsys, labelled.run)
    assert after["suspects"] == [] and after["counts"]["likely_mislabeled"] == 0
    assert after["counts"]["decisions"] == 2 and after["counts"]["reviewed"] == 2
    assert set(after) == set(before) and set(after["counts"]) == set(before["counts"])
    purity = {side: {label["label"]: label["purity"] for label in report["labels"]} for side, report in
              (("before", before), ("after", after))}
    for label in ("beagle", "husky", "pug"):  # each held or neighboured a planted image
        assert purity["after"][label] > purity["before"][label], label
    code, text, _ = cli(capsys, "quality", labelled.run)
    assert "after 2 decisions" in text and "purity " in text and "suspects: none" in text

    code, out, _ = cli(capsys, "labels", labelled.run, "accept")
    assert code == 0 and "no suggestion to accept" in out  # nothing left: nothing recorded
    assert len(decisions.state(labelled.run).actions) == 1


def test_keep_exclude_show_and_undo(labelled, capsys):
    keep_row = labelled.row(labelled.original)
    assert cli(capsys, "labels", labelled.run, "keep", keep_row)[0] == 0
    code, out, err = cli(capsys, "labels", labelled.run, "exclude", labelled.copy)
    assert code == 0 and "exclude pug-00-copy.jpg" in out, err
    code, out, _ = cli(capsys, "labels", labelled.run, "show", "--json")
    shown = json.loads(out)
    assert [(e["path"], e["label"], e["new_label"], e["decision"]) for e in shown] == [
        (labelled.original, "pug", None, "keep"), (labelled.copy, "pug", None, "exclude")]
    assert all(set(e) == {"path", "label", "new_label", "decision", "at"} for e in shown)
    counts = quality_json(capsys, labelled.run)["counts"]
    assert counts["exact_duplicate_pairs"] == 0 and counts["excluded"] == 1  # one side excluded: no pair left
    assert counts["images"] == len(labelled.paths) - 1
    code, text, _ = cli(capsys, "quality", labelled.run)
    assert "duplicates: none" in text

    code, out, _ = cli(capsys, "labels", labelled.run, "show")
    assert "2 images with a decision in effect: 1 keep, 1 exclude" in out and labelled.copy in out

    code, out, _ = cli(capsys, "labels", labelled.run, "undo")
    assert code == 0 and "undone: exclude pug-00-copy.jpg" in out
    assert [e["path"] for e in json.loads(cli(capsys, "labels", labelled.run, "show", "--json")[1])] == [labelled.original]
    assert quality_json(capsys, labelled.run)["counts"]["exact_duplicate_pairs"] == 1  # the pair is back
    code, out, _ = cli(capsys, "labels", labelled.run, "undo", "1")
    assert code == 0 and "undone: mark right pug-00.jpg" in out
    code, out, _ = cli(capsys, "labels", labelled.run, "show")
    assert "no label decisions in effect" in out


def test_relabel_by_paths_and_rows_is_one_action(labelled, capsys):
    rows = [labelled.row(labelled.original), labelled.row(labelled.copy)]
    local = os.path.relpath(labelled.paths[0])  # a local path typed relative to here
    code, out, err = cli(capsys, "labels", labelled.run, "relabel", rows[0], rows[1], labelled.copy, local,
                         "--to", " husky ")
    assert code == 0, err
    assert "relabel 3 images as husky" in out  # the copy, named by its row and its path, once
    effects = decisions.state(labelled.run).effects
    assert {p: e.label for p, e in effects.items()} == {labelled.original: "husky", labelled.copy: "husky",
                                                        labelled.paths[0]: "husky"}
    assert decisions.state(labelled.run).actions == [1]


def test_export_lists_every_image_and_refuses_to_overwrite(labelled, capsys, tmp_path):
    cli(capsys, "labels", labelled.run, "accept")
    cli(capsys, "labels", labelled.run, "exclude", labelled.copy)
    out_file = tmp_path / "decisions.csv"
    code, out, err = cli(capsys, "labels", labelled.run, "export", out_file)
    assert code == 0 and f"{len(labelled.paths)} rows" in out, err
    with open(out_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == labelled.paths
    assert [r["label"] for r in rows] == labelled.folder_labels
    decided = {r["path"]: (r["new_label"], r["decision"]) for r in rows if r["decision"]}
    assert decided == {**{p: (label, "relabel") for p, label in labelled.planted.items()}, labelled.copy: ("", "exclude")}
    assert all(r["new_label"] == "" for r in rows if not r["decision"])

    before = out_file.read_bytes()
    code, _, err = cli(capsys, "labels", labelled.run, "export", out_file)
    assert code == 2 and "FILE:" in err and "--overwrite" in err and out_file.read_bytes() == before
    cli(capsys, "labels", labelled.run, "undo")
    assert cli(capsys, "labels", labelled.run, "export", out_file, "--overwrite")[0] == 0
    assert out_file.read_bytes() != before


def test_apply_writes_the_corrected_tree(labelled, capsys, tmp_path):
    cli(capsys, "labels", labelled.run, "accept")
    cli(capsys, "labels", labelled.run, "exclude", labelled.copy)
    dest = tmp_path / "fixed"
    code, out, err = cli(capsys, "labels", labelled.run, "apply", "--to", dest)
    assert code == 0, err
    tree = labelled.tree
    expected = {}  # label/name → the source file it must equal
    for path, folder in zip(labelled.paths, labelled.folder_labels):
        if path != labelled.copy and path not in labelled.planted:
            expected[f"{folder}/{Path(path).name}"] = labelled.file(path)
    expected["husky/husky-03-2.jpg"] = tree / "beagle" / "husky-03.jpg"  # clashed with husky/husky-03.jpg
    expected["beagle/sofa.jpg"] = tree / "pug" / "sofa.jpg"
    written = listing(dest)
    assert set(written) == set(expected)
    for place, source in expected.items():
        assert written[place] == source.read_bytes(), place
    assert "left out 1 excluded image" in out and "husky/husky-03-2.jpg" in out
    assert "13  beagle" in out and "13  husky" in out and "12  pug" in out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fixed")]  # no staging left beside it
    (tmp_path / "probe").mkdir()
    assert dest.stat().st_mode == (tmp_path / "probe").stat().st_mode  # as open to others as any new folder


def test_apply_links_and_overwrites(labelled, capsys, tmp_path):
    dest = tmp_path / "linked"
    dest.mkdir()
    (dest / "old.txt").write_text("an earlier tree")
    code, _, err = cli(capsys, "labels", labelled.run, "apply", "--to", dest, "--link")
    assert code == 2 and "to:" in err and "not empty" in err and listing(dest) == {"old.txt": b"an earlier tree"}
    code, out, err = cli(capsys, "labels", labelled.run, "apply", "--to", dest, "--link", "--overwrite")
    assert code == 0 and "linked 39 images" in out and "replacing" in out, err
    assert not (dest / "old.txt").exists()
    link = dest / "pug" / "sofa.jpg"
    assert link.is_symlink() and Path(os.readlink(link)) == labelled.tree / "pug" / "sofa.jpg"
    assert all(p.is_symlink() for p in dest.rglob("*.jpg")) and len(list(dest.rglob("*.jpg"))) == 39


BAD = [  # (arguments after RUN, the argument the message names, a text it holds)
    (["relabel", "/no/such.jpg", "--to", "husky"], "PATH", "no image"),
    (["relabel", "999", "--to", "husky"], "PATH", "row from 0 to 38"),
    (["keep", "0", "/no/such.jpg"], "PATH", "'/no/such.jpg'"),  # one good, one bad: nothing recorded
    (["relabel", "0", "--to", "  "], "to", "must not be empty"),
    (["relabel", "0", "--to", "a/b"], "to", "'/'"),
    (["undo"], "N", "nothing can be undone"),
    (["undo", "3"], "N", "only 1 action"),
    (["undo", "x"], "N", "whole number"),
    (["accept", "--top", "0"], "top", "1 or more"),
    (["accept", "--min-agreement", "2"], "min-agreement", "0 to 1"),
    (["accept", "--k", "0"], "k", ""),
    (["apply", "--to", "{tree}/beagle/out"], "to", "inside the run's source"),
    (["apply", "--to", "{tree}/.."], "to", "holds the run's source"),
    (["apply", "--to", "{run}/embeddings", "--overwrite"], "to", "inside the run folder"),
    (["apply", "--to", "{tmp}/dest"], "to", "not empty"),
    (["apply", "--to", "{tmp}/ro/tree"], "to", "cannot write"),
    (["apply", "--to", "s3://bucket/tree", "--link", "--s3-endpoint", "http://127.0.0.1:9"], "link", "local"),
    (["export", "{tmp}/dest"], "FILE", "is a folder"),
    (["export", "{tmp}/nowhere/x.csv"], "FILE", "does not exist"),
]


@pytest.mark.parametrize(("args", "field", "text"), BAD, ids=[" ".join(b[0][:2]) for b in BAD])
def test_bad_input_exits_2_naming_the_argument_and_changes_nothing(labelled, capsys, tmp_path, args, field, text):
    if args[0] == "undo" and args[-1] == "3":
        cli(capsys, "labels", labelled.run, "keep", "1")  # one action to undo, not three
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "mine.txt").write_text("keep me")
    (tmp_path / "ro").mkdir()
    args = [a.format(tree=labelled.tree, tmp=tmp_path, run=labelled.run) for a in args]
    def outside_the_run():  # the run folder gains a lock file beside its log, whatever happens
        return sorted(os.listdir(tmp_path)), [listing(tmp_path / name) for name in ("dest", "ro", "tree")]

    log, before = log_bytes(labelled.run), outside_the_run()
    with read_only(tmp_path / "ro"):
        code, out, err = cli(capsys, "labels", labelled.run, *args)
    assert code == 2, (out, err)
    assert err.startswith(f"error: {field}:") and text in err, err
    assert log_bytes(labelled.run) == log and outside_the_run() == before


def test_a_run_without_label_check_results_cannot_accept(tmp_path, capsys):
    bare = write_labelled_run(tmp_path, quality=False)
    code, _, err = cli(capsys, "labels", bare.run, "accept")
    assert code == 2 and err.startswith("error: run:") and "python -m doggos quality RUN" in err
    assert log_bytes(bare.run) is None


def test_an_unknown_run_is_named(tmp_path, capsys):
    code, _, err = cli(capsys, "labels", tmp_path / "missing", "show")
    assert code == 2 and err.startswith("error: run:")
    code, _, err = cli(capsys, "labels", "no-such-id", "--runs-dir", tmp_path, "show")
    assert code == 2 and err.startswith("error: run:") and "runs list" in err


def _record_many(run: str, rows: list[int], barrier) -> None:
    barrier.wait()  # every writer starts at once
    for row in rows:
        assert main(["labels", run, "exclude" if row % 2 else "keep", str(row)]) == 0


def test_concurrent_writers_lose_no_decision(labelled):
    writers, each = 4, 8
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    processes = [context.Process(target=_record_many,
                                 args=(str(labelled.run), list(range(w * each, (w + 1) * each)), barrier))
                 for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * writers
    lines = [json.loads(line) for line in decisions.log_path(labelled.run).read_bytes().splitlines()]
    assert len(lines) == writers * each
    assert sorted(line["seq"] for line in lines) == list(range(1, writers * each + 1))
    assert sorted(line["action"] for line in lines) == list(range(1, writers * each + 1))
    state = decisions.state(labelled.run)
    assert state.decisions == writers * each and len(state.effects) == writers * each


def test_show_json_end_to_end(labelled):
    assert main(["labels", str(labelled.run), "relabel", labelled.copy, "--to", "beagle"]) == 0
    result = subprocess.run([sys.executable, "-m", "doggos", "labels", str(labelled.run), "show", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (shown,) = json.loads(result.stdout)
    assert {k: shown[k] for k in ("path", "label", "new_label", "decision")} == {
        "path": labelled.copy, "label": "pug", "new_label": "beagle", "decision": "relabel"}
