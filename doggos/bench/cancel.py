"""`python -m doggos.bench.cancel`: how long a cancel takes at each phase of a run, from the request to `cancelled`.

Each phase gets a run of its own, launched as the dashboard launches one (`RunManager.start`) and cancelled as its
Cancel button does (`RunManager.cancel`). The cancel lands in the phase for sure: a driver-side phase is held there
(`DOGGOS_TEST_HOLD`, the tests' hook), and the phases where Ray works are cancelled live, as soon as the run's status
shows them (inside Ray's start, with actors loading the model, with batches in flight). Printed per phase: the seconds
from the request to `cancelled` in status.json, to `cancel()`'s return (nothing of the run left running), what the
run said it was stopping, and whether anything was left behind (a process, a published file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

# Every phase a run can be cancelled in, in the order a run goes through them.
PHASES = ("queued", "listing", "starting ray", "loading model", "embedding", "writing", "projecting", "checking labels")
LIVE = ("starting ray", "loading model", "embedding")  # cancelled as soon as seen: Ray is doing real work there
GOAL_S = 3.0  # the promise: `cancelled` within this, at any phase, on a 2-core machine
POLL_S = 0.02  # status.json is polled this often while a cancel runs: `cancelled` is seen to about this
REACH_TIMEOUT_S = 180.0  # time for a run to reach its phase (a cold start of Ray and the model on a busy machine)


def measure(source: str, model: str, root: Path, phases=PHASES, warm: bool = False, held: bool = False) -> list[dict]:
    """Cancel one run at each of `phases` (a fresh runs root each, under `root`); one result dict per phase.

    `warm`: the runs join a warm local Ray (`doggos.runs.warm`), as the dashboard's do, and the result says whether it
    outlived the cancel (it must); `held`: hold every phase, the live ones too (a run too small to catch them live)."""
    results = []
    for phase in phases:
        folder = root / phase.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        results.append(_cancel_at(phase, source, model, folder, warm, held or phase not in LIVE))
    return results


def _cancel_at(phase: str, source: str, model: str, root: Path, warm: bool, held: bool) -> dict:
    from doggos.base.config import RunConfig
    from doggos.pipeline.progress import HOLD_ENV
    from doggos.runs import warm as warm_ray
    from doggos.runs.manager import RunManager

    manager = RunManager(root)
    config = RunConfig(source=source, model=model)
    release = root / "release"  # never made: a held run waits until its cancel
    held_at = "listing" if phase == "queued" else phase  # embedding: each actor holds after its first batch
    os.environ[HOLD_ENV] = f"{held_at}={release}" if held else ""
    first = manager.start(config) if phase == "queued" else None  # the run the measured one queues behind
    if first is not None:
        _wait(lambda: manager.get(first).progress.phase == "listing" or not manager.get(first).active)
    run_id = manager.start(config)
    reached = _reach(manager, run_id, phase)
    warm_before = warm_ray.read_state(root) if warm else None  # up before the cancel (the run may not have got there)
    watcher = _Watcher(root / run_id / "status.json")
    seen: dict = {}
    begun = time.monotonic()
    info = manager.cancel(run_id, on_stopping=lambda run: seen.setdefault("stopping", run.status.stopping_text))
    returned = time.monotonic() - begun
    cancelled = watcher.stop(begun)
    if first is not None:
        manager.cancel(first)
    from doggos.base.rundir import RunDir
    from doggos.runs.manager import run_processes

    run_dir = RunDir(info.path)
    result = {
        "phase": phase, "how": "held" if held else "live", "reached": reached, "state": info.state,
        "stopping": seen.get("stopping"), "cancelled_s": cancelled, "returned_s": round(returned, 3),
        "left": len(run_processes(run_id)),
        "published": any(p.exists() for p in (run_dir.staging, run_dir.embeddings, run_dir.projections,
                                               run_dir.quality, run_dir.manifest)),
    }
    if warm:
        # None: the run was cancelled before it had a warm Ray to join (it may be starting one: stopped below too)
        result["warm_ray_kept"] = None if warm_before is None else warm_ray.read_state(root) is not None
        _stop_warm(root)
    return result


def _reach(manager, run_id: str, phase: str) -> bool:
    """Wait for the run to be at `phase` (embedding: with a first image embedded); False if it ended first."""
    def there():
        info = manager.get(run_id)
        if not info.active:
            return True
        if phase == "queued":
            return info.state == "queued"
        at = info.progress.phase == phase
        return at and (phase != "embedding" or info.progress.embedded > 0)

    _wait(there)
    info = manager.get(run_id)
    return info.active and (info.state == "queued" if phase == "queued" else info.progress.phase == phase)


def _wait(condition, timeout_s: float = REACH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(POLL_S)


class _Watcher:
    """Polls a run's status.json in a thread: when `cancelled` was first written (time.monotonic())."""

    def __init__(self, status: Path):
        self.status, self.at = status, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._look() and not self._stop.wait(POLL_S):
            pass

    def _look(self) -> bool:
        try:
            if self.at is None and json.loads(self.status.read_text(encoding="utf-8")).get("state") == "cancelled":
                self.at = time.monotonic()
        except (OSError, ValueError):  # being replaced right now
            pass
        return self.at is not None

    def stop(self, begun: float) -> float | None:
        """Seconds from `begun` to `cancelled` (None if never seen); call it once the cancel has returned."""
        self._stop.set()
        self._thread.join()
        self._look()  # written between the thread's last look and the cancel's return
        return None if self.at is None else round(max(0.0, self.at - begun), 3)


