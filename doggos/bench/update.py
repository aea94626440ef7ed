"""`python -m doggos.bench.update --images N --new SHARE`: an update and a killed, resumed run, against a full run."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doggos.bench.map_scale import positive
from doggos.bench.recheck import share

UPDATE_GOAL = 0.15  # issue 23: an update's time beyond the fixed start, as a share of a full run's
RESUME_GOAL = 1.1  # images embedded across a killed attempt and its resume, per image
MIN_COSINE = 0.9999  # every published row against its twin in an uninterrupted run
POLL_S = 0.2  # how often the background run's status is read (its driver rewrites it every second)
RUN_TIMEOUT_S = 3 * 3600.0
# The driver's log lines that end a stretch of a run (logged the moment it ends, unlike the 1 s heartbeat).
MARKS = {"found ": "listed", "plan: ": "ray up", "thumbnail shelf": "shelf"}
DEFINITIONS = """\
- full: a run of the N images, nothing reused. update: the run of the N + new images reusing the full run.
- seconds: from driver.run's call to the manifest (the run succeeded), in this process, its imports warm; Ray's shutdown
  after the manifest is left out of every figure alike.
- fixed start F: the mean of two no-change updates bracketing the update (of the full run on the N images, then of
  the update on the N + new images): listing, reading the reused run's hashes, Ray's start, the embedder actors'
  start and model load, hashing every file, writing the carried-over rows, the thumbnail shelf, the manifest.
- update ratio: (update − F) / (full − F): the update's own work against the full run's; goal ≤ {update_goal}.
- resume: images embedded by the killed attempt (its status at the kill: ≤ 1 s behind) + the resumed run's
  manifest.embedded, per image; goal ≤ {resume_goal}. Its two attempts run as background runs (RunManager, a
  `python -m doggos drive` process each), so their seconds include Python's start and imports.
- parity: same paths as the rows they are checked against, and every row's cosine ≥ {min_cosine}; the update's new rows
  against the model run in this process (doggos.pipeline.embedder, no Ray)."""


@dataclass
class Timed:
    """One run in this process: its manifest, and when each stretch ended, in seconds from driver.run's call."""

    name: str
    images: int
    embedded: int
    reused: int
    seconds: float  # to the manifest
    returned: float  # to driver.run's return: Ray shut down
    marks: dict[str, float] = field(default_factory=dict)
    shelf_s: float = 0.0  # the thumbnail shelf's build, as the driver logged it

    def stretches(self) -> dict[str, float]:
        """Listing; the reused hashes read and Ray started; the pipeline (actors, model, hashing, embedding, writing,
        the carried rows, publishing); the shelf; the manifest."""
        listed, ray_up = self.marks.get("listed", 0.0), self.marks.get("ray up", 0.0)
        shelf_end = self.marks.get("shelf", self.seconds)
        return {"listing": listed, "hashes read + Ray start": ray_up - listed,
                "Ray Data pipeline": shelf_end - self.shelf_s - ray_up,
                "shelf + manifest": self.seconds - shelf_end + self.shelf_s}


@dataclass
class Resume:
    """A background run SIGKILLed mid-way and resumed."""

    killed: bool = False  # False: the run finished before the kill could land (a tiny tree)
    fraction: float = 0.0  # of the images embedded at the kill, as its status said
    kept_files: int = 0
    kept_rows: int = 0  # rows in the Parquet kept for the resume
    first_embedded: int = 0  # the killed attempt's embedded count (the core's attempts[0] record)
    embedded: int = 0  # the resumed run's manifest.embedded
    reused: int = 0  # the resumed run's manifest.reused: the kept rows it carried over
    attempts: int = 0
    first_s: float = 0.0  # start → kill
    second_s: float = 0.0  # resume → succeeded

    def per_image(self, images: int) -> float:
        return (self.first_embedded + self.embedded) / images


@dataclass
class Parity:
    what: str
    rows: int
    same_paths: bool
    min_cosine: float

    @property
    def holds(self) -> bool:
        return self.same_paths and self.min_cosine >= MIN_COSINE


class _Marks(logging.Handler):
    """When the driver logged the lines of MARKS, in seconds from `started`."""

    def __init__(self, started: float):
        super().__init__(logging.INFO)
        self.started, self.marks, self.shelf_s = started, {}, 0.0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for prefix, mark in MARKS.items():
            if message.startswith(prefix) and mark not in self.marks:
                self.marks[mark] = time.monotonic() - self.started
                if mark == "shelf":
                    self.shelf_s = float(record.args[-1])


