"""The pieces of update and resume without Ray: the hash filter, carried-over rows, kept blocks checked before a
resume, the model fingerprint, reuse refusals, and the runs commands a script polls and resumes with."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import write_fake_run

from doggos.base.config import ConfigError, RunConfig
from doggos.base.records import update_status
from doggos.base.rundir import RunDir, write_json_atomic
from doggos.pipeline import models, reuse


def rows(paths, seed=0, dim=4) -> pa.Table:
    vectors = np.random.default_rng(seed).normal(size=(len(paths), dim)).astype(np.float32)
    return pa.table({
        "path": pa.array(paths, pa.string()), "class": pa.array([p.split("/")[-2] for p in paths], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        "thumbnail": pa.array([p.encode() for p in paths], pa.binary()),
        "width": pa.array([10] * len(paths), pa.int32()), "height": pa.array([20] * len(paths), pa.int32()),
        "content_hash": pa.array([hashlib.sha256(p.encode()).hexdigest() for p in paths], pa.string()),
    })


class Tracker:
    """A stand-in for the Ray tracker actor: `.remote` answers directly (skip_known waits only for ObjectRefs)."""

    def __init__(self):
        self.reused = []
        self.add_reused = type("Call", (), {"remote": lambda _, found: self.reused.extend(found)})()


def test_skip_known_passes_on_only_unknown_files_and_reports_the_rest():
    data = [b"old-a", b"new-b", b"old-c"]
    known = np.unique(np.array([hashlib.sha256(b).hexdigest() for b in (b"old-a", b"old-c", b"gone")], "S64"))
    batch = {"path": np.array(["/t/x/a.jpg", "/t/y/b.jpg", "/t/z/c.jpg"], dtype=object),
             "class": np.array(["x", "y", "z"], dtype=object), "bytes": np.array(data, dtype=object)}
    tracker = Tracker()
    out = reuse.skip_known(batch, [known], tracker)
    assert list(out["path"]) == ["/t/y/b.jpg"] and list(out["content_hash"]) == [hashlib.sha256(b"new-b").hexdigest()]
    assert sorted(p for p, _, _ in tracker.reused) == ["/t/x/a.jpg", "/t/z/c.jpg"]
    empty = reuse.skip_known(batch, [np.zeros(0, "S64")], tracker)  # nothing known: everything goes on
    assert len(empty["path"]) == 3


def test_carried_rows_keep_their_vectors_and_take_the_path_and_label_listed_now(tmp_path):
    old = rows(["/t/akita/a.jpg", "/t/boxer/b.jpg", "/t/corgi/c.jpg"])
    pq.write_table(old, tmp_path / "old.parquet")
    carry = reuse.Carry.of([tmp_path / "old.parquet"])
    assert len(carry.hashes) == 3
    hash_of = dict(zip(old.column("path").to_pylist(), old.column("content_hash").to_pylist()))
    reused = [("/t/akita/a.jpg", "akita", hash_of["/t/akita/a.jpg"]),
              ("/t/akita/moved-c.jpg", "akita", hash_of["/t/corgi/c.jpg"]),  # moved into another folder
              ("/t/dup/c2.jpg", "dup", hash_of["/t/corgi/c.jpg"])]  # a second copy of the same bytes
    assert reuse.write_carried(carry, reused, tmp_path / "out") == 3
    written = pq.read_table(tmp_path / "out").to_pandas().set_index("path")
    assert list(written.columns) == list(reuse.COLUMNS[1:])
    assert written.loc["/t/akita/moved-c.jpg", "class"] == "akita"
    assert written.loc["/t/akita/moved-c.jpg", "thumbnail"] == b"/t/corgi/c.jpg"  # the stored row's, carried
    assert np.allclose(written.loc["/t/dup/c2.jpg", "embedding"], old.column("embedding")[2].as_py())
    with pytest.raises(RuntimeError, match="1 reused rows are missing"):
        reuse.write_carried(carry, [("/t/x/new.jpg", "x", "f" * 64)], tmp_path / "other")


def test_a_resume_keeps_whole_blocks_and_deletes_cut_or_damaged_ones(tmp_path):
    run = RunDir(tmp_path / "run")
    run.staging.mkdir(parents=True)
    pq.write_table(rows(["/t/a/1.jpg", "/t/a/2.jpg"]), run.staging / "whole.parquet")
    pq.write_table(rows(["/t/a/3.jpg", "/t/a/4.jpg"]), run.staging / "cut.parquet")
    (run.staging / "cut.parquet").write_bytes((run.staging / "cut.parquet").read_bytes()[:300])
    pq.write_table(rows(["/t/a/5.jpg"]).drop(["content_hash"]), run.staging / "old-schema.parquet")
    assert reuse.keep_rows(run) == 3 and not run.staging.exists()
    good, bad = reuse.kept_files(run)
    assert [pq.read_table(f).num_rows for f in good] == [2]
    assert sorted(why.split(" ")[0] for _, why in bad) == ["lacks", "unreadable"]
    assert sorted(run.kept.glob("*.parquet")) == good  # the damaged ones are gone: never carried, never published


def test_the_fingerprint_follows_the_weights_bytes_not_the_folder(tiny_clip, tmp_path):
    copy = shutil.copytree(tiny_clip, tmp_path / "copy")
    assert models.fingerprint(tiny_clip) == models.fingerprint(str(copy))
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert models.fingerprint(str(copy)) != models.fingerprint(tiny_clip)
    assert models.fingerprint("org/not-in-the-cache") is None


def test_reuse_refuses_a_run_it_cannot_trust_naming_reuse(tmp_path):
    run = write_fake_run(tmp_path)  # no content hashes, no fingerprint: an older doggos's run
    key = {"model": "abc", "fp16": False, "thumbnail_size": 224}
    with pytest.raises(ConfigError, match="^reuse: run .* has no content hashes"):
        reuse.check_reusable(run, key)
    (run / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="^reuse: run .* has not succeeded"):
        reuse.check_reusable(run, key)
    with pytest.raises(ConfigError, match="^reuse: no run folder"):
        reuse.check_reusable(tmp_path / "missing", key)


def fake_run(root, run_id, state, **status):
    run = RunDir(root / run_id)
    run.path.mkdir(parents=True)
    write_json_atomic(run.config, RunConfig(source="/data/dogs", output=str(run.path)).to_dict())
    update_status(run, state=state, **status)
    return run


def doggos(*args):
    return subprocess.run([sys.executable, "-m", "doggos", *args], capture_output=True, text=True, timeout=60)


def test_runs_status_and_list_print_records_a_script_can_poll(tmp_path):
    fake_run(tmp_path, "20260101-000000-0001-aa", "failed", error="the driver process exited unexpectedly (killed)",
             progress={"found": 100, "embedded": 40, "reused": 12, "failed": 1, "phase": "embedding"},
             attempts=[{"ended_at": "x", "error": "killed", "found": 100, "embedded": 12, "reused": 0,
                        "fraction": 0.12}])
    status = doggos("runs", "--runs-dir", str(tmp_path), "status", "20260101-000000-0001-aa", "--json")
    record = json.loads(status.stdout)
    assert status.returncode == 0 and record["state"] == "failed" and record["resumable"] is True
    assert record["progress"] | {} == {"found": 100, "embedded": 40, "reused": 12, "failed": 1, "phase": "embedding",
                                       "fraction": 0.53}
    assert record["pid"] is None and record["summary"] is None and "killed" in record["error"]
    assert record["attempts"][0]["fraction"] == 0.12
    listed = json.loads(doggos("runs", "--runs-dir", str(tmp_path), "list", "--json").stdout)
    assert [r["id"] for r in listed] == ["20260101-000000-0001-aa"]
    text = doggos("runs", "--runs-dir", str(tmp_path), "status", "20260101-000000-0001-aa").stdout
    assert "resumable" in text and "history: failed at 12 %, resumed" in text


@pytest.mark.parametrize("state, message", [
    ("succeeded", "succeeded: there is nothing to resume"),
    ("cancelled", "was cancelled, and a cancelled run keeps nothing"),
])
def test_resume_refuses_a_run_that_did_not_fail(tmp_path, state, message):
    fake_run(tmp_path, "20260101-000000-0002-bb", state)
    result = doggos("runs", "--runs-dir", str(tmp_path), "resume", "20260101-000000-0002-bb")
    assert result.returncode == 2 and f"error: run: run 20260101-000000-0002-bb {message}" in result.stderr
    assert json.loads((tmp_path / "20260101-000000-0002-bb" / "status.json").read_text())["state"] == state


def test_an_update_into_the_folder_it_reuses_is_refused(tmp_path):
    from doggos.pipeline import preflight

    run = write_fake_run(tmp_path)
    with pytest.raises(ConfigError) as refused:
        preflight.check(RunConfig(source=str(tmp_path), output=str(run), reuse=str(run)))
    assert refused.value.errors["reuse"].startswith("is the output folder itself")


def test_a_hub_model_is_fingerprinted_by_its_cached_snapshot(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--org--clip" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--clip" / "refs").mkdir()
    (tmp_path / "models--org--clip" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert models.fingerprint("org/clip") == "hub:org/clip@0123abcd"  # the commit fixes the weights: none hashed


def test_a_fresh_start_that_fails_keeps_no_rows_of_the_run_it_replaces(tmp_path):
    """`embed --overwrite` with another model that then fails: the old rows must not wait in kept/ for a resume."""
    from doggos.runs import driver

    run = write_fake_run(tmp_path)
    with pytest.raises(ConfigError, match="^source: "):
        driver.run(RunConfig(source=str(tmp_path / "gone"), output=str(run)))
    assert not list(RunDir(run).kept.glob("*.parquet")) and not RunDir(run).embeddings.exists()
