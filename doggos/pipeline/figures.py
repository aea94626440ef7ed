"""Every figure a run shows, defined once: what is counted, over which window, and how the ETA is smoothed.

The live view, the Summary, History and the CLI all take their rates from here, so one run's figures agree:

- **embedded**: rows whose embedding the model has returned, counted by doggos' tracker as each batch comes back.
  Ray Data's own operator count ("rows handed on") counts a row later, when its task's output block is complete.
- **current rate** (`CURRENT_WINDOW`, "last 5 s"): rows embedded in the last `CURRENT_WINDOW_S` seconds, per second.
- **run rate** (`WHOLE_RUN`, "start to Parquet"): rows this run embedded / seconds from the run's start to its
  published Parquet (listing, Ray's start, the model's load and the embedding: the manifest's `embed_s`; the post-run
  steps are left out). The manifest's `images_per_s`: the live view's last frame, Summary, History, Compare, the CLI.
- **ETA**: rows left / a smoothed rate, shown once enough rows are through, and bounded at each refresh.
- **phase time**: how long the current phase has gone on, beside its typical length in this runs root's past runs.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from doggos.base.records import PHASES

CURRENT_WINDOW_S = 5.0  # the current rate's window: long enough to span a few batches, short enough to follow changes
CURRENT_WINDOW = "last 5 s"  # how the screen names that window
WHOLE_RUN = "start to Parquet"  # every screen's name for the run rate's window ("whole run" takes in post-run steps)
RUN_RATE = f"Images/s · {WHOLE_RUN}"  # the run rate's label, the same on every screen
RUN_RATE_HELP = ("Images embedded per second from the run's start to its published Parquet: listing, Ray's start, the "
                 "model's load and the embedding (the post-run steps are left out)")
SMOOTHING_S = 10.0  # the ETA's rate: an exponential average of the current rate with this time constant
ETA_MIN_ROWS = 32  # no ETA before this many rows are embedded (two CPU batches)...
ETA_MIN_SHARE = 0.05  # ...nor before this share of the rows...
ETA_MIN_FLOW_S = CURRENT_WINDOW_S  # ...nor before rows have been coming for a whole window
ETA_MAX_CHANGE = 0.25  # a refresh moves the ETA at most this share away from the previous one counted down...
ETA_MIN_CHANGE_S = 2.0  # ...or this many seconds, whichever is more
STARTUP_PHASES = ("listing", "starting ray", "loading model")  # long phases with no rows to count: timed instead
TYPICAL_RUNS = 10  # a phase's typical length: the median over this many of the latest runs that recorded it


def window_rate(samples: Iterable[tuple[float, int]], window_s: float = CURRENT_WINDOW_S) -> float | None:
    """Rows per second over the last `window_s` of (time, rows done) samples, oldest first; None under a second.

    The window starts at the newest sample at least `window_s` before the last one (or the oldest, if the series is
    shorter), so a burst of rows is spread over the seconds it took to arrive, not over one refresh."""
    samples = list(samples)
    if len(samples) < 2:
        return None
    end_time, end_rows = samples[-1]
    start_time, start_rows = samples[0]
    for time_, rows in samples:
        if end_time - time_ >= window_s:
            start_time, start_rows = time_, rows
    span = end_time - start_time
    return max(0, end_rows - start_rows) / span if span >= 1.0 else None


def keep_window(samples: deque, window_s: float = CURRENT_WINDOW_S) -> None:
    """Drop the samples `window_rate` no longer needs: all but one at or before the window's start."""
    while len(samples) > 2 and samples[-1][0] - samples[1][0] >= window_s:
        samples.popleft()


def rate_text(progress) -> str:
    """The rate a one-line progress report gives, its window named: the current rate while embedding ("6.1 images/s
    (last 5 s)"), the run rate once a run has it ("14.0 images/s (start to Parquet)"); "" before either is known."""
    from doggos.base import units

    if progress.phase == "embedding" and progress.images_per_s:
        return f"{units.rate(progress.images_per_s)} images/s ({CURRENT_WINDOW})"
    if progress.run_images_per_s:
        return f"{units.rate(progress.run_images_per_s)} images/s ({WHOLE_RUN})"
    return ""


