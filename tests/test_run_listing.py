"""The sidebar's cached run listing (dashboard.frame.finished_runs over doggos.runs.manager.listing_stamp): listed once
per change of the runs folder, never stale after a run finishes, fails, is deleted or republished."""

from __future__ import annotations

import json
import shutil

import pytest

from dashboard import frame
from doggos.base.rundir import write_json_atomic
from doggos.runs.manager import listing_stamp
from tests._dashboard_fixtures import write_failed_run, write_fake_run


@pytest.fixture(autouse=True)
def fresh_cache():
    frame._finished_runs.clear()
    yield
    frame._finished_runs.clear()


def test_the_stamp_changes_with_every_run_and_record(tmp_path):
    assert listing_stamp(tmp_path / "missing") == ()
    first = write_fake_run(tmp_path, "20250101-120000-0001")
    one = listing_stamp(tmp_path)
    assert one == listing_stamp(tmp_path)  # nothing changed: the same stamp, so the cached listing stands
    write_failed_run(tmp_path, "20250101-130000-0002")
    two = listing_stamp(tmp_path)
    assert len(two) == 2 and two != one
    status = (first / "status.json").read_text(encoding="utf-8")
    write_json_atomic(first / "status.json", {"state": "running"})  # a driver's heartbeat: renamed over, new inode
    running = listing_stamp(tmp_path)
    assert running != two
    (first / "status.json").write_text(status, encoding="utf-8")  # rewritten in place: same inode, another size
    assert listing_stamp(tmp_path) != running


def test_finished_runs_are_listed_once_and_follow_every_change(tmp_path):
    assert frame.finished_runs(tmp_path) == {}
    write_fake_run(tmp_path, "20250101-120000-0001")
    write_failed_run(tmp_path, "20250101-130000-0002")
    listed = frame.finished_runs(tmp_path)
    assert list(listed) == ["20250101-120000-0001"]  # the failed run is not offered
    assert frame.finished_runs(tmp_path) is listed  # unchanged folder: the same listing, not read again

    newer = write_fake_run(tmp_path, "20250101-140000-0003")
    assert list(frame.finished_runs(tmp_path)) == ["20250101-140000-0003", "20250101-120000-0001"]  # newest first

    write_json_atomic(newer / "status.json", {"state": "failed", "error": "gone wrong"})
    assert list(frame.finished_runs(tmp_path)) == ["20250101-120000-0001"]

    shutil.rmtree(tmp_path / "20250101-120000-0001")
    assert frame.finished_runs(tmp_path) == {}


def test_a_republished_run_is_read_again(tmp_path):
    run = write_fake_run(tmp_path, "20250101-120000-0001")
    before = frame.finished_runs(tmp_path)["20250101-120000-0001"]
    manifest = (run / "manifest.json").read_text(encoding="utf-8")
    write_json_atomic(run / "manifest.json", {**json.loads(manifest), "rows": 1})  # a new manifest
    after = frame.finished_runs(tmp_path)["20250101-120000-0001"]
    assert after is not before and after.manifest.rows == 1
