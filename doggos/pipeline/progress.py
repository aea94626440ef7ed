"""Live counts of a running pipeline, gathered by a tiny Ray actor that the pipeline's tasks and actors report to."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from doggos.base.records import Progress  # noqa: F401  (the record; re-exported for the pipeline and CLI)
from doggos.pipeline import figures

HOLD_ENV = "DOGGOS_TEST_HOLD"  # tests only: "phase=path" holds a run at that phase until `path` exists; "phase@N=path"
# holds only from the Nth time a process reaches it (embedding@3: each actor's first two batches go through)


@dataclass
class ProgressCounter:
    """Plain counters with the rate/ETA arithmetic (`doggos.pipeline.figures`); the Ray actor below wraps one."""

    found: int
    run_started: float | None = None  # when the run began (its clock): the whole-run rate counts from there
    clock: Callable[[], float] = time.time  # tests replay a recorded series with their own
    started: float | None = None  # when the tracker began (the clock's reading): the snapshots' elapsed_s
    decoded: int = 0
    embedded: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason; keyed so a retried task counts once
    reused: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (label, content hash): carried over
    embedded_by_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> rows its actors embedded
    # (prompts, their text features or None, why not, the model's logit scale): the first actor's answer
    prompts: tuple = (None, None, None, None)
    prompts_claimed: bool = False  # an actor has taken on embedding the prompts
    estimator: figures.EtaEstimator = field(default_factory=figures.EtaEstimator)  # fed by each snapshot

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()
        if self.run_started is None:
            self.run_started = self.started

    def add_decoded(self, count: int, failures: list[tuple[str, str]] = ()) -> None:
        self.decoded += count
        self.failures.update(failures)

    def add_reused(self, rows: list[tuple[str, str, str]]) -> None:
        """(path, label, content hash) of files whose rows are carried over instead of embedded."""
        self.reused.update((path, (label, content_hash)) for path, label, content_hash in rows)

    def reused_list(self) -> list[tuple[str, str, str]]:
        return [(path, label, content_hash) for path, (label, content_hash) in self.reused.items()]

    def add_embedded(self, count: int, node: str | None = None) -> None:
        self.embedded += count
        if node is not None:
            self.embedded_by_node[node] = self.embedded_by_node.get(node, 0) + count

    def claim_prompts(self) -> bool:
        """True for the first actor that asks: it embeds the prompts, the others need not."""
        claimed, self.prompts_claimed = self.prompts_claimed, True
        return not claimed

    def set_prompt_features(self, prompts: list[str], features, why: str | None, logit_scale: float) -> None:
        if self.prompts[0] is None:  # one answer is kept
            self.prompts = (list(prompts), features, why, logit_scale)

    def prompt_features(self) -> tuple:
        return self.prompts

    def rows_by_node(self) -> dict[str, int]:
        return dict(self.embedded_by_node)

    def snapshot(self, phase: str = "embedding") -> Progress:
        # Clamp: a retried Ray task may report its batch twice; progress must never pass the total.
        failed = min(len(self.failures), self.found)
        reused = min(len(self.reused), self.found - failed)
        embedded = min(self.embedded, self.found - failed - reused)
        now = self.clock()
        remaining = self.found - embedded - failed - reused
        # The snapshots come about every second (the driver's heartbeat): each is one sample of the rate's series.
        eta = self.estimator.update(now, embedded, remaining)
        current = self.estimator.current_rate()
        return Progress(
            found=self.found,
            decoded=min(self.decoded, self.found),
            embedded=embedded,
            failed=failed,
            reused=reused,
            elapsed_s=round(now - self.started, 2),
            images_per_s=round(current or 0.0, 2),
            run_images_per_s=figures.run_rate(embedded, now - self.run_started),
            eta_s=eta,
            # Nothing through yet: Ray is starting workers and they are loading the model (minutes for a first
            # download on a fresh cluster node); say so rather than show "embedding 0/N".
            phase="loading model" if phase == "embedding" and not (self.decoded or self.embedded or failed)
            and not reused else phase,
        )

    def failure_list(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in sorted(self.failures.items())]


def tracker_actor(found: int, run_started: float | None = None):
    """Start the tracker as a Ray actor that takes no CPU, so it can never starve the pipeline.

    `run_started`: the run's start (time.time()), from which the whole-run rate counts."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(ProgressCounter).remote(found, run_started)


def format_duration(seconds: float | None) -> str:
    """Seconds as people read them (kept for callers; doggos.base.units.duration is the one formatter)."""
    from doggos.base import units  # here, not at the top: this function is the module's only use of it

    return units.duration(seconds)


def hold(phase: str, count: int = 1) -> None:
    """Tests only: with DOGGOS_TEST_HOLD=phase=path, wait at `phase` until `path` exists, so a cancel lands there for sure.

    Called by the driver between phases and by the embedder actors (which inherit the driver's environment); `count`:
    how many times this process has reached `phase` (the actors count their batches)."""
    wanted, _, release = os.environ.get(HOLD_ENV, "").partition("=")
    wanted, _, after = wanted.partition("@")
    if wanted != phase or not release or count < int(after or 1):
        return
    while not os.path.exists(release):
        time.sleep(0.05)
