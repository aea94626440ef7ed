"""How the embedding stage uses a cluster: actors, CPU/GPU requests, threads and batch size, derived so defaults never deadlock."""

from __future__ import annotations

import math
from dataclasses import dataclass

from doggos.base.config import ConfigError, RunConfig

CPU_BATCH_SIZE = 16  # ViT-B/32 on 2 cores: batches of 4-32 all within 5% (batch 1: 30% slower); 16 keeps memory low
GPU_BATCH_SIZE = 64  # enough to keep a GPU busy without crowding its memory
THREADS_PER_CPU_ACTOR = 4  # torch threads per actor on nodes of 4+ cores (one actor per 4); smaller: 1 per core

@dataclass(frozen=True)
class ResourcePlan:
    """How the embedding stage uses the cluster; derived from its resources so defaults never deadlock."""

    device: str
    actors: int  # embedder actors in the pool
    cpus_per_actor: float  # logical CPUs each actor reserves
    gpus_per_actor: float
    threads_per_actor: int  # torch threads inside each actor; 0 leaves Ray's default (one per logical CPU)
    batch_size: int
    task_cpus: float  # logical CPUs per read/decode task
    # Decode in the embedder actors rather than in tasks beside them. On CPU the actors' torch threads already
    # use every core, and decode tasks on top oversubscribe them: measured on 2 cores, 12.7-16.0 images/s with
    # decode tasks against 16.4-17.1 in the actors. A GPU must never wait on decoding: there, tasks decode.
    decode_in_actor: bool = False

    def describe(self) -> str:
        return (
            f"{self.actors} embedder actor(s) on {self.device} "
            f"({self.cpus_per_actor:g} CPU, {self.gpus_per_actor:g} GPU, {self.threads_per_actor} threads each), "
            f"batch size {self.batch_size}, read{'' if self.decode_in_actor else '/decode'} tasks at {self.task_cpus:g} CPU"
            f"{', decoding in the actors' if self.decode_in_actor else ''}"
        )


def _node_reserve(cpus: float) -> float:
    # CPUs of a node kept free of actors for read/decode tasks: if actors took them all, reads starve and the
    # pipeline hangs (the tutorial's concurrency=2, num_cpus=1 does exactly that on 2 cores).
    return cpus / 2 if cpus < 2 else max(1.0, cpus / 8)


def _cpu_actors(cpus: float) -> int:
    """Embedder actors for a node with `cpus` CPUs when the user gives no concurrency."""
    if cpus < THREADS_PER_CPU_ACTOR:
        # One single-threaded actor per core: one actor's torch threads wait on each other at every op whenever Ray's
        # own processes take a core; separate actors do not (2 cores: 4-5 % more images/s, docs/performance.md).
        return max(1, int(cpus))
    return int(cpus // THREADS_PER_CPU_ACTOR)


def _round_down(value: float) -> float:
    # Down, never up: rounding up could make the actors' requests add up to more than was kept free for them.
    return math.floor(value * 1000) / 1000


def plan_resources(config: RunConfig, node_cpus: list[float], gpus: float) -> ResourcePlan:
    """Actor count, CPU/GPU requests and batch size for `config` on nodes with these CPU counts."""
    node_cpus = [c for c in node_cpus if c > 0]
    if not node_cpus:
        raise ConfigError("ray_address", "the Ray cluster has no CPUs to run on")
    device = config.device if config.device != "auto" else ("cuda" if gpus >= 1 else "cpu")
    if device == "cuda" and gpus < 1:
        raise ConfigError("device", "cuda was asked for, but the Ray cluster has no GPU. Choose cpu or auto.")
    total = sum(node_cpus)
    free_for_actors = total - sum(_node_reserve(c) for c in node_cpus)
    largest_fit = max(c - _node_reserve(c) for c in node_cpus)  # an actor must fit on one node
    task_cpus = min(1.0, min(_node_reserve(c) for c in node_cpus))
    if device == "cuda":
        actors = config.concurrency or int(gpus)
        return ResourcePlan(
            device=device,
            actors=actors,
            cpus_per_actor=_round_down(min(1.0, free_for_actors / actors, largest_fit)),
            gpus_per_actor=_round_down(min(1.0, gpus / actors)),
            threads_per_actor=1,
            batch_size=config.batch_size or GPU_BATCH_SIZE,
            task_cpus=task_cpus,
        )
    actors = config.concurrency or sum(_cpu_actors(c) for c in node_cpus)
    return ResourcePlan(
        device=device,
        actors=actors,
        cpus_per_actor=_round_down(min(free_for_actors / actors, largest_fit)),
        gpus_per_actor=0.0,
        # Threads use the cores of the actor's share, the reserved ones included: decoding is a small part of the work.
        threads_per_actor=max(1, int(total // actors)),
        batch_size=config.batch_size or CPU_BATCH_SIZE,
        task_cpus=task_cpus,
        decode_in_actor=True,
    )
