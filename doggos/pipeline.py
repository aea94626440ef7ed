"""The Ray Data pipeline: one validated RunConfig in; Parquet, failures, Ray stats and a manifest out."""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from doggos import models
from doggos.cluster import cluster_shape, dashboard_url, ray_connection, usable_gpus
from doggos.config import RunConfig, user_message
from doggos.plan import ResourcePlan, plan_resources
from doggos.progress import Progress, tracker_actor
from doggos.rundir import RunDir, now_iso, update_status, write_json_atomic
from doggos.sources import Source, label_of, list_images, open_source

DECODE_TASK_MEMORY = 512 * 2**20  # bytes a decode worker holds: transformers (~350 MB) plus a block of decoded images
FILES_PER_BLOCK = 32  # small blocks stream: decoded pixels stay ~20 MB a block, and progress moves in small steps
ACTOR_START_TIMEOUT_S = 600  # on a cluster: time for every embedder actor to start (a fresh node may download the model)
PROGRESS_EVERY_S = 1.0  # how often the driver polls the tracker and rewrites status.json

log = logging.getLogger("doggos")


class PipelineError(RuntimeError):
    """The run cannot go on; the message says why."""


class Cancelled(BaseException):
    """Raised in the driver when the run is cancelled (SIGTERM); BaseException so no `except Exception` swallows it."""


def cancel_on_sigterm() -> None:
    """Make SIGTERM (how a run is cancelled) raise Cancelled in this process's main thread, once."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; let the cleanup finish
        raise Cancelled()

    signal.signal(signal.SIGTERM, handler)


def build_dataset(config: RunConfig, source: Source, paths: list[str], plan: ResourcePlan, tracker=None):
    """read files → label from parent folder → decode + preprocess → embed (actor pool); lazy, nothing runs yet."""
    import ray

    ds = ray.data.read_binary_files(
        paths, include_paths=True, filesystem=source.filesystem, num_cpus=plan.task_cpus,
        # Small blocks stream; and even a small run gets a few blocks per actor, so every actor has work.
        override_num_blocks=min(len(paths), max(math.ceil(len(paths) / FILES_PER_BLOCK), 4 * plan.actors)),
    )
    ds = ds.map(add_label, fn_kwargs={"scheme": source.scheme}, num_cpus=plan.task_cpus)
    from doggos.embedder import Embedder, prepare_images

    if not plan.decode_in_actor:
        ds = ds.map_batches(
            prepare_images,
            fn_kwargs={"model": config.model, "thumbnail_size": config.thumbnail_size, "tracker": tracker},
            num_cpus=plan.task_cpus,
            # A decode task holds a block of images decoded; saying so also makes its request differ from the embedder's,
            # which keeps Ray from fusing decoding into the actors, where it would run serially with the model.
            memory=DECODE_TASK_MEMORY,
        )
    return ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": config.model,
            "device": plan.device,
            "fp16": config.fp16,
            "threads": plan.threads_per_actor,
            "tracker": tracker,
            "thumbnail_size": config.thumbnail_size,
        },
        batch_size=plan.batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor,
    )


def add_label(row: dict, scheme: str) -> dict:
    """Label a row with its parent folder's name and give its path back its URI scheme."""
    row["class"] = label_of(row["path"])
    row["path"] = scheme + row["path"]
    return row


