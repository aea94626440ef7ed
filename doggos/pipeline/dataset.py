"""The Ray Data pipeline: list the source, read → label → decode → embed (actor pool) → Parquet, published atomically.

`doggos.runs.driver` runs it as part of a run (status, post-run steps, the manifest last); this module knows Ray Data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from doggos.base.config import RunConfig
from doggos.base.plan import ResourcePlan, plan_resources
from doggos.base.records import Manifest, RayInfo
from doggos.base.rundir import RunDir, atomic_output, now_iso, write_json_atomic
from doggos.pipeline import figures, models, reuse
from doggos.pipeline.cluster import cluster_shape, dashboard_url, usable_gpus
from doggos.pipeline.progress import hold, tracker_actor
from doggos.pipeline.sources import Listing, Source, label_of, list_images, open_source

DECODE_TASK_MEMORY = 512 * 2**20  # bytes a decode worker holds: transformers (~350 MB) plus a block of decoded images
FILES_PER_BLOCK = 32  # small blocks stream: decoded pixels stay ~20 MB a block, and progress moves in small steps
ACTOR_START_TIMEOUT_S = 600  # on a cluster: time for every embedder actor to start (a fresh node may download the model)

log = logging.getLogger("doggos")


class PipelineError(RuntimeError):
    """The run cannot go on; the message says why."""


def build_dataset(config: RunConfig, source: Source, paths: list[str], plan: ResourcePlan, tracker=None,
                  on_cluster: bool = False, prompts: list[str] | None = None, known=None):
    """read files → label from parent folder → [skip known] → decode + preprocess → embed (actor pool); lazy.

    `prompts`: texts the embedder actors also embed, once each, for the label-quality step's zero-shot. `known`: an
    ObjectRef of the content hashes whose rows are carried over (`reuse.skip_known`): those files go no further."""
    import ray

    ds = ray.data.read_binary_files(
        paths, include_paths=True, filesystem=source.filesystem, num_cpus=plan.task_cpus,
        # On a cluster, read on every node: a block stays on the node that read it, and each actor takes blocks on its
        # own node first, so reads packed onto one busy node would pile the embedding there too.
        ray_remote_args={"scheduling_strategy": "SPREAD"} if on_cluster else None,
        # Small blocks stream; and even a small run gets a few blocks per actor, so every actor has work.
        override_num_blocks=min(len(paths), max(math.ceil(len(paths) / FILES_PER_BLOCK), 4 * plan.actors)),
    )
    ds = ds.map(add_label, fn_kwargs={"scheme": source.scheme}, num_cpus=plan.task_cpus)
    if known is not None:
        ds = ds.map_batches(reuse.skip_known, fn_kwargs={"known": [known], "tracker": tracker}, num_cpus=plan.task_cpus)
    from doggos.pipeline.embedder import Embedder, prepare_images

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
            "prompts": prompts,
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


def list_source(config: RunConfig, listing: Listing | None = None) -> tuple[Source, Listing]:
    """The images to embed, listed on the driver first: a wrong path or an empty folder fails before Ray starts.

    `listing`: the one the caller's preflight checks already made (the CLI's): the source is not listed twice."""
    source = open_source(config.source, config.s3_endpoint)
    listing = listing if listing is not None else list_images(source, config.limit)
    log.info("found %d images under %s (%d other files skipped)", len(listing.paths), source.uri, listing.skipped_files)
    return source, listing


def embed(config: RunConfig, run_dir: RunDir, source: Source, listing: Listing, heartbeat, started: float,
          plan: ResourcePlan | None = None, prompts: list[str] | None = None, carry: reuse.Carry | None = None,
          history: dict | None = None) -> Manifest:
    """Embed every listed image on the connected Ray and publish the Parquet as `embeddings/`.

    `heartbeat` reports progress (its `tracker` and `progress` are set here); `plan` overrides the derived resource
    plan (the benchmark replays the tutorial's settings with it). `started` is the run's start (time.time()): the
    manifest's images/s count from it, listing and Ray's start included. `prompts`: texts the actors embed too, written
    to `run_dir.prompt_features` (the label-quality step's zero-shot). `carry`: rows embedded before (a reused run's,
    a failed attempt's); files with their bytes are carried over, not embedded. `history`: the manifest's reuse
    fields the caller knows (dropped, reused_from, attempts, embedding_key). Returns the manifest; the caller writes it.
    """
    import ray

    found = len(listing.paths)
    node_cpus, gpus = cluster_shape()
    if gpus and config.device != "cpu" and plan is None:
        gpus = usable_gpus(gpus, config.device)
    plan = plan or plan_resources(config, node_cpus, gpus)
    log.info("plan: %s", plan.describe())
    heartbeat.tracker = tracker = tracker_actor(found, started)
    address = config.ray_address or os.environ.get("RAY_ADDRESS")  # None: a private local Ray
    known = ray.put(carry.hashes) if carry is not None and len(carry.hashes) else None
    ds = build_dataset(config, source, listing.paths, plan, tracker, on_cluster=bool(address), prompts=prompts,
                       known=known)
    discard_staging(run_dir)
    _write(ds, run_dir, plan, on_cluster=bool(address))
    carried = 0
    if known is not None:
        reused = ray.get(tracker.reused_list.remote())
        carried = reuse.write_carried(carry, reused, run_dir.staging)
        log.info("carried over %d rows embedded before; embedded %d images", carried, len(listing.paths) - len(reused))
    final = ray.get(tracker.snapshot.remote("writing"))
    heartbeat.progress, heartbeat.tracker = final, None
    failures = ray.get(tracker.failure_list.remote())
    if prompts:
        write_prompt_features(run_dir, *ray.get(tracker.prompt_features.remote()))
    ray_info = RayInfo(address=address or "local", nodes=len(node_cpus), cpus=sum(node_cpus), gpus=gpus,
                       dashboard_url=dashboard_url(), embedded_by_node=ray.get(tracker.rows_by_node.remote()))
    write_json_atomic(run_dir.failures, failures)  # kept even when every file failed: it says why
    rows, dim = _written_shape(run_dir.staging)
    if rows == 0:
        reasons = "; ".join(f"{Path(f['path']).name}: {f['reason']}" for f in failures[:3])
        raise PipelineError(f"every one of the {found} images failed to load ({reasons})")
    run_dir.ray_stats.write_text(_stats_text(ds), encoding="utf-8")
    hold("writing")
    _publish(run_dir)
    embed_s = time.time() - started
    # The live view's last frame shows the figures the Summary and History will: one definition (figures.run_rate).
    # A new object, assigned once: the heartbeat thread reports `heartbeat.progress` meanwhile.
    final = dataclasses.replace(final, embedded=rows - carried, reused=carried,
                                run_images_per_s=figures.run_rate(rows - carried, embed_s))
    heartbeat.progress = final
    heartbeat.rows_by_node = ray_info.embedded_by_node  # the operators' last frame: the tracker's final counts
    return Manifest(
        run_id=run_dir.id, config=config, source=source.uri, model=config.model,
        model_description=models.describe(config.model), random_weights=models.has_random_weights(config.model),
        embedding_dim=dim, rows=rows, found=found, failed=len(failures), skipped_files=listing.skipped_files,
        labels=len(set(label_of(p) for p in listing.paths)), plan=plan, ray=ray_info,
        started_at=_iso(started), ended_at=now_iso(), duration_s=round(embed_s, 2), embed_s=round(embed_s, 2),
        images_per_s=final.run_images_per_s, progress=final,
        embeddings_path=str(run_dir.embeddings), versions=_versions(), reused=carried, embedded=rows - carried,
        **(history or {}),
    )


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


def write_prompt_features(run_dir: RunDir, prompts: list[str], features, why: str | None = None,
                          logit_scale: float | None = None) -> None:
    """`run_dir.prompt_features`: Parquet columns prompt (string), features (fixed_size_list<float32>[dim]), the
    model's logit_scale in the schema's metadata; nothing written when the actors had no features (`why`: in the log)."""
    from doggos.pipeline.embedder import embedding_array

    if features is None:
        log.info("zero-shot prompts not embedded during the run%s", f": {why}" if why else "")
        return
    with atomic_output(run_dir.prompt_features) as tmp:
        table = pa.table({"prompt": pa.array(prompts, pa.string()), "features": embedding_array(features)})
        if logit_scale is not None:
            table = table.replace_schema_metadata({"logit_scale": repr(float(logit_scale))})
        pq.write_table(table, tmp)


def _publish(run_dir: RunDir) -> None:
    """Swap the staged Parquet in with renames, so embeddings/ always holds one whole run's rows."""
    previous = run_dir.path / "embeddings.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if run_dir.embeddings.exists():
        os.replace(run_dir.embeddings, previous)
    os.replace(run_dir.staging, run_dir.embeddings)
    shutil.rmtree(previous, ignore_errors=True)


def discard_staging(run_dir: RunDir) -> None:
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
