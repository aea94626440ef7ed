"""`python -m doggos bench`: doggos from launch to map against a plain-process ceiling, and the post-run steps' costs.

Every ratio comes from one invocation: the ceiling (one process, no Ray, its best batch size) and doggos' own run of
the same images. `python -m doggos.bench` takes the same options (and `--steps`, until the CLI passes it on).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doggos.config import RunConfig
from doggos.processes import tree_pss
from doggos.progress import Progress

PHOTO_SIZE = (500, 375)  # the doggos photos' typical size
CEILING_BATCH_SIZES = (1, 4, 8, 16, 32)
SWEEP_IMAGES = 64  # images per batch-size trial when looking for the ceiling's best batch size
STATUS_POLL_S = 0.25  # how often the launch measurement reads the run's status.json (the run rewrites it every second)
SEARCH_REPEATS = 20  # warm queries timed per size; the median is reported
SPREAD_ROWS = 20_000  # rows for the two-node check: ~20 neighbour tasks, enough to see where they land
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # so `python -m doggos` finds this checkout from any folder


@dataclass
class Measurement:
    name: str
    images_per_s: float
    note: str = ""


def make_photos(folder: Path, count: int, labels: int = 10, seed: int = 0) -> Path:
    """`count` photo-like JPEGs of PHOTO_SIZE under folder/<label>/, made once (only missing ones are written).

    Real detail, so decoding costs what a photo costs: crops of scikit-learn's two sample photographs (shipped with
    it, offline), rescaled, recoloured, mirrored, with sensor noise; 20-70 KB each, like the doggos photos.
    """
    from PIL import Image

    folder = Path(folder)
    sources = None
    for i in range(count):
        out = folder / f"label-{i % labels}" / f"photo-{i:05d}.jpg"
        if out.exists():
            continue
        if sources is None:
            from sklearn.datasets import load_sample_images

            sources = [Image.fromarray(pixels) for pixels in load_sample_images().images]
        out.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, i])  # photo i is the same whatever else is made
        photo, quality = _photo(sources[i % len(sources)], rng)
        photo.save(out, quality=quality)
    return folder


def _photo(source, rng: np.random.Generator):
    from PIL import Image

    width, height = PHOTO_SIZE
    crop_w = int(min(source.width, source.height * width / height) * rng.uniform(0.45, 1.0))
    crop_h = int(crop_w * height / width)
    left, top = rng.integers(0, source.width - crop_w + 1), rng.integers(0, source.height - crop_h + 1)
    image = source.resize(PHOTO_SIZE, Image.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20)
    pixels += rng.normal(0, rng.uniform(1, 4), pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), int(rng.integers(80, 91))


def ceiling(model: str, paths: list[str]) -> tuple[Measurement, Measurement, int]:
    """One plain process, no Ray: decode + the model's own preprocessing + get_image_features at its best batch size."""
    import torch
    from PIL import Image

    from doggos.models import load_image_processor, load_model

    torch.set_num_threads(os.cpu_count() or 1)
    processor, clip = load_image_processor(model), load_model(model)

    def embed(batch_paths: list[str]) -> float:
        images = [Image.open(p).convert("RGB") for p in batch_paths]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        started = time.perf_counter()
        with torch.inference_mode():
            clip.get_image_features(pixel_values=pixels)
        return time.perf_counter() - started

    def measure(batch_size: int, subset: list[str]) -> tuple[float, float]:
        embed(subset[:batch_size])  # warm-up: first calls allocate and pick kernels
        started, model_s = time.perf_counter(), 0.0
        for i in range(0, len(subset), batch_size):
            model_s += embed(subset[i : i + batch_size])
        return len(subset) / (time.perf_counter() - started), len(subset) / model_s

    sweep = {b: measure(b, paths[:SWEEP_IMAGES])[0] for b in CEILING_BATCH_SIZES}
    best = max(sweep, key=sweep.get)
    end_to_end, model_only = measure(best, paths)
    note = "batch sizes tried: " + ", ".join(f"{b}: {r:.1f}/s" for b, r in sweep.items())
    return (
        Measurement(f"ceiling: plain process, batch {best}, end to end", end_to_end, note),
        Measurement(f"ceiling: model alone (get_image_features), batch {best}", model_only),
        best,
    )


