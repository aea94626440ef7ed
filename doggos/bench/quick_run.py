"""`python -m doggos.bench.quick_run --repeat N`: a demo-kit run launched again and again, Launch to done, by phase."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

POLL_S = 0.05  # status.json is polled this often: the phases' edges are known to about this


def measure(kit: Path, root: Path, repeat: int, timeout_s: float = 300.0) -> list[dict]:
    """Launch the demo-kit run `repeat` times, one after the other, as the dashboard does (RunManager.start); for each,
    the seconds from Launch to each phase first seen and to the finished run (succeeded, map and quality ready)."""
    from doggos.base.config import RunConfig
    from doggos.base.records import read_status
    from doggos.base.rundir import RunDir
    from doggos.runs.manager import RunManager

    manager = RunManager(root)
    config = RunConfig(source=str(kit / "digits"), model=str(kit / "clip-random-weights-tiny"))
    results = []
    for _ in range(repeat):
        launched = time.monotonic()
        meter = CpuMeter(root)
        run_id = manager.start(config)
        meter.watch(manager.get(run_id).status.pid)
        started = time.monotonic() - launched
        run_dir = RunDir(root / run_id)
        phases: dict[str, float] = {"launch returned": round(started, 2)}
        deadline = launched + timeout_s
        while time.monotonic() < deadline:
            status = read_status(run_dir)
            seen = f"{status.state}: {status.progress.phase}" if status.state == "running" else status.state
            phases.setdefault(seen, round(time.monotonic() - launched, 2))
            if not status.active:
                break
            time.sleep(POLL_S)
        meter.stop()
        info = manager.get(run_id)
        ready = info.state == "succeeded" and any(run_dir.projections.glob("*.parquet")) and any(
            run_dir.quality.glob("*.json"))
        results.append({"run": run_id, "state": info.state, "ready": ready,
                        "total_s": round(time.monotonic() - launched, 2), "cpu_s": round(meter.seconds, 2),
                        "phases": phases})
        # The next launch only once this driver has gone, as a workshop's next click would find it.
        _wait_gone(info.status.pid, deadline)
    return results


class CpuMeter:
    """CPU-seconds a run costs the machine, whatever else loads it: its driver and all it starts, and the runs root's
    warm Ray with its workers, sampled every POLL_S (a process's last fraction of a sample is missed)."""

    def __init__(self, root: Path):
        self.root, self.seconds, self._driver = root, 0.0, None
        self._base: dict[tuple[int, float], float] = {}  # what processes alive at launch had used already
        self._used: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._sample(base=True)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, driver: int | None) -> None:
        self._driver = driver
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(used - self._base.get(key, 0.0) for key, used in self._used.items())

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._sample()

    def _sample(self, base: bool = False) -> None:
        import psutil

        from doggos.runs import warm

        roots = [pid for pid in (self._driver, (warm.read_state(self.root) or {}).get("pid")) if pid]
        for pid in roots:
            try:
                top = psutil.Process(pid)
                processes = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    key, times = (process.pid, process.create_time()), process.cpu_times()
                except psutil.Error:
                    continue
                used = times.user + times.system + times.children_user + times.children_system
                (self._base if base else self._used)[key] = used
                if base:
                    self._used[key] = used


def _wait_gone(pid: int | None, deadline: float) -> None:
    from doggos.base.processes import alive, reap

    while pid and time.monotonic() < deadline:
        reap()
        if not alive(pid):
            return
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doggos.bench.quick_run", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs launched one after the other (default 3)")
    parser.add_argument("--kit", help="a demo kit folder (made in a temporary folder when not given)")
    parser.add_argument("--runs-dir", help="the runs root (a temporary one when not given)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--cold", action="store_true", help="every run starts its own Ray (as before the warm Ray)")
    args = parser.parse_args(argv)
    # This process stands in for the dashboard's server: its runs share a warm Ray unless --cold.
    os.environ["DOGGOS_WARM_RAY"] = "0" if args.cold else "1"
    work = Path(tempfile.mkdtemp(prefix="doggos-quick-"))
    kit = Path(args.kit) if args.kit else work / "kit"
    if not (kit / "digits").is_dir():
        from doggos.pipeline.demo import make_demo_kit

        make_demo_kit(kit)
    root = Path(args.runs_dir) if args.runs_dir else work / "runs"
    root.mkdir(parents=True, exist_ok=True)
    results = measure(kit, root, args.repeat)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for number, result in enumerate(results, 1):
            edges = " · ".join(f"{name} {at:.2f}" for name, at in result["phases"].items())
            print(f"run {number}: {result['state']}, ready={result['ready']}, {result['total_s']:.2f} s, "
                  f"{result['cpu_s']:.1f} CPU-s — {edges}")
    print(f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
