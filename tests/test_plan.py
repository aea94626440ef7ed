"""doggos.base.plan: whatever the cluster, actors leave CPUs for the read/decode tasks, so defaults never deadlock."""

import pytest

from doggos.base.config import ConfigError, RunConfig
from doggos.base.plan import plan_resources

CONFIG = RunConfig(source="x", output="o")


@pytest.mark.parametrize("nodes", [[1], [2], [3], [4], [8], [16], [64], [2, 2], [4, 16], [1, 1, 1]])
@pytest.mark.parametrize("concurrency", [None, 1, 2, 7])
def test_cpu_plans_always_leave_room_for_tasks(nodes, concurrency):
    plan = plan_resources(CONFIG.replace(concurrency=concurrency), nodes, gpus=0)
    assert plan.device == "cpu" and plan.gpus_per_actor == 0
    assert plan.actors == concurrency if concurrency else 1 <= plan.actors <= sum(nodes)
    assert 0 < plan.task_cpus <= 1
    # With every actor placed, at least one node still has room for a read/decode task.
    assert plan.actors * plan.cpus_per_actor <= sum(nodes) - plan.task_cpus + 1e-9
    assert plan.cpus_per_actor <= max(nodes) - plan.task_cpus + 1e-9
    assert plan.threads_per_actor >= 1


def test_two_cores_get_two_single_threaded_actors():
    plan = plan_resources(CONFIG, [2], gpus=0)
    shape = (plan.actors, plan.cpus_per_actor, plan.threads_per_actor, plan.task_cpus, plan.batch_size)
    assert shape == (2, 0.5, 1, 1.0, 16)
    assert plan.decode_in_actor  # on CPU, decode tasks beside the actors would oversubscribe the cores


@pytest.mark.parametrize("cores, actors, threads", [(1, 1, 1), (3, 3, 1), (4, 1, 4), (8, 2, 4), (16, 4, 4)])
def test_small_nodes_get_an_actor_per_core_bigger_ones_an_actor_per_four(cores, actors, threads):
    plan = plan_resources(CONFIG, [cores], gpus=0)
    assert (plan.actors, plan.threads_per_actor) == (actors, threads)


def test_gpus_get_one_actor_each_and_bigger_batches():
    plan = plan_resources(CONFIG, [16], gpus=2)
    assert (plan.device, plan.actors, plan.gpus_per_actor, plan.batch_size) == ("cuda", 2, 1.0, 64)
    assert not plan.decode_in_actor  # a GPU never waits on decoding: CPU tasks do it
    assert plan_resources(CONFIG.replace(device="cpu"), [16], gpus=2).device == "cpu"


def test_cuda_without_gpus_is_refused():
    with pytest.raises(ConfigError, match="^device: .*no GPU"):
        plan_resources(CONFIG.replace(device="cuda"), [8], gpus=0)


def test_explicit_batch_size_wins():
    assert plan_resources(CONFIG.replace(batch_size=3), [2], gpus=0).batch_size == 3
