"""Resuming a run whose driver was killed: the rows it wrote are kept, a block the kill cut short is redone, and the
resumed run publishes every image once, as an uninterrupted run would."""

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import wait_for
from imagegen import make_photo, write_image_tree

from doggos.base.config import RunConfig
from doggos.base.rundir import RunDir
from doggos.pipeline import models
from doggos.pipeline.embedder import Embedder, prepare_images
from doggos.runs.manager import RunManager, run_processes

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def base_clip(tmp_path_factory):
    from doggos.pipeline.demo import save_random_clip

    return str(save_random_clip(tmp_path_factory.mktemp("models") / "vit-b-32", preset="vit-b-32"))


def test_a_killed_run_resumes_from_its_rows_and_publishes_each_image_once(tmp_path, base_clip, monkeypatch):
    tree = tmp_path / "tree"
    write_image_tree(tree, per_label=40, labels=("akita", "boxer", "corgi"))
    # Each embedder actor gets its first block (30 files, 8 batches) through to the writer, then waits in its second
    # until the driver dies: the run is killed with rows written and others in flight.
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"embedding@10={tmp_path / 'never'}")
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(source=str(tree), model=base_clip, batch_size=4, projection=False, quality=False))
    run_dir = RunDir(manager.get(run_id).path)
    wait_for(lambda: len(list(run_dir.staging.glob("*.parquet"))) >= 2 or not manager.get(run_id).active, timeout_s=180)
    assert manager.get(run_id).state == "running", manager.log_tail(run_id)
    os.kill(manager.get(run_id).status.pid, signal.SIGKILL)  # as the OOM killer would
    killed = wait_for(lambda: (i := manager.get(run_id)).state != "running" and i, timeout_s=30)
    # How it died is known only to the process that reaped the driver (test_runs checks the wording): here, that it did.
    assert killed.state == "failed" and killed.resumable and "exited unexpectedly" in killed.error
    wait_for(lambda: run_processes(run_id) == [], timeout_s=30)
    kept = sorted(run_dir.kept.glob("*.parquet"))
    assert kept and not run_dir.staging.exists() and not run_dir.embeddings.exists()

    # A block the kill cut short: the file is there, its end is not. It must be redone, never published.
    cut = kept[0]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    whole = sum(pq.ParquetFile(f).metadata.num_rows for f in kept[1:])  # the rows a resume may keep
    # The source changed meanwhile: one image whose row was kept is gone, one new image came.
    gone = pq.read_table(kept[1], columns=["path"]).column(0)[0].as_py()
    os.unlink(gone)
    make_photo(7777).save(tree / "boxer" / "late.jpg", quality=90)

    monkeypatch.delenv("DOGGOS_TEST_HOLD")
    status = subprocess.run([sys.executable, "-m", "doggos", "runs", "--runs-dir", str(tmp_path / "runs"), "resume",
                             run_id], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and status.stdout.strip() == run_id, status.stderr
    info = manager.wait(run_id, RUN_TIMEOUT_S)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id, 60))
    listed = sorted(str(p) for p in tree.rglob("*.jpg"))
    table = pq.read_table(run_dir.embeddings).to_pandas()
    assert sorted(table["path"]) == listed  # no gap, no duplicate, nothing of the deleted file
    manifest = info.manifest
    assert manifest.rows == len(listed) and manifest.attempts == 2
    assert manifest.reused == whole - 1 and manifest.embedded == len(listed) - manifest.reused
    assert manifest.reused + manifest.embedded <= 1.1 * len(listed)
    assert "unfinished by the attempt before" in manager.log_tail(run_id, 200)
    assert not run_dir.kept.exists()
    story = info.story()
    assert story.startswith("killed at ") and f"reused {manifest.reused:,}" in story
    assert info.status.attempts[0]["fraction"] > 0

    # Parity: the published rows are the model's own vectors for those files, carried over or not.
    model = Embedder(base_clip)
    sample = table.sample(6, random_state=0)
    batch = {"path": sample["path"].to_numpy(), "class": sample["class"].to_numpy(),
             "bytes": np.array([open(p, "rb").read() for p in sample["path"]], dtype=object)}
    expected = model(prepare_images(batch, base_clip, 224)).column("embedding").to_numpy(zero_copy_only=False)
    for got, want in zip(sample["embedding"], expected):
        assert np.dot(got, want) / np.linalg.norm(got) / np.linalg.norm(want) >= 0.9999
    models.load_image_processor.cache_clear()
