"""The real pipeline through Ray on generated images and a tiny random CLIP: rows, labels, dimension, parity."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from imagegen import write_image_tree
from reference import cosine, reference_embeddings

from doggos.base import store
from doggos.base.config import RunConfig
from doggos.base.records import read_status
from doggos.base.rundir import RunDir, read_json
from doggos.pipeline import dataset
from doggos.pipeline.sources import label_of, list_images, open_source
from doggos.runs import driver

pytestmark = pytest.mark.ray


def read_table(run_dir: RunDir) -> pa.Table:
    return pq.read_table(run_dir.embeddings).sort_by("path")


def test_embeds_every_image_with_its_label_and_the_models_own_vectors(ray_session, image_tree, tiny_clip, tmp_path):
    root, labels = image_tree
    seen = []
    config = RunConfig(projection=False, quality=False, source=str(root), output=str(tmp_path / "run"), model=tiny_clip, batch_size=5)
    manifest = driver.run(config, on_progress=seen.append)

    table = read_table(RunDir(config.output))
    assert table.num_rows == len(labels) == manifest.rows == manifest.found
    assert dict(zip(table.column("path").to_pylist(), table.column("class").to_pylist())) == labels
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert manifest.embedding_dim == 32 and manifest.failed == 0 and manifest.labels == 3
    embeddings = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = reference_embeddings(tiny_clip, table.column("path").to_pylist())
    assert cosine(embeddings, expected).min() >= 0.9999

    # Progress only grows and ends at the total; the manifest and status agree the run succeeded.
    done = [p.embedded + p.failed for p in seen]
    assert done == sorted(done) and seen[-1].embedded == len(labels) and seen[-1].phase == "done"
    status = read_status(RunDir(config.output))
    assert status.state == "succeeded" and status.progress.embedded == len(labels)
    assert manifest.random_weights is True and "RANDOM WEIGHTS" in manifest.model_description
    assert {"ray", "torch", "transformers"} <= set(manifest.versions)
    assert list(manifest.ray.embedded_by_node.values()) == [len(labels)]  # one local node did it all
    # The Summary's operator table is parsed from the ray_stats.txt a real run writes: a change in Ray's format fails here.
    operators = store.parse_operator_stats(store.read_ray_stats(config.output))
    assert operators[0]["name"].startswith("ReadBinary") and operators[-1]["name"].endswith("Write")
    embedder = next(op for op in operators if "MapBatches(Embedder)" in op["name"])
    assert embedder["rows_out"] == len(labels) and embedder["tasks"] >= 1 and embedder["wall_s"] > 0
    assert not RunDir(config.output).staging.exists()


def test_bad_files_are_recorded_and_never_drop_their_neighbours(ray_session, tiny_clip, tmp_path):
    root = tmp_path / "dirty"
    good = write_image_tree(root, per_label=3, labels=("pug",))
    (root / "pug" / "zero.jpg").write_bytes(b"")
    (root / "pug" / "text.jpg").write_text("not an image")
    (root / "pug" / "notes.txt").write_text("ignored: not an image extension")
    config = RunConfig(projection=False, quality=False, source=str(root), output=str(tmp_path / "run"), model=tiny_clip, batch_size=2)
    # One block holds every file, so a bad file dropping its block would drop good images too.
    manifest = driver.run(config)

    table = read_table(RunDir(config.output))
    assert sorted(table.column("path").to_pylist()) == sorted(good)
    failures = json.loads((tmp_path / "run" / "failures.json").read_text())
    assert {f["path"].rsplit("/", 1)[1]: f["reason"].split()[0] for f in failures} == {"zero.jpg": "empty", "text.jpg": "not"}
    assert (manifest.rows, manifest.failed, manifest.skipped_files) == (3, 2, 1)


def test_a_run_where_every_file_fails_is_failed_with_the_reason(ray_session, tiny_clip, tmp_path):
    (tmp_path / "src" / "pug").mkdir(parents=True)
    (tmp_path / "src" / "pug" / "a.jpg").write_bytes(b"garbage")
    config = RunConfig(projection=False, quality=False, source=str(tmp_path / "src"), output=str(tmp_path / "run"), model=tiny_clip)
    with pytest.raises(dataset.PipelineError, match="every one of the 1 images failed.*a.jpg: not an image"):
        driver.run(config)
    run_dir = RunDir(config.output)
    assert read_status(run_dir).state == "failed" and "a.jpg" in read_status(run_dir).error
    assert [f["path"].rsplit("/", 1)[1] for f in read_json(run_dir.failures)] == ["a.jpg"]
    assert not run_dir.embeddings.exists() and not run_dir.manifest.exists()


def test_rerun_replaces_rows_and_limit_samples_across_labels(ray_session, image_tree, tiny_clip, tmp_path):
    root, labels = image_tree
    config = RunConfig(projection=False, quality=False, source=str(root), output=str(tmp_path / "run"), model=tiny_clip)
    driver.run(config)
    stale_map = RunDir(config.output).projections / "umap-n15-d0.1-cosine.parquet"
    stale_map.parent.mkdir()
    stale_map.write_bytes(b"the old run's coordinates")
    driver.run(config.replace(limit=4))
    assert not stale_map.exists()  # a map of the old rows would mislabel the new ones
    table = read_table(RunDir(config.output))
    assert table.column("path").to_pylist() == list_images(open_source(str(root)), limit=4).paths  # the listing's
    assert len({label_of(path) for path in table.column("path").to_pylist()}) == min(4, len(set(labels.values())))
    shutil.rmtree(tmp_path / "run")


def test_a_cluster_that_cannot_place_the_embedders_fails_with_a_message_not_a_hang(
        ray_session, image_tree, tiny_clip, tmp_path, monkeypatch):
    from doggos.base.plan import ResourcePlan

    monkeypatch.setattr(dataset, "ACTOR_START_TIMEOUT_S", 2)
    address = ray_session.get_runtime_context().gcs_address  # "a cluster": the session's Ray, by its address
    root, _ = image_tree
    config = RunConfig(projection=False, quality=False, source=str(root), output=str(tmp_path / "run"), model=tiny_clip,
                       ray_address=address)
    too_big = ResourcePlan(device="cpu", actors=1, cpus_per_actor=64, gpus_per_actor=0, threads_per_actor=1,
                           batch_size=4, task_cpus=1, decode_in_actor=True)  # no node has 64 CPUs
    with pytest.raises(dataset.PipelineError,
                       match=r"did not start 1 embedder actor\(s\) within 2 s \(each needs 64 CPU"):
        driver.run(config, plan=too_big)
    run_dir = RunDir(config.output)
    assert read_status(run_dir).state == "failed" and not run_dir.manifest.exists()
    assert ray_session.data.DataContext.get_current().wait_for_min_actors_s == -1  # the session's context untouched


@pytest.mark.parametrize("late", [RuntimeError("raylet did not exit"), driver.Cancelled()])
def test_the_run_is_succeeded_before_ray_shuts_down_and_stays_so(ray_session, image_tree, tiny_clip, tmp_path,
                                                                  monkeypatch, late):
    import contextlib

    config = RunConfig(projection=False, quality=False, source=str(image_tree[0]), output=str(tmp_path / "run"),
                       model=tiny_clip, batch_size=5)
    run_dir = RunDir(config.output)
    seen_at_shutdown, handed = [], []

    @contextlib.contextmanager
    def connection_whose_shutdown_fails(address):
        yield  # the session's Ray is already connected
        seen_at_shutdown.append((read_status(run_dir).state, run_dir.manifest.exists(), list(handed)))
        raise late  # Ray's shutdown failing, or a cancel arriving while it runs

    monkeypatch.setattr(driver, "ray_connection", connection_whose_shutdown_fails)
    manifest = driver.run(config, on_finished=handed.append)
    assert seen_at_shutdown == [("succeeded", True, [manifest])]  # done for its user before the shutdown began
    assert read_status(run_dir).state == "succeeded" and run_dir.manifest.exists()
    assert pq.read_table(run_dir.embeddings).num_rows == manifest.rows == len(image_tree[1])
