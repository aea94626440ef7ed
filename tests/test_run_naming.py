"""One name per run (issue 25 item 5): every command takes a run's id, a part of it only that run has, or its
readable name; an ambiguous name lists the candidates and exits 2."""

from __future__ import annotations

import json

import pytest
from _dashboard_fixtures import write_failed_run, write_fake_run

from doggos.base.config import ConfigError
from doggos.cli import main
from doggos.runs.manager import RunManager, resolve_run

FIRST = "20261202-145918-178957-d6"  # two runs of one source in one minute, and an older one
SECOND = "20261202-145947-002311-a1"
OLDER = "20261101-090000-000001-0f"


@pytest.fixture
def three_runs(tmp_path):
    root = tmp_path / "runs"
    for run_id in (FIRST, SECOND, OLDER):
        write_fake_run(root, run_id, source="/data/digits")
    return root


def test_the_readable_name_is_the_dashboards():
    from dashboard import ui
    from doggos.runs import naming

    assert naming.readable_name(FIRST, "/data/digits/") == "digits · 2 Dec 14:59:18"
    assert naming.readable_name("odd-id", None) == "? · odd-id"

    class Run:  # ui.run_name keeps working, as an alias
        id, config = FIRST, type("C", (), {"source": "s3://bucket/digits"})()

    assert ui.run_name(Run()) == "digits · 2 Dec 14:59:18"


@pytest.mark.parametrize("text, expected", [
    (FIRST, FIRST),  # the whole id
    ("145918", FIRST),  # a piece from the middle only one id has
    ("20261202-14594", SECOND),  # a prefix
    ("digits · 2 Dec 14:59:47", SECOND),  # the readable name, as shown
    ("  DIGITS 2 dec 14:59:47 ", SECOND),  # case, spaces and the '·' do not matter
    ("digits · 2 Dec 14:59:47 · 27 images", SECOND),  # as the sidebar shows it
    ("digits 1 nov", OLDER),  # the start of a readable name only one run has
    ("DIGITS · 2 Dec 14:59:4", SECOND),
])
def test_pick_takes_the_id_a_part_of_it_or_the_name(three_runs, text, expected):
    from doggos.runs import naming

    assert naming.pick(text, naming.runs_under(three_runs)) == expected
    assert RunManager(three_runs).resolve(text) == expected


def test_pick_lists_every_candidate_of_an_ambiguous_name_and_says_when_none_fits(three_runs):
    from doggos.runs import naming

    runs = naming.runs_under(three_runs)
    with pytest.raises(ConfigError) as raised:
        naming.pick("20261202", runs)
    message = str(raised.value)
    assert message.startswith("run: '20261202' could be 2 runs")
    assert f"{FIRST}  (digits · 2 Dec 14:59:18)" in message and f"{SECOND}  (digits · 2 Dec 14:59:47)" in message
    assert OLDER not in message
    with pytest.raises(ConfigError, match=r"^run: no run '999999': not a run's id, part of one, or a run's name"):
        naming.pick("999999", runs)


