"""`python -m doggos bench --steps ROWS…`: search latency, the label-quality step's time and peak memory on synthetic
runs of ROWS rows, and how the step spreads over a two-node test cluster."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from doggos.base.processes import PROJECT_ROOT, PeakMemory, tree_pss
from doggos.bench.launch import bench_model

SEARCH_REPEATS = 20  # warm queries timed per size; the median is reported
SPREAD_ROWS = 20_000  # rows for the two-node check: ~20 neighbour tasks, enough to see where they land


def synthetic_run(folder: Path, rows: int, model: str, dim: int = 512, labels: int = 120, seed: int = 0,
                  prompt_features: bool = False) -> Path:
    """A finished run's embeddings without embedding anything: `labels` clusters of unit vectors, the Parquet columns the
    steps read, and the model its text tower comes from. `prompt_features`: also the zero-shot prompts' features, as
    the embedder actors leave them in a run (computed in a child process, so this one does not import torch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from doggos.base.rundir import write_json_atomic
    from doggos.pipeline.embedder import embedding_array

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "embeddings").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    label_of_row = np.arange(rows) % labels
    vectors = rng.normal(size=(labels, dim)).astype(np.float32)[label_of_row]
    vectors += rng.normal(0, 0.6, (rows, dim)).astype(np.float32)  # overlapping clusters, like real breeds
    names = [f"breed-{i:03d}" for i in label_of_row]
    pq.write_table(pa.table({
        "path": [f"/data/{name}/{row:06d}.jpg" for row, name in enumerate(names)], "class": names,
        "embedding": embedding_array(vectors), "content_hash": [f"{row:064x}" for row in range(rows)],
    }), folder / "embeddings" / "part-0.parquet", row_group_size=1024)  # small row groups, like Ray's files of a block
    write_json_atomic(folder / "config.json", {"model": model})
    if prompt_features:
        script = "import sys; from doggos.bench.steps import embed_prompts; embed_prompts(sys.argv[1])"
        subprocess.run([sys.executable, "-c", script, str(folder)], check=True, cwd=PROJECT_ROOT)
    return folder


def embed_prompts(folder: Path) -> None:
    """Write a synthetic run's prompt features with its model's text tower, as its embedder actors would have."""
    from doggos.base.rundir import RunDir, read_json
    from doggos.explore.quality import label_names, prompts
    from doggos.explore.quality_step import logit_scale, run_rows
    from doggos.pipeline.dataset import write_prompt_features
    from doggos.pipeline.encoders import TextEncoder

    run = RunDir(folder)
    model = read_json(run.config)["model"]
    texts = prompts(label_names(run_rows(run)[0]))
    write_prompt_features(run, texts, TextEncoder(model).encode(texts), logit_scale=logit_scale(model))


def step_figures(workdir: Path, rows_list: list[int]) -> list[tuple[str, str]]:
    """Search latency, and the label-quality step's time and peak memory (neighbours on a local Ray), per size: on a
    run as the pipeline leaves it (the zero-shot prompts embedded by its actors), then on an older run without them
    (the step loads the model's text tower)."""
    from doggos.explore import search

    workdir = Path(workdir).absolute()
    model = str(bench_model(workdir))
    figures = []
    for rows in rows_list:
        run = synthetic_run(workdir / f"steps-{rows}", rows, model, prompt_features=True)
        index = search.load_index(run)
        queries = iter(np.random.default_rng(1).normal(size=(SEARCH_REPEATS + 1, index.dim)).astype(np.float32))
        times = [_timed(lambda: search.top_k(index, next(queries), k=10))[1] for _ in range(SEARCH_REPEATS + 1)]
        median_ms = statistics.median(times[1:]) * 1000  # the first query warms caches: left out
        figures.append((f"search: top-10 by vector, {rows:,} rows (warm median)", f"{median_ms:.1f} ms"))
        index = None  # the matrix goes before the step is measured
        search.clear_cache()
        figures += _quality_step_figures(run, rows, "a run's")
    for rows in rows_list:  # last: loading the text tower imports torch into this process for good
        run = synthetic_run(workdir / f"steps-{rows}", rows, model)
        figures += _quality_step_figures(run, rows, "an older run's (text tower loaded)")
    return figures


def _quality_step_figures(run: Path, rows: int, which: str) -> list[tuple[str, str]]:
    """The quality step's time, and its peak memory beyond what was there before it (this process and a fresh local
    Ray, as a run's steps find it), also as a multiple of the embedding matrix (rows × 512 float32)."""
    from doggos.explore.quality_step import DEFAULT_PARAMS, QUALITY
    from doggos.pipeline.cluster import ray_connection

    print(f"quality step on {which} {rows:,} rows ...", flush=True)
    with ray_connection(None):
        baseline = tree_pss()
        with PeakMemory() as watch:
            _, seconds = _timed(lambda: QUALITY.run(run, DEFAULT_PARAMS, force=True))
    beyond = watch.peak - baseline
    return [(f"quality step on {which} {rows:,} rows: time", f"{seconds:.1f} s"),
            (f"quality step on {which} {rows:,} rows: peak memory beyond the baseline, all processes",
             f"{beyond / 2**20:.0f} MiB = {beyond / (rows * 512 * 4):.2f}× the matrix")]


def cluster_spread(workdir: Path, rows: int = SPREAD_ROWS) -> list[tuple[str, str]]:
    """The quality step on a two-node test cluster (one CPU each): its time, and the CPU seconds of each node's workers."""
    import psutil
    from ray.cluster_utils import Cluster

    from doggos.explore.quality_step import DEFAULT_PARAMS, QUALITY
    from doggos.pipeline.cluster import ray_connection

    def cpu_seconds(node) -> float:  # of the processes the node's raylet started: its workers
        children = psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True)
        return sum(sum(child.cpu_times()[:2]) for child in children if child.is_running())

    run = synthetic_run(Path(workdir).absolute() / f"steps-{rows}", rows, str(bench_model(Path(workdir).absolute())))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = [cluster.head_node, cluster.add_node(num_cpus=1)]
        cluster.wait_for_nodes()
        with ray_connection(cluster.address):
            before = [cpu_seconds(node) for node in nodes]
            _, seconds = _timed(lambda: QUALITY.run(run, DEFAULT_PARAMS, force=True))
            used = [cpu_seconds(node) - start for node, start in zip(nodes, before)]
    finally:
        cluster.shutdown()
    return [(f"quality step, {rows:,} rows, two-node cluster (1 CPU each): time", f"{seconds:.1f} s"),
            ("... CPU seconds of the workers on the head / on the second node", " / ".join(f"{s:.1f}" for s in used))]


def _timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started
