"""Live counts of a running pipeline, gathered by a tiny Ray actor that the pipeline's tasks and actors report to."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class Progress:
    """A snapshot of a run's progress; every count only grows."""

    found: int = 0  # images listed at the source (after any limit)
    decoded: int = 0  # images decoded and preprocessed
    embedded: int = 0  # images whose embedding is computed
    failed: int = 0  # images that could not be read (see failures)
    elapsed_s: float = 0.0
    images_per_s: float = 0.0  # embedded per second over the whole run so far
    eta_s: float | None = None  # None until a rate is known
    phase: str = "starting"  # starting | listing | starting ray | loading model | embedding | writing | projecting | done

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def processed(self) -> int:
        return self.embedded + self.failed

    @property
    def fraction(self) -> float:
        return min(1.0, self.processed / self.found) if self.found else 0.0


@dataclass
class ProgressCounter:
    """Plain counters with the rate/ETA arithmetic; the Ray actor below wraps one."""

    found: int
    started: float = field(default_factory=time.monotonic)
    decoded: int = 0
    embedded: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # path -> reason; keyed so a retried task counts once
    embedded_by_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> rows its actors embedded

    def add_decoded(self, count: int, failures: list[tuple[str, str]] = ()) -> None:
        self.decoded += count
        self.failures.update(failures)

    def add_embedded(self, count: int, node: str | None = None) -> None:
        self.embedded += count
        if node is not None:
            self.embedded_by_node[node] = self.embedded_by_node.get(node, 0) + count

    def rows_by_node(self) -> dict[str, int]:
        return dict(self.embedded_by_node)

    def snapshot(self, phase: str = "embedding") -> Progress:
        # Clamp: a retried Ray task may report its batch twice; progress must never pass the total.
        failed = min(len(self.failures), self.found)
        embedded = min(self.embedded, self.found - failed)
        elapsed = time.monotonic() - self.started
        rate = embedded / elapsed if elapsed > 0 else 0.0
        remaining = self.found - embedded - failed
        eta = remaining / rate if rate > 0 else None
        return Progress(
            found=self.found,
            decoded=min(self.decoded, self.found),
            embedded=embedded,
            failed=failed,
            elapsed_s=round(elapsed, 2),
            images_per_s=round(rate, 2),
            eta_s=None if eta is None else round(eta, 1),
            # Nothing through yet: Ray is starting workers and they are loading the model (minutes for a first
            # download on a fresh cluster node); say so rather than show "embedding 0/N".
            phase="loading model" if phase == "embedding" and not (self.decoded or self.embedded or failed) else phase,
        )

    def failure_list(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in sorted(self.failures.items())]


def tracker_actor(found: int):
    """Start the tracker as a Ray actor that takes no CPU, so it can never starve the pipeline."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(ProgressCounter).remote(found)


def format_duration(seconds: float | None) -> str:
    """Seconds as people read them: 4 s, 1 min 15 s, 1 h 02 min; a dash when unknown."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
