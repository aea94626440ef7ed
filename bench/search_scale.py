"""Search at scale: loading a 100,000 x 512 run's index, and warm query latency by vector, row, label and words.

    python bench/search_scale.py [--rows 100000] [--dim 512] [--workdir bench-data/search] [--no-text]

Writes a synthetic finished run (clustered random vectors, as bench/dashboard_scale.py does), loads its search
index once cold, measuring time and the process's memory growth against the raw float32 matrix, then times warm
queries (median of 20). Words are embedded by a random-weights CLIP with ViT-B/32's full text tower.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _dashboard_fixtures import write_fake_run  # noqa: E402  (the tests' synthetic-run writer)

REPEATS = 20  # warm queries timed; the median is reported
GOALS = {"load_s": 2.0, "memory_ratio": 1.3, "query_ms": 50.0}  # issue 10's speed goals


def timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def median_ms(action, repeats: int = REPEATS) -> float:
    action()  # warm: first-call costs (BLAS threads, caches) are not what a user waits for twice
    return statistics.median(timed(action)[1] for _ in range(repeats)) * 1000


def measure_load(run: str) -> dict:
    """Load the index cold in this (fresh) process: seconds, and resident memory growth in MB."""
    import psutil

    from doggos.explore import search

    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    index, seconds = timed(lambda: search.load_index(run))
    gc.collect()
    return {"load_s": seconds, "grew_mb": (process.memory_info().rss - before) / 2**20, "rows": len(index)}


def main() -> int:
    if sys.argv[1:2] == ["--measure-load"]:
        print(json.dumps(measure_load(sys.argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=120)
    parser.add_argument("--workdir", default=str(ROOT / "bench-data" / "search"))
    parser.add_argument("--no-text", action="store_true", help="skip the text query (saves ~500 MB of model)")
    args = parser.parse_args()

    import numpy as np

    from doggos.explore import search

    workdir = Path(args.workdir).absolute()
    runs = workdir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    per_label = args.rows // args.labels
    labels = {f"breed {i:03d}": per_label for i in range(args.labels)}
    run, write_s = timed(lambda: write_fake_run(runs, labels=labels, dim=args.dim, files=16))
    rows = per_label * args.labels
    raw_mb = rows * args.dim * 4 / 2**20

    # In a fresh process: this one's memory is churned by writing the run, which would blur the growth.
    measured = subprocess.run([sys.executable, __file__, "--measure-load", str(run)], check=True, capture_output=True,
                              text=True)
    cold = json.loads(measured.stdout.strip().splitlines()[-1])
    load_s, grew_mb = cold["load_s"], cold["grew_mb"]
    index = search.load_index(run)

    rng = np.random.default_rng(0)
    queries = iter(rng.normal(size=(10 * REPEATS, args.dim)).astype(np.float32))
    results = [
        ("write synthetic run", f"{write_s:.2f} s", ""),
        ("load index, cold (fresh process)", f"{load_s:.2f} s", f"goal <= {GOALS['load_s']:g} s"),
        ("memory growth / raw float32 (fresh process)", f"{grew_mb:.0f} / {raw_mb:.0f} MB = {grew_mb / raw_mb:.2f}x",
         f"goal <= {GOALS['memory_ratio']:g}x"),
        ("load index again, cached", f"{timed(lambda: search.load_index(run))[1] * 1000:.3f} ms", ""),
        ("top-10 by vector, warm", f"{median_ms(lambda: search.top_k(index, next(queries), k=10)):.1f} ms",
         f"goal <= {GOALS['query_ms']:g} ms"),
        ("top-1000 by vector", f"{median_ms(lambda: search.top_k(index, next(queries), k=1000)):.1f} ms", ""),
        ("top-10 by vector, 3 labels",
         f"{median_ms(lambda: search.top_k(index, next(queries), k=10, labels=list(labels)[:3])):.1f} ms", ""),
        ("top-10 by row", f"{median_ms(lambda: search.by_row(index, int(rng.integers(rows)), k=10)):.1f} ms", ""),
    ]
    if not args.no_text:
        from doggos.pipeline import encoders
        from doggos.pipeline.demo import save_random_clip

        model = workdir / "clip-vit-b-32-full-random"
        if not (model / "tokenizer.json").exists():
            save_random_clip(model, preset="vit-b-32-full")
        encoder, encoder_s = timed(lambda: encoders.text_encoder(str(model)))
        results.append(("load the text tower (ViT-B/32 text, random; imports done)", f"{encoder_s:.2f} s", ""))
        embed_ms = median_ms(lambda: encoder.encode(["a photo of a beagle"]))
        results.append(("embed 'a photo of a beagle'", f"{embed_ms:.1f} ms", ""))
        if args.dim == encoder.dim:  # the words' vectors must fit the run's
            words_ms = median_ms(lambda: search.by_text(index, encoder, "a photo of a beagle", k=10))
            results.append(("top-10 by words, warm (embed + search)", f"{words_ms:.1f} ms", ""))

    print(f"\n{rows:,} embeddings of dimension {args.dim}, {args.labels} labels; {os.cpu_count()} CPUs")
    print("| step | result | goal |\n|---|---:|---|")
    for name, value, goal in results:
        print(f"| {name} | {value} | {goal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