def timed_run(name: str, config) -> Timed:
    from doggos.runs import driver

    logger = logging.getLogger("doggos")
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    started = time.monotonic()
    marks = _Marks(started)
    finished: dict[str, float] = {}
    logger.addHandler(marks)
    try:
        manifest = driver.run(config, on_finished=lambda m: finished.setdefault("at", time.monotonic() - started))
    finally:
        logger.removeHandler(marks)
    return Timed(name, manifest.rows, manifest.embedded, manifest.reused, finished["at"], time.monotonic() - started,
                 marks.marks, marks.shelf_s)


def photo_tree(folder: Path, count: int) -> list[str]:
    """The bench's photos 0..count-1 (doggos.bench.launch.make_photos) and no others: the new ones of an earlier
    invocation are removed, so every invocation starts from the same tree."""
    from doggos.bench.launch import make_photos

    make_photos(folder, count)
    for extra in folder.glob("*/photo-*.jpg"):
        if int(extra.stem.split("-")[1]) >= count:
            extra.unlink()
    return sorted(str(p) for p in folder.glob("*/photo-*.jpg"))


def kill_and_resume(config, root: Path, kill_at: float) -> tuple[Resume, Path]:
    """Start a background run, SIGKILL its driver once its status shows `kill_at` of the images embedded, wait for the
    manager to mark it failed, resume it and wait for its success. No test hook: the kill lands where it lands."""
    import pyarrow.parquet as pq

    from doggos.base.rundir import RunDir
    from doggos.runs.manager import RunManager

    manager = RunManager(root)
    result = Resume()
    started = time.monotonic()
    run_id = manager.start(config)
    info = _wait(manager, run_id, lambda i: not i.active or (
        i.state == "running" and i.progress.embedded >= kill_at * max(i.progress.found, 1)))
    if info.active:
        result.fraction = info.progress.embedded / max(info.progress.found, 1)
        os.kill(info.status.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would; the manager does the rest
        result.first_s, result.killed = time.monotonic() - started, True
        info = _wait(manager, run_id, lambda i: not i.active)
        if info.state != "failed":
            raise RuntimeError(f"the killed run is {info.state}, not failed: {info.error}")
        kept = sorted(RunDir(info.path).kept.glob("*.parquet"))
        result.kept_files = len(kept)
        result.kept_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in kept)
        started = time.monotonic()
        manager.resume(run_id)
        info = _wait(manager, run_id, lambda i: not i.active)
        result.second_s = time.monotonic() - started
        result.first_embedded = int(info.status.attempts[0]["embedded"]) if info.status.attempts else 0
    else:
        result.first_s = time.monotonic() - started
    if info.state != "succeeded":
        raise RuntimeError(f"the resumed run {run_id} is {info.state}: {info.error}\n{manager.log_tail(run_id, 40)}")
    manifest = info.manifest
    result.embedded, result.reused, result.attempts = manifest.embedded, manifest.reused, manifest.attempts
    return result, info.path


def _wait(manager, run_id: str, condition):
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not condition(info := manager.get(run_id)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} still {info.state} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    return info


def rows_of(run) -> dict[str, tuple[str, np.ndarray]]:
    """path → (content hash, embedding) of a run's published rows."""
    import pyarrow.parquet as pq

    from doggos.base.rundir import RunDir, embedding_files

    rows = {}
    for part in embedding_files(RunDir(run)):
        table = pq.read_table(part, columns=["path", "content_hash", "embedding"])
        vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)) if table.num_rows else []
        for path, content_hash, vector in zip(table.column("path").to_pylist(),
                                              table.column("content_hash").to_pylist(), vectors):
            if path in rows:
                raise RuntimeError(f"{run} publishes {path} twice")
            rows[path] = (content_hash, vector)
    return rows


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(what: str, rows: dict, reference: dict) -> Parity:
    """`rows` against `reference` by path: the same paths, each with the same content hash; the cosine of each pair."""
    same = sorted(rows) == sorted(reference) and all(rows[p][0] == reference[p][0] for p in reference)
    cosines = [cosine(rows[p][1], reference[p][1]) for p in reference if p in rows]
    return Parity(what, len(rows), same, min(cosines, default=float("nan")))