def test_the_start_of_a_readable_name_names_a_run_and_an_ambiguous_one_lists_the_candidates(three_runs, capsys):
    """The issue: "an unambiguous prefix of the id or the readable name"; "digits" and "digits · 2 Dec 14:59" said
    "no run". Ids come first: a part of an id wins over the start of a name."""
    from doggos.runs import naming

    runs = naming.runs_under(three_runs)
    assert [run.id for run in naming.matches("digits · 2 Dec 14:59", runs)] == [SECOND, FIRST]  # newest first
    assert [run.id for run in naming.matches("digits", runs)] == [SECOND, FIRST, OLDER]
    assert naming.matches("dogs", runs) == []
    assert main(["runs", "--runs-dir", str(three_runs), "status", "digits · 2 Dec 14:59"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run: 'digits · 2 Dec 14:59' could be 2 runs") and FIRST in err and SECOND in err
    assert OLDER not in err
    assert main(["runs", "--runs-dir", str(three_runs), "status", "digits 1 Nov", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == OLDER


def test_the_reuse_option_says_it_takes_a_run_named_as_every_command_takes_one():
    """`--reuse` said "folder or id" after it took a part of the id and the name as every command does."""
    from doggos.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    starts = [commands["embed"], commands["runs"]._subparsers._group_actions[0].choices["start"]]
    for parser in starts:
        reuse = next(action for action in parser._actions if "--reuse" in action.option_strings)
        assert "folder or id" not in reuse.help and "a part of the id" in reuse.help and "start of it" in reuse.help


def test_runs_commands_take_a_part_of_the_id_or_the_name(three_runs, capsys):
    assert main(["runs", "--runs-dir", str(three_runs), "status", "145918", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == FIRST
    assert main(["runs", "--runs-dir", str(three_runs), "status", "digits · 1 Nov 09:00:00", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["id"] == OLDER and record["name"] == "digits · 1 Nov 09:00:00"
    assert main(["runs", "--runs-dir", str(three_runs), "delete", "145947"]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {SECOND}" and not (three_runs / SECOND).exists()


def test_an_ambiguous_run_exits_2_listing_the_candidates_and_an_unknown_one_exits_2(three_runs, capsys):
    assert main(["runs", "--runs-dir", str(three_runs), "status", "20261202"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run: '20261202' could be 2 runs") and FIRST in err and SECOND in err
    assert "digits · 2 Dec 14:59:18" in err
    assert main(["runs", "--runs-dir", str(three_runs), "cancel", "nothing-like-it"]) == 2
    assert "no run 'nothing-like-it'" in capsys.readouterr().err
    assert (three_runs / FIRST).exists() and (three_runs / SECOND).exists()  # nothing was touched


def test_runs_list_shows_each_runs_name_beside_its_id(three_runs, capsys):
    assert main(["runs", "--runs-dir", str(three_runs), "list"]) == 0
    assert f"{FIRST}  digits · 2 Dec 14:59:18  succeeded" in capsys.readouterr().out


def test_resolve_run_behind_search_quality_labels_compare_and_reuse_takes_names_too(three_runs, capsys):
    assert resolve_run("145918", three_runs).path == three_runs / FIRST
    assert resolve_run("digits · 2 Dec 14:59:47", three_runs).path == three_runs / SECOND
    assert resolve_run(str(three_runs / OLDER), three_runs).path == three_runs / OLDER  # a folder still works
    with pytest.raises(ConfigError, match=r"^reuse: '2026' could be 3 runs") as raised:
        resolve_run("2026", three_runs, field="reuse")
    assert OLDER in str(raised.value)
    write_failed_run(three_runs, "20261203-100000-000000-ff")
    with pytest.raises(ConfigError, match="failed: only a run that succeeded"):  # found, then checked as before
        resolve_run("100000", three_runs)
    # Through the CLI: search by a part of the id; compare by two names; an ambiguous name exits 2.
    assert main(["search", "145918", "--runs-dir", str(three_runs), "--row", "0", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["compare", "145918", "digits 2 Dec 14:59:47", "--runs-dir", str(three_runs), "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "2026", "--runs-dir", str(three_runs), "--row", "0"]) == 2
    assert "could be 4 runs" in capsys.readouterr().err


# ---- the dashboard shows the id, copyable, beside the name ---------------------------------------------------------

@pytest.mark.usefixtures("every_run_goes_through_app_py")
def test_history_shows_the_run_id_beside_the_name_and_the_tail_of_a_long_source(runs_root):
    from _dashboard_fixtures import open_page

    long_source = "/mnt/shared/datasets/workshop-2026/partner-upload-batch-17/train/border_collies"
    write_fake_run(runs_root, FIRST, source=long_source)
    at = open_page("pages/run.py")
    table = at.dataframe[0].value
    assert list(table.columns)[:2] == ["run", "id"] and list(table["id"]) == [FIRST]  # not last, cut off
    source = table["source"][0]
    assert source.startswith("…") and source.endswith("/train/border_collies") and len(source) <= 40
    columns = json.loads(at.dataframe[0].proto.columns)
    assert columns["id"]["label"] == "Run id" and "part" in columns["id"]["help"]


@pytest.mark.usefixtures("every_run_goes_through_app_py")
def test_summary_shows_the_run_id_as_a_copyable_code_block(runs_root):
    from _dashboard_fixtures import open_page, unescape_markdown

    write_fake_run(runs_root, FIRST, source="/data/digits")
    at = open_page("pages/summary.py")
    assert FIRST in [c.value for c in at.code]  # st.code: a copy button
    assert any("digits · 2 Dec 14:59:18" in unescape_markdown(c.value) for c in at.caption)