def pipeline_rates(config: RunConfig, plan=None) -> tuple[float, float, dict]:
    """(steady-state images/s, end-to-end images/s including Ray's start, manifest) for one pipeline run."""
    from doggos import driver

    samples: list[tuple[float, int]] = []

    def record(progress: Progress) -> None:
        samples.append((time.monotonic(), progress.embedded))

    started = time.monotonic()
    manifest = driver.run(config, on_progress=record, plan=plan)
    end_to_end = manifest.rows / (time.monotonic() - started)
    return steady_rate(samples, manifest.rows), end_to_end, manifest


def steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Slope of embedded-vs-time between 10 % and 90 % of the images: model loading and the tail left out."""
    window = [(t, n) for t, n in samples if 0.1 * total <= n <= 0.9 * total]
    if len(window) < 2 or window[-1][0] == window[0][0]:
        return float("nan")
    times, counts = np.array(window, dtype=float).T
    return float(np.polyfit(times, counts, 1)[0])


EMBEDDING_PHASES = {  # status.json's phases up to published embeddings, and the stretch each one starts
    "starting ray": "starting Ray", "loading model": "actors load the model, first batch", "embedding": "embedding",
    "writing": "writing, publishing"}


@dataclass
class Launch:
    """What one `python -m doggos embed` run with default settings did, in seconds from its launch."""

    images: int
    phases: dict[str, float]  # when status.json first showed each phase (±STATUS_POLL_S + the run's 1 s heartbeat)
    finished: float  # manifest.json written: the run is done, its map and reports with it
    exited: float  # the process ended
    steps: dict[str, float | None]  # the manifest's seconds per post-run step, in the order they ran
    steady: float  # images/s between 10 % and 90 % of the images
    step_starts: dict[str, float] = field(default_factory=dict)  # the driver's own record (status.json's step_started)

    def where_time_goes(self) -> list[tuple[str, float]]:
        """The run's stretches from launch to exit, in seconds; they add up to the whole."""
        step_seconds = sum(s or 0.0 for s in self.steps.values())
        steps_start = min((t for p, t in self.phases.items() if p not in EMBEDDING_PHASES and p not in
                           (None, "starting", "listing", "done")), default=self.finished - step_seconds)
        before = 0.0  # a step's exact start, less the steps before it: the first step's start, though it was not seen
        for name, seconds in self.steps.items():
            if name in self.step_starts:
                steps_start = self.step_starts[name] - before
                break
            before += seconds or 0.0
        starts = [("Python start, imports, checks, listing", 0.0)]
        starts += [(name, self.phases[phase]) for phase, name in EMBEDDING_PHASES.items() if phase in self.phases]
        stretches = [(name, end - start) for (name, start), (_, end) in zip(starts, starts[1:] + [("", steps_start)])]
        stretches += [(f"{name} step", seconds or 0.0) for name, seconds in self.steps.items()]
        stretches.append(("after the steps, until the manifest", self.finished - steps_start - step_seconds))
        stretches.append(("after the manifest: Ray shutdown, exit", self.exited - self.finished))
        return stretches