def run_rate(rows: int, seconds: float | None) -> float:
    """The whole-run rate: rows this run embedded per second since it began; 0 when no time is known."""
    return round(rows / seconds, 2) if seconds and seconds > 0 else 0.0


@dataclass
class EtaEstimator:
    """Rates and an ETA from progress samples that arrive about every second; fed by the tracker's snapshots."""

    samples: deque = field(default_factory=lambda: deque(maxlen=64))  # (time, rows embedded), oldest first
    flowing_since: float | None = None  # when the first row was seen
    flowing_rows: int = 0  # rows done by then
    smoothed: float | None = None  # rows/s, the exponential average of the current rate
    eta_s: float | None = None  # the last ETA given
    updated: float | None = None  # when

    def update(self, now: float, done: int, remaining: int) -> float | None:
        """Take a sample (rows embedded so far, rows left) and return the ETA in seconds, or None while unknown."""
        if self.samples and now <= self.samples[-1][0]:  # the same instant asked twice (a final snapshot)
            return self.eta_s
        self.samples.append((now, done))
        keep_window(self.samples)
        if done and self.flowing_since is None:
            self.flowing_since, self.flowing_rows = now, done
        current = self.current_rate()
        elapsed = now - self.updated if self.updated is not None else 0.0
        if current is not None and self.flowing_since is not None:
            weight = 1 - math.exp(-elapsed / SMOOTHING_S) if self.smoothed is not None else 1.0
            self.smoothed = current if self.smoothed is None else self.smoothed + weight * (current - self.smoothed)
        self.eta_s = self._next_eta(now, done, remaining, elapsed)
        self.updated = now
        return self.eta_s

    def current_rate(self) -> float | None:
        """Rows per second over the last CURRENT_WINDOW_S."""
        return window_rate(self.samples)

    def _next_eta(self, now: float, done: int, remaining: int, elapsed: float) -> float | None:
        if remaining <= 0:
            return 0.0
        enough = (done >= max(ETA_MIN_ROWS, ETA_MIN_SHARE * (done + remaining)) and self.flowing_since is not None
                  and now - self.flowing_since >= ETA_MIN_FLOW_S and self.smoothed)
        if not enough:
            return self.eta_s  # once given, an ETA is kept (counted down below) rather than dropped
        # A stall drives the smoothed rate towards 0 and the ETA up without bound; the average since rows began is
        # a floor the data justifies (a stall of 20 s after 30 s at 10 rows/s halves the rate, no more).
        average = (done - self.flowing_rows) / (now - self.flowing_since)
        estimate = remaining / max(self.smoothed, average)
        if self.eta_s is None:
            return round(estimate, 1)
        expected = max(0.0, self.eta_s - elapsed)  # the last ETA, counted down
        allowed = max(ETA_MIN_CHANGE_S, ETA_MAX_CHANGE * expected)
        return round(min(max(estimate, expected - allowed), expected + allowed), 1)


def past_phases(runs: Iterable) -> list[Mapping[str, float]]:
    """The phase start times of the succeeded runs among `runs` (RunInfo, newest first): `typical_phase_s`'s records."""
    return [run.status.phase_started for run in runs if run.state == "succeeded"]


def phase_elapsed(status, now: float) -> float | None:
    """Seconds the run's current phase (or post-run step) has gone on; None when it was not recorded."""
    if status.step and status.step_started:
        return max(0.0, now - status.step_started)
    began = (status.phase_started or {}).get(status.progress.phase)
    return max(0.0, now - began) if began else None


def phase_lengths(phase_started: Mapping[str, float]) -> dict[str, float]:
    """How long each phase of one run lasted: from its start to the start of the next phase it recorded."""
    ordered = sorted(((began, phase) for phase, began in phase_started.items() if isinstance(began, (int, float))))
    return {phase: round(later - began, 2) for (began, phase), (later, _) in zip(ordered, ordered[1:])}


def typical_phase_s(records: Iterable[Mapping[str, float]], phase: str) -> float | None:
    """The median length of `phase` over the latest TYPICAL_RUNS runs that recorded it (records newest first)."""
    if phase not in PHASES:
        return None
    lengths = []
    for record in records:
        length = phase_lengths(record or {}).get(phase)
        if length is not None:
            lengths.append(length)
        if len(lengths) == TYPICAL_RUNS:
            break
    return statistics.median(lengths) if lengths else None
