"""doggos.pipeline.figures: each figure defined once (current rate, whole-run rate, ETA, phase times), replayed on a
recorded progress series, and the live view's words for them (dashboard.ui)."""

from __future__ import annotations

import dataclasses

import pytest

from dashboard import ui
from doggos.base.records import Progress, RunStatus
from doggos.pipeline import figures
from doggos.pipeline.progress import ProgressCounter

FOUND = 300
# A progress series as the tracker saw it on 2 cores (the issue's run): seconds since the tracker began, rows embedded.
# The model loads for 11 s; the first batches trickle in; at 37 rows a backlog of batches lands at once (37 → 207 in
# two seconds); then two actors return a batch of 16 every other second.
SERIES = [(t, 0) for t in range(11)] + [(11, 16), (12, 16), (13, 32), (14, 32), (15, 37), (16, 37), (17, 207)]
while SERIES[-1][1] < FOUND:
    t = SERIES[-1][0] + 1
    SERIES.append((t, min(FOUND, SERIES[-1][1] + (16 if t % 2 else 0))))


def _old_eta(t: float, rows: int) -> float | None:
    """The ETA as doggos computed it before: rows left / (rows / seconds since the tracker began)."""
    return (FOUND - rows) / (rows / t) if rows and t else None


def replay(series=SERIES, found=FOUND, run_started=None) -> list[Progress]:
    """The tracker's snapshots along a series, one a second, as the driver's heartbeat takes them."""
    clock = {"now": 1000.0}
    counter = ProgressCounter(found=found, clock=lambda: clock["now"], run_started=run_started)
    snapshots = []
    for t, rows in series:
        clock["now"] = 1000.0 + t
        counter.embedded = counter.decoded = rows
        snapshots.append(counter.snapshot())
    return snapshots


def test_the_recorded_series_holds_the_jump_of_the_issue():
    """The fixture is the issue's: the old arithmetic said 1 min 52 s-ish at 37/300 and 8 s two seconds later."""
    assert _old_eta(15, 37) > 100 and _old_eta(17, 207) < 10


def test_the_eta_never_swings_more_than_the_data_justifies():
    snapshots = replay()
    etas = [(t, p.eta_s) for (t, _), p in zip(SERIES, snapshots)]
    for (t, rows), p in zip(SERIES, snapshots):  # no ETA from too few rows, or from rows that just began to flow
        if rows < figures.ETA_MIN_ROWS or t < 11 + figures.ETA_MIN_FLOW_S:
            assert p.eta_s is None, (t, rows, p.eta_s)
    shown = [(t, eta) for t, eta in etas if eta is not None]
    assert shown and shown[-1] == (SERIES[-1][0], 0.0)
    for (t0, before), (t1, after) in zip(shown, shown[1:]):
        expected = max(0.0, before - (t1 - t0))  # the last ETA, counted down
        allowed = max(figures.ETA_MIN_CHANGE_S, figures.ETA_MAX_CHANGE * expected) + 0.1  # 0.1: its rounding
        assert abs(after - expected) <= allowed, f"ETA {before} s at {t0} s, then {after} s at {t1} s"
    assert not any(before > 60 and after < 20 for (_, before), (_, after) in zip(shown, shown[2:]))


def test_the_eta_follows_a_steady_rate_closely():
    steady = [(t, min(FOUND, 10 * t)) for t in range(31)]  # 10 rows/s from the start: 30 s in all
    for (t, _), p in zip(steady, replay(steady)):
        if p.eta_s is not None:
            assert abs(p.eta_s - (30 - t)) <= 1.0, (t, p.eta_s)
        assert p.images_per_s in (0.0, 10.0)


