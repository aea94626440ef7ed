"""Issue 25, items 7 and 8: words and units read the same on every screen (doggos.base.units), and nothing a page
shows needs an emoji font. Each test here names the instance the newcomer saw."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
from _dashboard_fixtures import RAY_STATS, open_page, precompute_quality, write_fake_run

from doggos.base import store
from doggos.base.records import read_manifest, write_manifest
from doggos.base.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RUN_A = "20250101-120000-0001"
RUN_B = "20250102-120000-0002"

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why


def quality_report(labels: int = 1, suspects: int = 0, listed_suspects: int = 0, pairs: int = 0,
                   listed_pairs: int = 0) -> dict:
    """A `quality --json` report (quality_step.report_json's layout) with these counts, the lists cut as --top does."""
    return {
        "counts": {"images": 30, "labels": labels, "likely_mislabeled": suspects, "strongest_suspects": 0,
                   "exact_duplicate_pairs": pairs, "near_duplicate_pairs": 0, "cross_label_duplicate_pairs": 0},
        "zero_shot": {"available": True, "accuracy": 0.2767, "reason": None},
        "suspects": [{"agreement": 0.2, "class": "a", "suggested": "b", "zero_shot": None, "path": f"/x/{i}.png"}
                     for i in range(listed_suspects)],
        "duplicates": [{"kind": "exact", "similarity": 1.0, "cross_label": False, "paths": [f"/x/{i}", f"/y/{i}"]}
                       for i in range(listed_pairs)],
        "labels": [{"label": "a", "purity": 0.2767, "images": 30, "confused_with": None}],
    }


# ---- "1 labels" ------------------------------------------------------------------------------------------------------

def test_one_label_is_one_label_in_the_cli_and_on_browse(runs_root):
    from doggos.cli import quality_text
    from doggos.runs.commands import summary

    assert quality_text(quality_report(labels=1)).startswith("30 images, 1 label: ")
    run = write_fake_run(runs_root, RUN_A, labels={"beagle": 3})
    manifest = dataclasses.replace(read_manifest(RunDir(run)), labels=1)
    assert summary(manifest).splitlines()[0].endswith("images/s, start to Parquet), 1 label")
    at = open_page("pages/browse.py")
    assert at.multiselect(key="browse_labels").placeholder == "All 1 label"
    assert any("from 1 label ·" in c.value for c in at.caption)


# ---- "label agreement, suspects and duplicates shows the mechanics" --------------------------------------------------

def test_the_random_weights_warning_agrees_with_what_it_names(runs_root):
    from dashboard import ui

    assert "the ranking shows the mechanics, but carries no meaning" in ui.random_weights_text("the ranking")
    assert ("suspects and duplicates show the mechanics, but carry no meaning"
            in ui.random_weights_text("suspects and duplicates", many=True))
    precompute_quality(write_fake_run(runs_root, RUN_A))
    warnings = [w.value for w in open_page("pages/quality.py").warning]
    assert any("label agreement, suspects and duplicates show the mechanics, but carry no meaning" in w
               for w in warnings), warnings


# ---- purity: "27.67 %" on Quality, "0.230" on Compare ----------------------------------------------------------------

def column_formats(frame) -> dict[str, str | None]:
    """A shown dataframe's column → its display format (st.column_config's), as the browser gets it."""
    columns = json.loads(frame.proto.columns or "{}")
    return {name: (config.get("type_config") or {}).get("format") for name, config in columns.items()}


def test_a_share_reads_the_same_on_quality_and_compare(runs_root):
    from doggos.base import units
    from doggos.explore import compare

    precompute_quality(write_fake_run(runs_root, RUN_A))
    write_fake_run(runs_root, RUN_B, seed=4)
    quality = open_page("pages/quality.py", current_run_id=RUN_A)
    labels = next(d for d in quality.dataframe if "purity" in d.value.columns)
    assert column_formats(labels)["purity"] == column_formats(labels)["zero-shot accuracy"] == units.SHARE_COLUMN
    assert labels.value["purity"].between(0, 100).all() and labels.value["purity"].max() > 1  # percents

    at = open_page("pages/compare.py")
    found = compare.agreement(runs_root / RUN_A, runs_root / RUN_B)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Label purity · A"].value == units.share(found.overall_purity_a)
    assert metrics["Label purity · A"].value.endswith(" %") and metrics["Neighbour overlap"].value.endswith(" %")
    points = units.points(found.overall_purity_b - found.overall_purity_a)
    assert metrics["Label purity · B"].delta == ("" if points == "±0 points" else points)  # no change: no arrow
    per_label = next(d for d in at.dataframe if "purity_a" in d.value.columns)
    assert {column_formats(per_label)[c] for c in ("purity_a", "purity_b", "overlap")} == {units.SHARE_COLUMN}
    shown = per_label.value.set_index("label")["purity_a"]
    assert shown.to_dict() == pytest.approx({k: 100 * v for k, v in found.label_purity("a").items()})
    text = compare.format_comparison(compare.compare_runs(runs_root / RUN_A, runs_root / RUN_B))
    assert f"neighbour overlap: {units.share(found.neighbour_overlap)}" in text


def test_zero_shot_accuracy_reads_the_same_in_doggos_quality_and_on_the_quality_page(runs_root, capsys):
    """`doggos quality` printed "27.7 %" where the page showed "28 %": both now write a share as `units.share` does
    by default (whole percents), as every other share on every screen."""
    import numpy as np

    from doggos.base import units
    from doggos.cli import main
    from doggos.explore.quality import DEFAULT_PARAMS, ZeroShot, assess, label_names
    from doggos.explore.quality_step import write_results

    run = write_fake_run(runs_root, RUN_A)
    vectors, meta = store.load_embeddings(run)
    labels = meta["label"].tolist()
    names = label_names(labels)
    right = [names.index(label) for label in labels]
    guesses = np.array([code if i < 10 else (code + 1) % len(names) for i, code in enumerate(right)])  # 10 of 27
    results = assess(vectors, labels, meta["path"].tolist(), DEFAULT_PARAMS, backend="numpy",
                     zero_shot_result=ZeroShot(guesses, np.full(len(guesses), 0.9)))
    write_results(RunDir(run).quality, DEFAULT_PARAMS, results)
    shown = {m.label: m.value for m in open_page("pages/quality.py").metric}["Zero-shot accuracy"]
    assert shown == units.share(10 / 27) == "37 %"
    assert main(["quality", RUN_A, "--runs-dir", str(runs_root)]) == 0
    assert f"zero-shot: accuracy {shown}\n" in capsys.readouterr().out


# ---- Summary: "Write … Rows out 10" beside 300 images written --------------------------------------------------------

def test_the_write_operator_counts_the_rows_it_wrote_and_its_files_apart(runs_root):
    operators = store.parse_operator_stats(RAY_STATS)
    assert [(o["name"], o["rows"], o["files"]) for o in operators] == [
        ("ReadBinary", 300, None), ("Map(add_label)->MapBatches(prepare_images)->MapBatches(Embedder)", 300, None),
        ("Write", 300, 4)]
    newer = RAY_STATS.replace("* Output num rows per block: 1 min, 1 max, 1 mean, 4 total",  # Ray ≥ 2.5x: says it
                              "* Output num rows per block: 1 min, 1 max, 1 mean, 4 total\n"
                              "* Operator throughput:\n\t* Total input num rows: 299 rows")
    assert store.parse_operator_stats(newer)[2]["rows"] == 299
    write_fake_run(runs_root, RUN_A)
    at = open_page("pages/summary.py")
    shown = next(d for d in at.dataframe if "tasks" in d.value.columns)
    assert list(shown.value["rows"]) == [300, 300, 300] and list(shown.value["files"])[2] == 4
    assert json.loads(shown.proto.columns)["rows"]["label"] == "Rows"
    assert "rows_out" not in shown.proto.column_order  # Ray's "rows out" of a write (its files) is not shown


# ---- `doggos quality` printing an empty "duplicates:" heading --------------------------------------------------------

@pytest.mark.parametrize("listed", [0, 1, 3])
def test_quality_text_heads_only_the_lines_that_follow_and_agrees_with_its_counts(listed):
    from doggos.cli import quality_text

    lines = quality_text(quality_report(labels=2, suspects=3, listed_suspects=listed, pairs=3,
                                        listed_pairs=listed)).splitlines()
    for what in ("suspects", "duplicates"):
        heading = next(i for i, line in enumerate(lines) if line.startswith(what))
        assert lines[heading] != f"{what}: none", "3 were found: the counts line says so"
        if lines[heading].endswith(":"):  # a heading: lines follow it, and it says how many of how many
            assert all(line.startswith("  ") for line in lines[heading + 1:heading + 1 + listed]) and listed
            assert ("of 3" in lines[heading]) == (listed < 3)
        else:
            assert lines[heading] == f"{what}: 3 found, none listed (--top)" and not listed
    nothing = quality_text(quality_report(labels=2)).splitlines()
    assert "suspects: none" in nothing and "duplicates: none" in nothing


# ---- "1 min 06 s" in History and "1 min 07 s" in Compare -------------------------------------------------------------

def test_a_runs_duration_reads_the_same_in_history_summary_and_compare(runs_root):
    from dashboard import ui
    from doggos.explore import compare
    from doggos.runs.manager import RunManager

    run = write_fake_run(runs_root, RUN_A)
    # The status's timestamps say 66.4 s, the manifest (the driver's clock) 66.5 s: rounded apart before.
    status = json.loads((run / "status.json").read_text())
    status.update(started_at="2025-01-01T12:00:01+00:00", ended_at="2025-01-01T12:01:07.400000+00:00")
    (run / "status.json").write_text(json.dumps(status))
    write_manifest(RunDir(run), dataclasses.replace(read_manifest(RunDir(run)), duration_s=66.5))
    info = RunManager().get(RUN_A)
    assert info.duration_s == 66.5
    assert ui.history_rows([info])[0]["duration"] == "1 min 07 s"  # doggos.base.units.duration(66.5)
    assert "duration:   A 1 min 07 s" in compare.format_comparison(compare.compare_runs(run, run))
    assert {m.label: m.value for m in open_page("pages/summary.py").metric}["Duration"] == "1 min 07 s"


def test_the_run_rate_has_one_name_and_one_value_on_every_screen(runs_root):
    """Issue 25: the same rate was "Images/s (embedding)" in History, "while embedding" in Compare and the CLI, and
    "whole run" (which takes in the post-run steps it leaves out) on the Summary."""
    from dashboard import ui
    from doggos.explore import compare
    from doggos.pipeline import figures
    from doggos.runs.commands import summary
    from doggos.runs.manager import RunManager

    run = write_fake_run(runs_root, RUN_A)
    manifest = dataclasses.replace(read_manifest(RunDir(run)), images_per_s=14.04)
    write_manifest(RunDir(run), manifest)
    assert ui.history_rows(RunManager().list())[0]["images/s"] == "14.0"
    assert {m.label: m.value for m in open_page("pages/summary.py").metric}[figures.RUN_RATE] == "14.0"
    assert "throughput: A 14.0, B 14.0 images/s (start to Parquet)" in compare.format_comparison(
        compare.compare_runs(run, run))
    assert "(14.0 images/s, start to Parquet)" in summary(manifest)
    pages = {path: (ROOT / path).read_text() for path in ("pages/run.py", "pages/compare.py", "pages/summary.py")}
    assert all("figures.RUN_RATE" in text for text in pages.values())  # History's column, Compare's and Summary's
    assert not any("while embedding" in text or "Images/s (" in text for text in pages.values())


# ---- one formatter, everywhere ---------------------------------------------------------------------------------------

# What people read: the pages, the dashboard's helpers, and the CLI's printing.
SHOWN = ["app.py", "pages/*.py", "dashboard/*.py", "doggos/cli.py", "doggos/runs/commands.py",
         "doggos/runs/manager.py", "doggos/runs/naming.py", "doggos/base/records.py", "doggos/explore/compare.py",
         "doggos/explore/label_commands.py", "doggos/explore/label_review.py", "doggos/explore/search.py",
         "doggos/explore/map_carry.py"]
# A number format in an f-string: thousands (","), decimals (".1f", ".0%"), a sign ("+"); alignment ("<20") is fine.
NUMBER_FORMAT = re.compile(r"[,_%+]|\.\d|[eEfFgGd]$")
NOT_SHOWN = {  # (file, expression): formats that are data, not display
    ("dashboard/quality_view.py", "s['agreement']"),  # the suspects CSV: a worklist for tools, full precision
    ("dashboard/quality_view.py", "d['similarity']"),  # the duplicates CSV
    ("doggos/explore/search.py", "hit.score"),  # the hits CSV
}


def number_formats(path: Path) -> list[tuple[int, str, str]]:
    """(line, expression, format) of each f-string field in `path` that formats a number itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            spec = "".join(part.value for part in node.format_spec.values if isinstance(part, ast.Constant))
            if NUMBER_FORMAT.search(spec):
                found.append((node.lineno, ast.unparse(node.value), spec))
    return found


def test_every_number_people_read_goes_through_units():
    """Counts, durations, rates and shares on screen and in the CLI come from doggos.base.units (one rounding, one
    unit, '1 label'), never an f-string's own format; Vega-Lite's "format" in chart specs is the browser's and fine."""
    ad_hoc = [f"{path.relative_to(ROOT)}:{line}: {{{expression}:{spec}}}"
              for pattern in SHOWN for path in sorted(ROOT.glob(pattern))
              for line, expression, spec in number_formats(path)
              if (path.relative_to(ROOT).as_posix(), expression) not in NOT_SHOWN]
    assert not ad_hoc, "use doggos.base.units (count, duration, rate, share, score) for:\n" + "\n".join(ad_hoc)
    percent_columns = [f"{path.relative_to(ROOT)}" for pattern in SHOWN for path in sorted(ROOT.glob(pattern))
                       if re.search(r"""format=["']percent["']""", path.read_text(encoding="utf-8"))]
    assert not percent_columns, "a column of shares: units.percent values with format=units.SHARE_COLUMN"


def test_the_scan_finds_an_ad_hoc_format(tmp_path):
    page = tmp_path / "page.py"
    page.write_text('rate = 2.5\nx = f"{rate:.1f} images/s, {3000:,} images, {0.5:.0%}, {name:<20}"\n')
    assert [spec for _, _, spec in number_formats(page)] == [".1f", ",", ".0%"]


# ---- without emoji ---------------------------------------------------------------------------------------------------

EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2300-\u23FF\u2600-\u27BF\u2B00-\u2BFF\uFE0F]")


def shown_strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of `path` that may reach a screen: not docstrings, not the state icons (helper CANCEL's
    dashboard.ui.STATE_ICONS, which put the word first)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstrings
            skipped.add(id(node.value))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "STATE_ICONS" for t in node.targets):
            skipped.update(id(n) for n in ast.walk(node.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped]


def test_the_app_shows_no_emoji_that_needs_an_emoji_font():
    """Debian's chromium has no emoji font: an emoji draws as an empty box. Icons come from Streamlit's Material
    Symbols font (":material/pets:")."""
    found = [f"{path.relative_to(ROOT)}:{line}: {text!r}" for pattern in ("app.py", "pages/*.py", "dashboard/*.py")
             for path in sorted(ROOT.glob(pattern)) for line, text in shown_strings(path) if EMOJI.search(text)]
    assert not found, "\n".join(found)


def test_the_sidebar_title_reads_without_an_emoji_font(runs_root):
    at = open_page("pages/run.py")
    assert at.sidebar.markdown[0].value == "### :material/pets: doggos"