def model_rows(paths: list[str], model: str, thumbnail_size: int) -> dict[str, tuple[str, np.ndarray]]:
    """The model's embedding of each file, computed in this process without Ray: the reference for new rows."""
    from doggos.pipeline.embedder import Embedder, prepare_images

    embedder = Embedder(model)
    rows = {}
    for start in range(0, len(paths), 32):
        part = paths[start:start + 32]
        data = [Path(p).read_bytes() for p in part]
        batch = {"path": np.array(part, dtype=object), "class": np.array([Path(p).parent.name for p in part], object),
                 "bytes": np.array(data, dtype=object)}
        vectors = embedder(prepare_images(batch, model, thumbnail_size)).column("embedding").to_numpy(
            zero_copy_only=False)
        rows.update((p, (hashlib.sha256(d).hexdigest(), v)) for p, d, v in zip(part, data, vectors))
    return rows


def isolated_costs(paths: list[str], full_run: Path, scratch: Path) -> dict[str, float]:
    """Two parts of the fixed start timed alone, in this process: hashing every file; carrying every row over."""
    from doggos.base.rundir import RunDir, embedding_files
    from doggos.pipeline import reuse

    started = time.perf_counter()
    listed = []
    for path in paths:
        listed.append((path, Path(path).parent.name, hashlib.sha256(Path(path).read_bytes()).hexdigest()))
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    written = reuse.write_carried(reuse.Carry.of(embedding_files(RunDir(full_run))), listed, scratch)
    carried = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return {"hash every file (sha256, one thread)": hashed,
            f"carry {written:,} rows over (read hashes, write)": carried}


