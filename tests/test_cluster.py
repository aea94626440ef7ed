"""A run on an existing two-node Ray cluster started by the test: embedding work lands on both nodes."""

import re

import pytest
from imagegen import LABELS, make_photo

from doggos.base.config import RunConfig
from doggos.base.rundir import RunDir
from doggos.runs.manager import RunManager

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head and a worker of 2 CPUs each; the worker also reports a GPU, which this CPU-only torch cannot use."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def photo_tree(tmp_path):
    """24 photo-sized JPEGs: blocks of them outgrow Ray's inline-object limit (100 KB) and live on the node that
    read them, as real photos do; tiny test images would all sit with the driver and pull the work to its node."""
    labels = {}
    for li, label in enumerate(LABELS):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(8):
            path = tmp_path / "photos" / label / f"{i}.jpg"
            make_photo(10 * li + i, size=(640, 480)).save(path, quality=90)
            labels[str(path)] = label
    return tmp_path / "photos", labels


def nodes_used(stats: str, operator: str) -> int:
    section = stats.split(operator, 1)[1].split("\nOperator ", 1)[0]
    return int(re.search(r"(\d+) nodes used", section).group(1))


def test_a_run_on_an_existing_cluster_embeds_on_both_nodes(tmp_path, two_node_cluster, photo_tree, tiny_clip):
    root, labels = photo_tree
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(projection=False, quality=False, source=str(root), model=tiny_clip, batch_size=2, ray_address=two_node_cluster.address))
    info = manager.wait(run_id, timeout_s=240)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id))
    assert info.manifest.rows == len(labels)
    assert info.manifest.ray.nodes == 2 and info.manifest.plan.actors == 4  # one single-threaded actor per core
    # device=auto saw the GPU, found torch could not use it, and embedded on CPU instead of failing in the actors.
    assert info.manifest.plan.device == "cpu" and "cannot use CUDA: embedding on CPU" in manager.log_tail(run_id, 200)
    by_node = info.manifest.ray.embedded_by_node
    assert len(by_node) == 2 and all(rows > 0 for rows in by_node.values()), by_node
    assert sum(by_node.values()) == len(labels)
    stats = RunDir(info.path).ray_stats.read_text()  # and Ray's own account agrees
    assert nodes_used(stats, "MapBatches(Embedder)") == 2


def test_cuda_on_a_cluster_whose_torch_cannot_use_its_gpu_fails_saying_so(tmp_path, two_node_cluster, image_tree, tiny_clip):
    root, _ = image_tree
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(projection=False, quality=False, source=str(root), model=tiny_clip, device="cuda",
                                     ray_address=two_node_cluster.address))
    info = manager.wait(run_id, timeout_s=240)
    assert info.state == "failed"
    assert info.error.startswith("device: cuda was chosen, but torch ") and "cannot use CUDA" in info.error, info.error
    assert not RunDir(info.path).manifest.exists()


def test_a_run_whose_driver_is_killed_resumes_on_the_cluster_that_kept_running(tmp_path, two_node_cluster, tiny_clip,
                                                                               monkeypatch):
    """The driver dies (SIGKILL); the cluster, its nodes and the shared runs root stay: the resume finishes the run."""
    import os
    import signal

    import pyarrow.parquet as pq
    from conftest import wait_for

    tree = tmp_path / "photos"
    for li, label in enumerate(LABELS):
        (tree / label).mkdir(parents=True)
        for i in range(32):
            make_photo(1000 * li + i, size=(320, 240)).save(tree / label / f"{i}.jpg", quality=90)
    # Each of the 4 actors gets its first block (6 files, 3 batches) through to the writer, then waits in its second
    # until the driver dies (the hold travels to the cluster's workers in the job's runtime env).
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"embedding@4={tmp_path / 'never'}")
    manager = RunManager(tmp_path / "runs")
    run_id = manager.start(RunConfig(projection=False, quality=False, source=str(tree), model=tiny_clip, batch_size=2,
                                     ray_address=two_node_cluster.address))
    run_dir = RunDir(manager.get(run_id).path)
    wait_for(lambda: len(list(run_dir.staging.glob("*.parquet"))) >= 2 or not manager.get(run_id).active,
             timeout_s=240)
    assert manager.get(run_id).active, manager.log_tail(run_id)
    os.kill(manager.get(run_id).status.pid, signal.SIGKILL)
    killed = wait_for(lambda: (i := manager.get(run_id)).state != "running" and i, timeout_s=30)
    assert killed.resumable, killed.error
    monkeypatch.delenv("DOGGOS_TEST_HOLD")
    assert manager.resume(run_id) == run_id
    info = manager.wait(run_id, timeout_s=300)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id, 60))
    paths = pq.read_table(run_dir.embeddings, columns=["path"]).column(0).to_pylist()
    assert sorted(paths) == sorted(str(p) for p in tree.rglob("*.jpg"))  # each image once
    assert info.manifest.reused >= 2 and info.manifest.attempts == 2
    assert info.manifest.ray.nodes == 2