def _stop_warm(root: Path) -> None:
    """End a runs root's warm Ray (one still starting too): it stops by itself once its record is gone
    (`doggos.runs.warm.serve`); one that never got to write it stops when idle, or with this process."""
    from doggos.base.processes import alive, reap
    from doggos.runs import warm as warm_ray

    deadline = time.monotonic() + 30
    while (state := warm_ray.read_state(root)) is not None and time.monotonic() < deadline:
        warm_ray.state_path(root).unlink(missing_ok=True)
        while alive(state.get("pid"), state.get("pid_start")) and time.monotonic() < deadline:
            reap()
            time.sleep(0.1)


def _seconds(value: float | None) -> str:
    """A measured time to the hundredth (a benchmark's figure; units.duration rounds below 10 s to the tenth)."""
    from doggos.base import units

    return units.DASH if value is None else f"{value:.2f} s"


def table(results: list[dict]) -> str:
    """The results as lines of text, the worst phase and the goal last."""
    from doggos.base import units

    lines = [f"{'phase':<16} {'how':<5} {'to cancelled':>12} {'returned':>9}  {'left':>4}  published  stopping"]
    for r in results:
        lines.append(f"{r['phase']:<16} {r['how']:<5} {_seconds(r['cancelled_s']):>12} "
                     f"{_seconds(r['returned_s']):>9}  {r['left']:>4}  {'yes' if r['published'] else 'no':<9}  "
                     f"{r['stopping'] or units.DASH}"
                     + ("" if r["reached"] else "  (the run ended before the phase: not measured there)")
                     + ("  (the warm Ray was killed too)" if r.get("warm_ray_kept") is False else ""))
    timed = [r for r in results if r["cancelled_s"] is not None]
    if timed:
        worst = max(timed, key=lambda r: max(r["cancelled_s"], r["returned_s"]))
        slowest = max(worst["cancelled_s"], worst["returned_s"])
        verdict = "met" if slowest <= GOAL_S and all(r["state"] == "cancelled" for r in results) else "NOT met"
        lines.append(f"worst: {worst['phase']}, {_seconds(slowest)} to cancelled and returned "
                     f"(goal {units.duration(GOAL_S)} at every phase: {verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doggos.bench.cancel", description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated phases to cancel in (default: all of {', '.join(PHASES)})")
    parser.add_argument("--kit", help="a demo kit folder (made in a temporary folder when not given)")
    parser.add_argument("--source", help="an image tree instead of the demo kit's digits (with --model)")
    parser.add_argument("--model", help="a model instead of the demo kit's tiny random CLIP (with --source)")
    parser.add_argument("--warm", action="store_true",
                        help="the runs join a warm local Ray, as the dashboard's do (default: each starts its own)")
    parser.add_argument("--held", action="store_true", help="hold every phase, the live ones too (tiny sources)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        parser.error(f"--phases: {', '.join(unknown) or 'none given'} not among {', '.join(PHASES)}")
    if bool(args.source) != bool(args.model):
        parser.error("--source and --model go together (neither: the demo kit)")
    from doggos.pipeline.progress import HOLD_ENV

    work = Path(tempfile.mkdtemp(prefix="doggos-cancel-"))
    saved = {name: os.environ.get(name) for name in ("DOGGOS_WARM_RAY", HOLD_ENV)}  # set per run: put back after
    try:
        # This process stands in for the dashboard's server: its runs share a warm Ray only with --warm.
        os.environ["DOGGOS_WARM_RAY"] = "1" if args.warm else "0"
        if args.source:
            source, model = str(Path(args.source).absolute()), args.model
        else:
            kit = Path(args.kit) if args.kit else work / "kit"
            if not (kit / "digits").is_dir():
                from doggos.pipeline.demo import make_demo_kit

                make_demo_kit(kit)
            source, model = str(kit.absolute() / "digits"), str(kit.absolute() / "clip-random-weights-tiny")
        results = measure(source, model, work / "runs", phases, warm=args.warm, held=args.held)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else table(results))
    print(f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