def kill_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"not a share of at least 0 and below 1: {text!r} (e.g. 0.5)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m doggos.bench.update", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive, default=2880, help="images of the full run (default 2880)")
    parser.add_argument("--new", type=share, default=0.05, metavar="SHARE",
                        help="share of new images the update adds (default 0.05)")
    parser.add_argument("--model", help="model folder (default: a random-weights CLIP ViT-B/32 saved under --workdir)")
    parser.add_argument("--workdir", default="bench-data", help="where photos, model and runs go (default bench-data)")
    parser.add_argument("--kill-at", type=kill_share, default=0.5, metavar="SHARE",
                        help="kill the background run once its status shows this share embedded (default 0.5; 0: as "
                             "soon as it runs)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    return parser


def run_bench(args) -> dict:
    from doggos.bench.launch import bench_model, embedding_only
    from doggos.pipeline import reuse

    workdir = Path(args.workdir).absolute()
    model = args.model or str(bench_model(workdir))
    images, new = args.images, max(1, round(args.images * args.new))
    tree, runs = workdir / f"update-photos-{images}", workdir / "update-runs"
    shutil.rmtree(runs, ignore_errors=True)
    load = [os.getloadavg()[0]]
    print(f"photos: {images:,} under {tree} ...", flush=True)
    listed = photo_tree(tree, images)

    def config(name: str, reused: Path | None = None):
        plain = embedding_only(tree, runs / name, Path(model))
        return dataclasses.replace(plain, reuse=str(reused) if reused else None)

    settings = config("full")
    # The imports and the weights' fingerprint, paid once per process: before any clock.
    reuse.embedding_key(model, settings.fp16, settings.thumbnail_size)
    print(f"full run of {images:,} images ...", flush=True)
    full = timed_run("full", config("full"))
    print(f"background run, SIGKILLed at {args.kill_at:.0%} embedded, then resumed ...", flush=True)
    resume, resumed = kill_and_resume(dataclasses.replace(settings, output=None), runs / "managed", args.kill_at)
    print("no-change update ...", flush=True)
    before = timed_run("no-change update", config("no-change", runs / "full"))
    listed_new = photo_tree(tree, images + new)
    print(f"update: {new:,} new images ...", flush=True)
    update = timed_run(f"update (+{new:,} new)", config("update", runs / "full"))
    print("no-change update of the update ...", flush=True)
    after = timed_run("no-change update (after)", config("no-change-after", runs / "update"))
    load.append(os.getloadavg()[0])

    print("parity ...", flush=True)
    reference = rows_of(runs / "full")
    if sorted(reference) != listed:
        raise RuntimeError(f"the full run has {len(reference):,} rows for {len(listed):,} files, not one row each")
    updated = rows_of(runs / "update")
    fresh = sorted(set(listed_new) - set(listed))
    # Between them, the two checks of the update cover its every row: those of the full run's files, the new ones.
    parity = [compare("resumed run against the full run", rows_of(resumed), reference),
              compare("no-change update against the full run", rows_of(runs / "no-change"), reference),
              compare("update: carried rows against the full run", {p: updated[p] for p in updated if p in reference},
                      reference),
              compare("update: new rows against the model in this process",
                      {p: updated[p] for p in updated if p not in reference},
                      model_rows(fresh, model, settings.thumbnail_size))]
    costs = isolated_costs(listed_new, runs / "update", runs / "carry-scratch")
    fixed = (before.seconds + after.seconds) / 2
    return {"images": images, "new": new, "model": model, "cpus": os.cpu_count(), "load_average": load,
            "runs": [full, before, update, after], "fixed_s": fixed,
            "update_ratio": (update.seconds - fixed) / (full.seconds - fixed), "resume": resume,
            "parity": parity, "isolated": costs}


def format_report(result: dict) -> str:
    images, resume = result["images"], result["resume"]
    full = result["runs"][0]
    header = ("| run | images | embedded | reused | to the manifest (s) | listing | hashes read + Ray start "
              "| Ray Data pipeline | shelf + manifest | Ray shutdown |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in result["runs"]:
        parts = " | ".join(f"{s:.1f}" for s in run.stretches().values())
        lines.append(f"| {run.name} | {run.images:,} | {run.embedded:,} | {run.reused:,} | {run.seconds:.1f} | {parts} "
                     f"| {run.returned - run.seconds:.1f} |")
    lines += ["", "| kill + resume | value |", "|---|---:|"]
    if resume.killed:
        lines += [f"| killed at (status: embedded / images) | {resume.fraction:.1%} |",
                  f"| rows kept (files) | {resume.kept_rows:,} ({resume.kept_files}) |",
                  f"| embedded: killed attempt + resumed run | {resume.first_embedded:,} + {resume.embedded:,} |",
                  f"| resumed run: rows carried over | {resume.reused:,} |",
                  f"| start → kill (s) | {resume.first_s:.1f} |",
                  f"| resume → succeeded (s) | {resume.second_s:.1f} |",
                  f"| both attempts against the full run | {(resume.first_s + resume.second_s) / full.seconds:.2f}× |"]
    else:
        lines.append(f"| not killed: the run finished first | {resume.first_s:.1f} s |")
    lines += ["", "| fixed start, timed alone | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in result["isolated"].items()]
    lines += ["", "| goal | measured | met |", "|---|---:|---|"]
    fixed, ratio = result["fixed_s"], result["update_ratio"]
    update = result["runs"][2]
    lines.append(f"| update: (update − F) / (full − F) ≤ {UPDATE_GOAL} | ({update.seconds:.1f} − {fixed:.1f}) / "
                 f"({full.seconds:.1f} − {fixed:.1f}) = {ratio:.3f} | {_met(ratio <= UPDATE_GOAL)} |")
    if resume.killed:
        per = resume.per_image(images)
        lines.append(f"| resume: embedded across both attempts / images ≤ {RESUME_GOAL} | "
                     f"{resume.first_embedded + resume.embedded:,} / {images:,} = {per:.3f} | "
                     f"{_met(per <= RESUME_GOAL)} |")
    for p in result["parity"]:
        lines.append(f"| {p.what}: same paths, cosine ≥ {MIN_COSINE} | {p.rows:,} rows, paths "
                     f"{'same' if p.same_paths else 'DIFFER'}, min cosine {p.min_cosine:.6f} | {_met(p.holds)} |")
    load = result["load_average"]
    lines += ["", DEFINITIONS.format(update_goal=UPDATE_GOAL, resume_goal=RESUME_GOAL, min_cosine=MIN_COSINE), "",
              f"{result['cpus']} CPUs, load average {load[0]:.1f} → {load[1]:.1f}; model {result['model']}"]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def write_json(path: Path, result: dict) -> None:
    def plain(value):
        if isinstance(value, Timed):
            return {**dataclasses.asdict(value), "stretches": value.stretches()}
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        raise TypeError(type(value).__name__)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=plain, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Exit 0 once measured, goals met or not (speed is a figure, not a test); 1 when a parity check fails: a bug."""
    import ray.data

    args = build_parser().parse_args(argv)
    ray.data.DataContext.get_current().enable_progress_bars = False
    result = run_bench(args)
    print(format_report(result))
    if args.json:
        write_json(Path(args.json), result)
    return 0 if all(p.holds for p in result["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main())
