"""base.records: typed status and manifest, read back as written; older records open; newer or damaged ones say why."""

import json

import pytest
from _dashboard_fixtures import write_fake_run

from doggos.base.records import (SCHEMA_VERSION, Manifest, Progress, RayInfo, RecordError, read_manifest, read_status,
                                 update_status)
from doggos.base.rundir import RunDir


@pytest.fixture
def run(tmp_path):
    return RunDir(write_fake_run(tmp_path, labels={"a": 3, "b": 2}))


def test_a_manifest_reads_back_as_written(run):
    manifest = read_manifest(run)
    assert isinstance(manifest, Manifest) and manifest.schema == SCHEMA_VERSION
    assert (manifest.rows, manifest.labels, manifest.embedding_dim) == (5, 2, 16)
    assert manifest.config.source == "/data/dogs" and manifest.plan.batch_size == 16
    assert manifest.ray.embedded_by_node == {"6617a69d49e9c88fe0003427": 27} and manifest.map_s == 10.0
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def test_a_schema_1_manifest_still_opens(run):
    """Runs written before the records module: the same keys, no schema, the map's time as projection_s."""
    data = json.loads(run.manifest.read_text())
    for key in ("schema", "embed_s", "steps"):
        del data[key]
    data["projection_s"] = 4.5
    del data["plan"]["decode_in_actor"]  # older plans lacked it
    run.manifest.write_text(json.dumps(data))
    manifest = read_manifest(run)
    assert manifest.steps == {"map": 4.5} and manifest.embed_s is None and manifest.rows == 5


def test_newer_or_damaged_manifests_say_why(run):
    data = json.loads(run.manifest.read_text())
    run.manifest.write_text(json.dumps(dict(data, schema=SCHEMA_VERSION + 1)))
    with pytest.raises(RecordError, match=r"written by a newer doggos .*upgrade doggos"):
        read_manifest(run)
    run.manifest.write_text(json.dumps({k: v for k, v in data.items() if k != "rows"}))
    with pytest.raises(RecordError, match=f"run {run.id} cannot be opened: its manifest.json lacks rows"):
        read_manifest(run)
    run.manifest.write_text("{half a file")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_manifest(run)
    run.manifest.unlink()
    assert read_manifest(run) is None  # no manifest yet: an unfinished run, not an error


def test_a_run_that_cannot_be_opened_shows_why_in_the_history(run):
    from doggos.runs.manager import RunManager

    run.manifest.write_text(json.dumps({"schema": 99}))
    info = RunManager(run.path.parent).get(run.id)
    assert info.manifest is None and "newer doggos" in info.error


def test_status_updates_merge_typed_fields(tmp_path):
    run = RunDir(tmp_path / "r")
    status = update_status(run, state="running", progress=Progress(found=4, phase="listing"))
    assert status.state == "running" and status.active and status.progress.found == 4
    status = update_status(run, progress=Progress(found=4, embedded=2, phase="embedding"))
    assert read_status(run) == status and status.state == "running" and status.progress.embedded == 2
    with pytest.raises(TypeError, match="not RunStatus fields"):
        update_status(run, stat="typo")


def test_a_legacy_tick_count_start_time_is_ignored(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.status.write_text(json.dumps({"state": "running", "pid": 1, "pid_start": "12345"}))
    assert read_status(run).pid_start is None


def test_work_by_node_names_each_node_busiest_first():
    assert RayInfo(embedded_by_node={"6446086d9b8c95": 6, "6617a69d49e9c8": 1800}).work_by_node() == \
        "2 nodes: 6617a69d 1,800 images, 6446086d 6 images"
    assert RayInfo(embedded_by_node={"ab12cd34ef": 3}).work_by_node() == "1 node: ab12cd34 3 images"
    assert RayInfo().work_by_node() == "not recorded"  # runs from before the count existed