def test_a_stall_holds_the_eta_near_what_the_rows_so_far_justify():
    """10 rows/s for 30 s, then no row for 20 s: the average since rows began halves, so the ETA may double (and
    count on), not grow without bound as a rate smoothed towards 0 would make it."""
    found = 600
    series = [(t, 10 * t) for t in range(31)] + [(t, 300) for t in range(31, 51)]
    snapshots = replay(series, found=found)
    at_stall, after = snapshots[30].eta_s, snapshots[-1].eta_s
    assert at_stall == pytest.approx(30, abs=2)
    assert after <= 300 / (300 / 50) + 1, (at_stall, after)  # rows left / the average since rows began: 50 s


def test_the_current_rate_spreads_a_burst_over_its_window():
    assert figures.window_rate([(0, 0)]) is None
    assert figures.window_rate([(0, 0), (0.5, 10)]) is None  # under a second: no rate yet
    samples = [(t, 0) for t in range(5)] + [(5, 50), (6, 50), (7, 50)]
    assert figures.window_rate(samples) == pytest.approx(50 / 5)  # 2 → 7: the last 5 s
    assert figures.window_rate([(0, 0), (2, 10)]) == 5.0  # a shorter series: over what there is


def test_the_whole_run_rate_counts_from_the_runs_start_and_is_the_manifests():
    snapshots = replay(run_started=1000.0 - 9)  # the run listed and started Ray for 9 s before the tracker began
    last = snapshots[-1]
    assert last.run_images_per_s == figures.run_rate(FOUND, SERIES[-1][0] + 9) == round(FOUND / (SERIES[-1][0] + 9), 2)
    assert figures.run_rate(0, 0) == 0.0


def test_phase_lengths_and_their_typical_length_on_this_machine():
    older = {"listing": 100.0, "starting ray": 101.0, "loading model": 110.0, "embedding": 130.0, "done": 160.0}
    newer = {"listing": 200.0, "starting ray": 200.5, "loading model": 213.5, "embedding": 233.5, "writing": 250.0}
    assert figures.phase_lengths(older) == {"listing": 1.0, "starting ray": 9.0, "loading model": 20.0,
                                            "embedding": 30.0}
    assert figures.typical_phase_s([newer, older, {}], "starting ray") == 11.0  # the median of 13 and 9
    assert figures.typical_phase_s([newer], "writing") is None  # it never ended in a record
    assert figures.typical_phase_s([], "loading model") is None


def test_phase_elapsed_reads_the_phase_or_the_steps_start():
    status = RunStatus(state="running", progress=Progress(phase="loading model"),
                       phase_started={"listing": 90.0, "loading model": 100.0})
    assert figures.phase_elapsed(status, 112.0) == 12.0
    assert figures.phase_elapsed(dataclasses.replace(status, step="map", step_started=105.0), 112.0) == 7.0
    assert figures.phase_elapsed(RunStatus(progress=Progress(phase="starting ray")), 112.0) is None


def test_the_live_view_names_each_rates_window_and_times_a_start_up_phase():
    loading = Progress(found=300, phase="loading model")
    metrics = ui.live_metrics(loading, phase_s=12.0, typical_s=20.0)
    assert metrics == {"Embedded": "0 / 300", "Images/s · last 5 s": "–", "Images/s · start to Parquet": "–",
                       "Loading model · usually 20 s": "12 s", "Failed files": "0"}
    caption = "loading model · 0/300 images embedded · 12 s so far (usually 20 s)"
    assert ui.progress_caption(loading, 12.0, 20.0) == caption
    assert ui.progress_caption(loading, 12.0) == "loading model · 0/300 images embedded · 12 s so far"
    writing = Progress(found=300, embedded=300, images_per_s=25.1, run_images_per_s=14.0, phase="writing")
    assert ui.live_metrics(writing)["Images/s · start to Parquet"] == "14.0"  # the Summary's figure
    assert ui.live_metrics(writing)["Images/s · last 5 s"] == "–" and ui.live_metrics(writing)["ETA"] == "–"
    assert ui.progress_caption(writing) == "writing · 300/300 images embedded · 14.0 images/s (start to Parquet)"
