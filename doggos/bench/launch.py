"""The benchmark's main figures: doggos from launch to a finished run against a plain-process ceiling.

Every ratio comes from one invocation: the ceiling (one process, no Ray, its best batch size) and doggos' own run of
the same images. The command is `doggos.bench.command`; the post-run steps' figures are `doggos.bench.steps`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doggos.base.config import RunConfig
from doggos.base.processes import PeakMemory
from doggos.pipeline.progress import Progress

PHOTO_SIZE = (500, 375)  # the doggos photos' typical size
CEILING_BATCH_SIZES = (1, 4, 8, 16, 32)
SWEEP_IMAGES = 64  # images per batch-size trial when looking for the ceiling's best batch size
STATUS_POLL_S = 0.25  # how often the launch measurement reads the run's status.json (the run rewrites it every second)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # so `python -m doggos` finds this checkout from any folder


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


def ceiling(model: str, paths: list[str], batch_size: int | None = None) -> tuple[Measurement, Measurement, int]:
    """One plain process, no Ray: decode + the model's own preprocessing + get_image_features at its best batch size
    (found by a sweep, unless `batch_size` is given)."""
    import torch
    from PIL import Image

    from doggos.pipeline.models import load_image_processor, load_model

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

    sweep = {b: measure(b, paths[:SWEEP_IMAGES])[0] for b in CEILING_BATCH_SIZES} if batch_size is None else {}
    best = batch_size or max(sweep, key=sweep.get)
    end_to_end, model_only = measure(best, paths)
    note = "batch sizes tried: " + ", ".join(f"{b}: {r:.1f}/s" for b, r in sweep.items()) if sweep else ""
    return (
        Measurement(f"ceiling: plain process, batch {best}, end to end", end_to_end, note),
        Measurement(f"ceiling: model alone (get_image_features), batch {best}", model_only),
        best,
    )


def pipeline_rates(config: RunConfig, plan=None) -> tuple[float, float, dict]:
    """(steady-state images/s, end-to-end images/s including Ray's start, manifest) for one pipeline run."""
    from doggos.runs import driver

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
    from doggos.base.rundir import read_json

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


def run_benchmark(workdir: Path, images: int, tutorial_images: int, memory: bool) -> tuple[list[Measurement], Launch | None]:
    from doggos.base.plan import ResourcePlan

    workdir = Path(workdir).absolute()
    model = bench_model(workdir)
    results: list[Measurement] = []
    launch = None
    if images:
        source = make_photos(workdir / f"photos-{images}", images)
        paths = sorted(str(p) for p in source.glob("*/*.jpg"))[:images]
        print(f"ceiling: {len(paths)} images in one plain process ...", flush=True)
        before, model_only, best = ceiling(str(model), paths)
        print("doggos from launch to a finished run (`python -m doggos embed`, default settings) ...", flush=True)
        launch = launch_run(str(model), source, workdir / f"run-launch-{images}")
        print("the ceiling again, after doggos' run ...", flush=True)
        after = ceiling(str(model), paths, best)[0]
        # This VM's speed drifts by 10-20 % within minutes: the ceiling brackets doggos' run; the ratio uses the mean.
        top = Measurement(f"ceiling: plain process, batch {best}, end to end (mean of before and after doggos' run)",
                          (before.images_per_s + after.images_per_s) / 2,
                          f"before {before.images_per_s:.2f}/s, after {after.images_per_s:.2f}/s; {before.note}")
        results += [top, model_only]
        results += [
            Measurement("doggos defaults, steady state", launch.steady),
            Measurement("doggos defaults, launch → finished run with its map (imports, Ray, model, steps)",
                        launch.images / launch.finished, f"{launch.finished:.1f} s for {launch.images} images; "
                        f"the ceiling's compute: {launch.images / top.images_per_s:.1f} s"),
            Measurement("doggos defaults, launch → the prompt back (the process's exit, as a user waits for it)",
                        launch.images / launch.exited, f"{launch.exited:.1f} s: the manifest at "
                        f"{launch.finished:.1f} s, then {launch.exited - launch.finished:.1f} s to the exit"),
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
    from doggos.pipeline.demo import save_random_clip

    model = Path(workdir) / "clip-vit-b-32-random"
    if not (model / "config.json").exists():
        print("saving a random-weights CLIP ViT-B/32 (same compute as openai/clip-vit-base-patch32) ...", flush=True)
        save_random_clip(model, preset="vit-b-32")
    return model


def format_table(results: list[Measurement]) -> str:
    reference = results[0].images_per_s
    lines = ["| measurement | images/s | × ceiling |", "|---|---:|---:|"]
    for m in results:
        if m.name.startswith("peak memory"):
            lines.append(f"| {m.name} | {m.note} | {m.images_per_s:.2f}× |")
        else:
            lines.append(f"| {m.name} | {m.images_per_s:.2f} | {m.images_per_s / reference:.2f} |")
    return "\n".join(lines)
