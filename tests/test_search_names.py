"""Picking a run's image by file name (issue 25 item 9): the names the Search page offers and `search --name`."""

from __future__ import annotations

import json

import pytest
from _dashboard_fixtures import write_fake_run

from doggos.cli import main
from doggos.explore import search
from doggos.explore.search import SearchError

PATHS = ["/d/beagle/1.jpg", "/d/husky/1.jpg", "/d/beagle/2.jpg", "/x/pug/3.jpg", "/y/pug/3.jpg"]


def test_names_are_file_names_and_label_slash_name_where_two_labels_share_one():
    files, folders = search.names_of_paths(PATHS)
    assert files == ["1.jpg", "1.jpg", "2.jpg", "3.jpg", "3.jpg"] and folders[:2] == ["beagle", "husky"]
    assert search.image_names(files, folders) == ["beagle/1.jpg", "husky/1.jpg", "2.jpg", "pug/3.jpg (row 3)",
                                                  "pug/3.jpg (row 4)"]  # unique: each maps back to its row


@pytest.mark.parametrize("name, row", [("2.jpg", 2), ("husky/1.jpg", 1), ("/d/beagle/1.jpg", 0),
                                       ("pug/3.jpg (row 4)", 4), (" 2.jpg ", 2)])
def test_row_of_name_takes_a_file_name_label_slash_name_or_the_path(name, row):
    assert search.row_of_name(PATHS, name) == row


def test_a_shared_or_unknown_name_says_which_to_give():
    with pytest.raises(SearchError, match=r"^name: 2 images are named '1.jpg': give one as it is listed "
                                          r"\('beagle/1.jpg', 'husky/1.jpg'\)"):
        search.row_of_name(PATHS, "1.jpg")
    with pytest.raises(SearchError, match="^name: no image of this run is named 'nope.jpg'"):
        search.row_of_name(PATHS, "nope.jpg")


def test_the_search_command_takes_a_name(tmp_path, capsys):
    run = write_fake_run(tmp_path, "20250101-120000-0001", dim=16)
    assert main(["search", str(run), "--name", "beagle-0005.jpg", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    by_row = main(["search", str(run), "--row", "5", "-k", "3", "--json"])
    assert by_row == 0 and hits == json.loads(capsys.readouterr().out)
    assert main(["search", str(run), "--name", "nope.jpg"]) == 2
    assert "error: name: no image of this run is named 'nope.jpg'" in capsys.readouterr().err
