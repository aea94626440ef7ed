"""`python -m doggos bench` (and `python -m doggos.bench`): the benchmark's options, its parts in order, the tables."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from doggos.bench.launch import format_table, run_benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (the `bench` command of `python -m doggos` takes them too, once it passes them on)."""
    parser.add_argument("--workdir", default="bench-data",
                        help="where photos, model and runs go (reused; default bench-data)")
    parser.add_argument("--images", type=int, default=1000,
                        help="photos for the ceiling and the launch run (default 1000); 0 skips both")
    parser.add_argument("--tutorial-images", type=int, default=300,
                        help="images for the slow tutorial settings (default 300); 0 skips them")
    parser.add_argument("--memory", action="store_true", help="also compare peak memory for N/4 and N images")
    parser.add_argument("--steps", type=int, nargs="*", default=[], metavar="ROWS",
                        help="also time search and the quality step on synthetic runs of ROWS rows, and on two nodes")
    parser.add_argument("--json", help="also write the results here")


def main(args) -> int:
    import platform

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    results, launch = run_benchmark(Path(args.workdir), args.images, args.tutorial_images, args.memory)
    steps = getattr(args, "steps", None) or []
    if steps:
        from doggos.bench.steps import cluster_spread, step_figures

        figures = step_figures(Path(args.workdir), steps) + cluster_spread(Path(args.workdir))
    else:
        figures = []
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    if results:
        print(format_table(results))
        for m in results:
            if m.note:
                print(f"- {m.name}: {m.note}")
    if launch:
        print("\n| launch → finished run: where the time goes | seconds |\n|---|---:|")
        for name, seconds in launch.where_time_goes():
            print(f"| {name} | {seconds:.1f} |")
    if figures:
        print("\n| post-run steps | result |\n|---|---:|")
        for name, value in figures:
            print(f"| {name} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "results": [m.__dict__ for m in results], "launch": launch.__dict__ if launch else None,
            "where_time_goes": launch.where_time_goes() if launch else None, "steps": figures}, indent=2))
    return 0