def run(config: RunConfig, on_progress: Callable[[Progress], None] | None = None, plan: ResourcePlan | None = None) -> dict:
    """Run the whole pipeline in this process; status.json tracks it, manifest.json (last) records the result.

    `plan` overrides the derived resource plan (the benchmark uses it to replay the tutorial's settings).
    """
    if not config.output:
        raise PipelineError("output: no output folder given")
    run_dir = RunDir(config.output)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    # A rerun into the same folder first unpublishes the old result: from here on nothing reads as complete
    # until the new manifest is written.
    run_dir.manifest.unlink(missing_ok=True)
    shutil.rmtree(run_dir.projections, ignore_errors=True)  # maps of the old rows would mislabel the new ones
    write_json_atomic(run_dir.config, config.to_dict())
    started = time.time()
    update_status(run_dir, state="running", pid=os.getpid(), started_at=now_iso(), error=None,
                  progress=Progress(phase="listing").to_dict())
    report = _reporter(run_dir, on_progress)
    try:
        manifest = _run(config, run_dir, report, started, plan)
    except (Cancelled, KeyboardInterrupt):
        _discard(run_dir)
        update_status(run_dir, state="cancelled", ended_at=now_iso())
        raise
    except BaseException as error:
        _discard(run_dir)
        message = user_message(error) if isinstance(error, (ValueError, PipelineError)) else f"{type(error).__name__}: {error}"
        update_status(run_dir, state="failed", error=message, ended_at=now_iso())
        raise
    update_status(run_dir, state="succeeded", ended_at=now_iso(), progress=manifest["progress"],
                  warnings=manifest["failed"])
    return manifest


def _run(config: RunConfig, run_dir: RunDir, report, started: float, plan: ResourcePlan | None) -> dict:
    with _Heartbeat(report) as heartbeat:
        source = open_source(config.source, config.s3_endpoint)
        listing = list_images(source, config.limit)
        found = len(listing.paths)
        log.info("found %d images under %s (%d other files skipped)", found, source.uri, listing.skipped_files)
        models.check_available(config.model)
        heartbeat.progress = Progress(found=found, phase="starting ray")
        with ray_connection(config.ray_address):
            import ray

            node_cpus, gpus = cluster_shape()
            if gpus and config.device != "cpu" and plan is None:
                gpus = usable_gpus(gpus, config.device)
            plan = plan or plan_resources(config, node_cpus, gpus)
            log.info("plan: %s", plan.describe())
            heartbeat.tracker = tracker = tracker_actor(found)
            ds = build_dataset(config, source, listing.paths, plan, tracker)
            _discard(run_dir)
            address = config.ray_address or os.environ.get("RAY_ADDRESS")  # None: the local Ray started above
            _write(ds, run_dir, plan, on_cluster=bool(address))
            final = ray.get(tracker.snapshot.remote("writing"))
            heartbeat.progress, heartbeat.tracker = final, None
            failures = ray.get(tracker.failure_list.remote())
            embedded_by_node = ray.get(tracker.rows_by_node.remote())
            stats = _stats_text(ds)
            ray_info = {"address": address or "local",
                        "nodes": len(node_cpus), "cpus": sum(node_cpus), "gpus": gpus,
                        "dashboard_url": dashboard_url(),
                        "embedded_by_node": embedded_by_node}  # Ray node id -> rows embedded there
        write_json_atomic(run_dir.failures, failures)  # kept even when every file failed: it says why
        rows, dim = _written_shape(run_dir.staging)
        if rows == 0:
            reasons = "; ".join(f"{Path(f['path']).name}: {f['reason']}" for f in failures[:3])
            raise PipelineError(f"every one of the {found} images failed to load ({reasons})")
        run_dir.ray_stats.write_text(stats, encoding="utf-8")
        _publish(run_dir)
        embedded_s = time.time() - started
        final.embedded = rows
        projection_seconds = _project(run_dir, final) if config.projection else None
    final.phase = "done"
    report(final)
    manifest = {
        "status": "succeeded",
        "run_id": run_dir.id,
        "config": config.to_dict(),
        "source": source.uri,
        "model": config.model,
        "model_description": models.describe(config.model),
        "random_weights": models.has_random_weights(config.model),
        "embedding_dim": dim,
        "rows": rows,
        "found": found,
        "failed": len(failures),
        "skipped_files": listing.skipped_files,
        "labels": len(set(label_of(p) for p in listing.paths)),
        "plan": asdict(plan),
        "ray": ray_info,
        "started_at": _iso(started),
        "ended_at": now_iso(),
        "duration_s": round(time.time() - started, 2),  # the whole run, the map included
        "images_per_s": round(rows / max(embedded_s, 1e-9), 2),  # listing to published Parquet, the map left out
        "progress": final.to_dict(),
        "projection_s": projection_seconds,
        "embeddings_path": str(run_dir.embeddings),
        "versions": _versions(),
    }
    write_json_atomic(run_dir.manifest, manifest)
    return manifest


