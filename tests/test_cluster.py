"""A run on an existing two-node Ray cluster started by the test: embedding work lands on both nodes."""

import re

import pytest

from doggos.config import RunConfig
from doggos.rundir import RunDir
from doggos.runs import RunManager

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def nodes_used(stats: str, operator: str) -> int:
    section = stats.split(operator, 1)[1].split("\nOperator ", 1)[0]
    return int(re.search(r"(\d+) nodes used", section).group(1))


def test_a_run_on_an_existing_cluster_embeds_on_both_nodes(tmp_path, two_node_cluster, image_tree, tiny_clip):
    root, labels = image_tree
    manager = RunManager(tmp_path)
    run_id = manager.start(RunConfig(projection=False, source=str(root), model=tiny_clip, batch_size=2, ray_address=two_node_cluster.address))
    info = manager.wait(run_id, timeout_s=240)
    assert info.state == "succeeded", (info.error, manager.log_tail(run_id))
    assert info.manifest["rows"] == len(labels)
    assert info.manifest["ray"]["nodes"] == 2 and info.manifest["plan"]["actors"] == 2
    stats = RunDir(info.path).ray_stats.read_text()
    assert nodes_used(stats, "MapBatches(Embedder)") == 2