def launch_run(model: str, source: Path, out: Path) -> Launch:
    """Time `python -m doggos embed` with default settings (map, post-run steps) from the command to its exit."""
    from doggos.rundir import read_json

    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "doggos", "embed", "--source", str(source), "--model", model, "--out", str(out)]
    paths = [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    phases: dict[str, float] = {}
    step_starts: dict[str, float] = {}
    samples: list[tuple[float, int]] = []
    log = out.with_name(out.name + ".log")
    with open(log, "w") as handle:
        started = time.time()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
        while True:
            try:
                process.wait(timeout=STATUS_POLL_S)
                break
            except subprocess.TimeoutExpired:
                status = read_json(out / "status.json", {}) or {}
                progress = status.get("progress") or {}
                now = time.time() - started
                if status.get("step") and status.get("step_started"):
                    step_starts.setdefault(status["step"], status["step_started"] - started)
                phases.setdefault(progress.get("phase"), now)
                if progress.get("phase") == "embedding":
                    samples.append((now, progress.get("embedded", 0)))
        exited = time.time() - started
    manifest = read_json(out / "manifest.json")
    if process.returncode or manifest is None:
        raise RuntimeError(f"the benchmark's run failed (exit code {process.returncode}): see {log}")
    finished = (out / "manifest.json").stat().st_mtime - started
    return Launch(images=manifest["rows"], phases=phases, finished=finished, exited=exited,
                  steps=manifest.get("steps") or {}, steady=steady_rate(samples, manifest["rows"]),
                  step_starts=step_starts)


class PeakMemory:
    """Peak proportional set size (PSS: shared pages split fairly) of this process and all its descendants."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, tree_pss())


def run_benchmark(workdir: Path, images: int, tutorial_images: int, memory: bool) -> tuple[list[Measurement], Launch | None]:
    from doggos.plan import ResourcePlan

    workdir = Path(workdir).absolute()
    model = bench_model(workdir)
    results: list[Measurement] = []
    launch = None
    if images:
        source = make_photos(workdir / f"photos-{images}", images)
        paths = sorted(str(p) for p in source.glob("*/*.jpg"))[:images]
        print(f"ceiling: {len(paths)} images in one plain process ...", flush=True)
        top, model_only, best = ceiling(str(model), paths)
        results += [top, model_only]
        print("doggos from launch to a finished run (`python -m doggos embed`, default settings) ...", flush=True)
        launch = launch_run(str(model), source, workdir / f"run-launch-{images}")
        results += [
            Measurement("doggos defaults, steady state", launch.steady),
            Measurement("doggos defaults, launch → finished run with its map (imports, Ray, model, steps)",
                        launch.images / launch.finished, f"{launch.finished:.1f} s for {launch.images} images; "
                        f"the ceiling's compute: {launch.images / top.images_per_s:.1f} s"),
        ]
    if tutorial_images:
        print(f"tutorial settings on {tutorial_images} images ...", flush=True)
        tutorial_plan = ResourcePlan(device="cpu", actors=1, cpus_per_actor=1.0, gpus_per_actor=0.0,
                                     threads_per_actor=0, batch_size=2, task_cpus=1.0, decode_in_actor=False)
        config = embedding_only(make_photos(workdir / f"photos-{tutorial_images}", tutorial_images),
                                workdir / "run-tutorial", model)
        steady_t, e2e_t, _ = pipeline_rates(config, tutorial_plan)
        results += [
            Measurement("tutorial settings (batch 2, 1 actor, num_cpus=1), steady state", steady_t),
            Measurement("tutorial settings, end to end", e2e_t),
        ]
    if memory:
        small = max(50, images // 4)
        print(f"peak memory: {small} vs {4 * small} images ...", flush=True)
        peaks = {}
        for count in (small, 4 * small):
            config = embedding_only(make_photos(workdir / f"photos-{count}", count), workdir / f"run-mem-{count}", model)
            with PeakMemory() as watch:
                pipeline_rates(config)
            peaks[count] = watch.peak
        results.append(Measurement(
            f"peak memory, {small} → {4 * small} images", peaks[4 * small] / peaks[small],
            f"{peaks[small] / 2**30:.2f} GiB → {peaks[4 * small] / 2**30:.2f} GiB (PSS of all processes)",
        ))
    return results, launch


def embedding_only(source: Path, output: Path, model: Path) -> RunConfig:
    """A run without post-run steps: the tutorial and memory figures measure embedding alone."""
    return RunConfig(source=str(source), output=str(output), model=str(model), projection=False, quality=False)


def bench_model(workdir: Path) -> Path:
    """A random-weights CLIP ViT-B/32 (the compute of openai/clip-vit-base-patch32), saved once under workdir."""
    from doggos.demo import save_random_clip

    model = Path(workdir) / "clip-vit-b-32-random"
    if not (model / "config.json").exists():
        print("saving a random-weights CLIP ViT-B/32 (same compute as openai/clip-vit-base-patch32) ...", flush=True)
        save_random_clip(model, preset="vit-b-32")
    return model


def synthetic_run(folder: Path, rows: int, model: str, dim: int = 512, labels: int = 120, seed: int = 0,
                  prompt_features: bool = False) -> Path:
    """A finished run's embeddings without embedding anything: `labels` clusters of unit vectors, the Parquet columns the
    steps read, and the model its text tower comes from. `prompt_features`: also the zero-shot prompts' features, as
    the embedder actors leave them in a run (computed in a child process, so this one does not import torch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from doggos.embedder import embedding_array
    from doggos.rundir import write_json_atomic

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
        from doggos.processes import PROJECT_ROOT

        subprocess.run([sys.executable, "-c", "import sys; from doggos.bench import embed_prompts; embed_prompts(sys.argv[1])",
                        str(folder)], check=True, cwd=PROJECT_ROOT)
    return folder


def embed_prompts(folder: Path) -> None:
    """Write a synthetic run's prompt features with its model's text tower, as its embedder actors would have."""
    from doggos.encoders import TextEncoder
    from doggos.pipeline import write_prompt_features
    from doggos.quality import label_names, prompts
    from doggos.quality_step import logit_scale, run_rows
    from doggos.rundir import RunDir, read_json

    run = RunDir(folder)
    model = read_json(run.config)["model"]
    texts = prompts(label_names(run_rows(run)[0]))
    write_prompt_features(run, texts, TextEncoder(model).encode(texts), logit_scale=logit_scale(model))


def step_figures(workdir: Path, rows_list: list[int]) -> list[tuple[str, str]]:
    """Search latency, and the label-quality step's time and peak memory (neighbours on a local Ray), per size: on a
    run as the pipeline leaves it (the zero-shot prompts embedded by its actors), then on an older run without them
    (the step loads the model's text tower)."""
    from doggos import search

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
        del index
        search.clear_cache()
        figures += _quality_step_figures(run, rows, "a run's")
    for rows in rows_list:  # last: loading the text tower imports torch into this process for good
        run = synthetic_run(workdir / f"steps-{rows}", rows, model)
        figures += _quality_step_figures(run, rows, "an older run's (text tower loaded)")
    return figures


def _quality_step_figures(run: Path, rows: int, which: str) -> list[tuple[str, str]]:
    """The quality step's time, and its peak memory beyond what was there before it (this process and a fresh local
    Ray, as a run's steps find it), also as a multiple of the embedding matrix (rows × 512 float32)."""
    from doggos.cluster import ray_connection
    from doggos.quality_step import DEFAULT_PARAMS, QUALITY

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
    import ray
    from ray.cluster_utils import Cluster

    from doggos.quality_step import DEFAULT_PARAMS, QUALITY

    def cpu_seconds(node) -> float:  # of the processes the node's raylet started: its workers
        children = psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True)
        return sum(sum(child.cpu_times()[:2]) for child in children if child.is_running())

    run = synthetic_run(Path(workdir).absolute() / f"steps-{rows}", rows, str(bench_model(Path(workdir).absolute())))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = [cluster.head_node, cluster.add_node(num_cpus=1)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        before = [cpu_seconds(node) for node in nodes]
        _, seconds = _timed(lambda: QUALITY.run(run, DEFAULT_PARAMS, force=True))
        used = [cpu_seconds(node) - start for node, start in zip(nodes, before)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    return [(f"quality step, {rows:,} rows, two-node cluster (1 CPU each): time", f"{seconds:.1f} s"),
            ("... CPU seconds of the workers on the head / on the second node", " / ".join(f"{s:.1f}" for s in used))]


def _timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def format_table(results: list[Measurement]) -> str:
    reference = results[0].images_per_s
    lines = ["| measurement | images/s | × ceiling |", "|---|---:|---:|"]
    for m in results:
        if m.name.startswith("peak memory"):
            lines.append(f"| {m.name} | {m.note} | {m.images_per_s:.2f}× |")
        else:
            lines.append(f"| {m.name} | {m.images_per_s:.2f} | {m.images_per_s / reference:.2f} |")
    return "\n".join(lines)


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
    figures = (step_figures(Path(args.workdir), steps) + cluster_spread(Path(args.workdir))) if steps else []
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


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m doggos.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