def _write(ds, run_dir: RunDir, plan: ResourcePlan, on_cluster: bool) -> None:
    """Execute the dataset into the staging folder; on a cluster, only once every embedder actor is up."""
    import ray

    if on_cluster:
        # Blocks go to actors already up, the one on the block's node first. Waiting for every actor before
        # streaming spreads the work over the nodes instead of piling it onto whichever actor loaded first;
        # and a cluster that cannot place the actors fails with a message instead of waiting forever.
        ds.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # this dataset's own copy of the context
    try:
        ds.write_parquet(str(run_dir.staging))
    except ray.exceptions.GetTimeoutError as error:
        if not on_cluster:
            raise
        raise PipelineError(
            f"the cluster did not start {plan.actors} embedder actor(s) within {ACTOR_START_TIMEOUT_S} s "
            f"(each needs {plan.cpus_per_actor:g} CPU and {plan.gpus_per_actor:g} GPU): "
            "add nodes, lower concurrency, or check the workers' logs in the Ray dashboard"
        ) from error


def _reporter(run_dir: RunDir, on_progress):
    best = {"processed": -1}
    lock = threading.Lock()  # the heartbeat thread and the driver both report; status.json is read-merge-written

    def report(progress: Progress) -> None:
        with lock:
            # Counts only grow: a stale snapshot arriving late is dropped rather than shown as a step back.
            if progress.processed < best["processed"] and progress.phase in ("loading model", "embedding"):
                return
            best["processed"] = progress.processed
            update_status(run_dir, progress=progress.to_dict())
            if on_progress:
                on_progress(progress)

    return report


class _Heartbeat:
    """Reports progress every PROGRESS_EVERY_S from the run's start: the phase while Ray starts, live counts after."""

    def __init__(self, report):
        self.report = report
        self.progress = Progress(phase="listing")  # what to report until a tracker exists
        self.tracker = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            try:
                if self.tracker is None:
                    self.progress.elapsed_s = round(time.monotonic() - self._started, 2)
                    self.report(self.progress)
                else:
                    import ray

                    self.report(ray.get(self.tracker.snapshot.remote(), timeout=10))
            except Exception as error:  # progress is best effort; the run itself goes on
                log.debug("progress report failed: %s", error)


def _project(run_dir: RunDir, progress: Progress) -> float | None:
    """The default UMAP map, computed now so the Map page is ready when the run is; a failure here fails nothing."""
    from doggos import projection

    progress.phase = "projecting"  # the heartbeat goes on reporting it
    started = time.monotonic()
    try:
        projection.compute(run_dir, projection.DEFAULT_PARAMS, force=True)
    except Exception as error:
        log.warning("the default map could not be computed (the Map page will retry): %s", error)
        return None
    return round(time.monotonic() - started, 2)


def _publish(run_dir: RunDir) -> None:
    """Swap the staged Parquet in with renames, so embeddings/ always holds one whole run's rows."""
    previous = run_dir.path / "embeddings.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if run_dir.embeddings.exists():
        os.replace(run_dir.embeddings, previous)
    os.replace(run_dir.staging, run_dir.embeddings)
    shutil.rmtree(previous, ignore_errors=True)


def _discard(run_dir: RunDir) -> None:
    shutil.rmtree(run_dir.staging, ignore_errors=True)


def _written_shape(folder: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    dim = 0
    for f in files:
        field = pq.read_schema(f).field("embedding")
        dim = getattr(field.type, "list_size", 0)
        break
    return rows, dim


def _stats_text(ds) -> str:
    try:
        return ds.stats()
    except Exception as error:
        return f"(Ray Data stats unavailable: {error})"


def _iso(timestamp: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("ray", "torch", "transformers", "pyarrow", "pillow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
