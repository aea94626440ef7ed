"""Synthetic finished runs of any size (clustered embeddings, reused JPEG thumbnails, a map, label-quality results)."""

from __future__ import annotations

import colorsys
import io
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from doggos.base.config import RunConfig
from doggos.base.plan import ResourcePlan
from doggos.base.records import Manifest, Progress, RayInfo, write_manifest
from doggos.base.rundir import RunDir, write_json_atomic

MAX_FILE_ROWS = 65_536  # rows per Parquet file at most: many files of a block each, as Ray writes, not one huge file
ROW_GROUP_ROWS = 1_024  # small row groups, like Ray's: a page reading 24 thumbnails decodes a few small groups
THUMBNAILS = 64  # distinct JPEGs at least (one per label when there are more labels): reused, so writing stays quick
THUMB_SIDE = 224  # the pipeline's thumbnail size (longer side)
SPREAD = 0.6  # noise against a label's centre, per dimension: overlapping clusters, like real breeds
MAP_SPREAD = 0.35  # a label's 2-D blob, in units of the distance between neighbouring blobs
MISFILED = 0.01  # share of rows whose neighbours carry another label: the Quality page's suspects
SOURCE = "/data/synthetic"
MODEL = "synthetic (no model)"
NO_ZERO_SHOT = "synthetic run: there is no model whose text tower could label the images"


@dataclass(frozen=True)
class Layout:
    """Which label each row carries and where each label's rows sit in label order (`order`: row ids by label)."""

    label_of_row: np.ndarray  # int32, one per row
    counts: np.ndarray  # rows per label
    order: np.ndarray  # row ids sorted by label (stable): each label's rows are contiguous here
    ordinal: np.ndarray  # a row's position within its label (its file name's number)


def write_run(root, rows: int, labels: int = 120, dim: int = 512, files: int | None = None, seed: int = 0,
              run_id: str | None = None, quality: bool = True) -> Path:
    """A succeeded run of `rows` images under root/run_id, as the dashboard reads one; returns its folder.

    Embeddings cluster per label; thumbnails are a few dozen small JPEGs coloured per label; the default map (UMAP
    params, coordinates clustered per label in 2-D) is stored, and with `quality` the default label-quality results
    too (neighbours drawn from the label layout, not searched), so no page starts a background computation.
    """
    files = _check(rows, labels, dim, files)
    started = time.monotonic()
    run_id = run_id or f"{datetime.now():%Y%m%d-%H%M%S}-synthetic-{rows}"
    run = RunDir(Path(root) / run_id)
    if run.path.exists():
        raise ValueError(f"run_id: {run.path} already exists (write_run never overwrites a run)")
    run.embeddings.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = label_names(labels)
    layout = label_layout(rows, labels, rng)
    paths = [f"{SOURCE}/{names[label]}/{names[label]}-{number:06d}.jpg"
             for label, number in zip(layout.label_of_row.tolist(), layout.ordinal.tolist())]
    classes = [names[label] for label in layout.label_of_row.tolist()]
    _write_parquet(run, layout, paths, classes, dim, files, seed)
    embed_s = time.monotonic() - started
    steps = {"map": _write_map(run, layout, paths, classes, rng)}
    if quality and rows > _quality_k():
        steps["quality"] = _write_quality(run, layout, paths, classes, rng)
    manifest = _write_records(run, rows, labels, dim, embed_s, steps)
    _build_shelf(run)
    write_manifest(run, manifest)  # last, as the driver writes it: from here on the run is finished
    return run.path


def _check(rows: int, labels: int, dim: int, files: int | None) -> int:
    """The number of files to write, or a ValueError naming the argument that is out of range."""
    for name, value, least in (("rows", rows, 1), ("labels", labels, 1), ("dim", dim, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name}: must be a whole number of at least {least} (got {value!r})")
    if labels > rows:
        raise ValueError(f"labels: at most one per row ({rows}), got {labels}")
    fewest = math.ceil(rows / MAX_FILE_ROWS)
    if files is None:
        return fewest
    if isinstance(files, bool) or not isinstance(files, (int, np.integer)) or not fewest <= files <= rows:
        raise ValueError(f"files: must be a whole number from {fewest} (files hold at most {MAX_FILE_ROWS:,} rows) "
                         f"to {rows} (one row each), got {files!r}")
    return int(files)


def label_names(labels: int) -> list[str]:
    width = max(3, len(str(labels - 1)))
    return [f"breed-{i:0{width}d}" for i in range(labels)]


def label_counts(rows: int, labels: int) -> np.ndarray:
    """Rows per label: as even as can be, the first labels one larger when rows do not divide."""
    counts = np.full(labels, rows // labels, dtype=np.int64)
    counts[: rows % labels] += 1
    return counts


def label_layout(rows: int, labels: int, rng: np.random.Generator) -> Layout:
    counts = label_counts(rows, labels)
    # Shuffled, as a parallel pipeline's output order mixes folders: every page of Browse shows many labels.
    label_of_row = rng.permutation(np.repeat(np.arange(labels, dtype=np.int32), counts))
    order = np.argsort(label_of_row, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ordinal = np.empty(rows, dtype=np.int64)
    ordinal[order] = np.arange(rows) - starts[label_of_row[order]]
    return Layout(label_of_row, counts, order, ordinal)


def thumbnails(labels: int) -> list[bytes]:
    """max(THUMBNAILS, labels) small JPEGs; thumbnail j is coloured for label j % labels (a hue each) in variant
    j // labels, so a label's rows can be told apart from its neighbours' at a glance."""
    return [_jpeg(j % labels / labels, j // labels, portrait=bool(j % 2)) for j in range(max(THUMBNAILS, labels))]


def _jpeg(hue: float, variant: int, portrait: bool) -> bytes:
    from PIL import Image, ImageDraw

    size = (THUMB_SIDE * 3 // 4, THUMB_SIDE) if portrait else (THUMB_SIDE, THUMB_SIDE * 3 // 4)
    light = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.35, 0.95))
    dark = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 0.6))
    # Flat areas and two shapes: JPEG keeps these at 1-3 KB, where photo-like noise would cost 6 KB or more.
    image = Image.new("RGB", size, light)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], fill=dark)
    # The variant as a square on an 8 × 8 grid: a label's variants (64 at most) all look different.
    cell_w, cell_h = w / 8, h / 8
    x, y = variant % 8 * cell_w, variant // 8 % 8 * cell_h
    draw.rectangle([x + 2, y + 2, x + cell_w - 2, y + cell_h - 2], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=75)
    return out.getvalue()


def thumbnail_of_rows(layout: Layout, distinct: int) -> np.ndarray:
    """Per row, which distinct thumbnail it shows: one of its label's variants, taken in turn."""
    labels = len(layout.counts)
    variants = (distinct - np.arange(labels) + labels - 1) // labels  # thumbnails j < distinct with j % labels == label
    label = layout.label_of_row.astype(np.int64)
    return label + labels * (layout.ordinal % variants[label])


def _write_parquet(run: RunDir, layout: Layout, paths: list[str], classes: list[str], dim: int, files: int,
                   seed: int) -> None:
    """The rows in `files` Parquet files of ROW_GROUP_ROWS-row groups, one file's vectors in memory at a time."""
    rows = len(paths)
    labels = len(layout.counts)
    centres = np.random.default_rng([seed, 0]).standard_normal((labels, dim), dtype=np.float32)
    jpegs = thumbnails(labels)
    which = thumbnail_of_rows(layout, len(jpegs))
    distinct = pa.array(jpegs, pa.binary())
    sizes = np.array([[640, 480], [480, 640]], dtype=np.int32)[which % 2]  # the originals' sizes, as the thumbnails'
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        noise = np.random.default_rng([seed, 1, part]).standard_normal((stop - start, dim), dtype=np.float32)
        noise *= np.float32(SPREAD)
        noise += centres[layout.label_of_row[start:stop]]
        table = pa.table({
            "path": pa.array(paths[start:stop], pa.string()),
            "class": pa.array(classes[start:stop], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(noise.reshape(-1)), dim),
            "thumbnail": distinct.take(pa.array(which[start:stop])),
            "width": pa.array(sizes[start:stop, 0]),
            "height": pa.array(sizes[start:stop, 1]),
            "content_hash": pa.array([f"{seed:08x}{row:056x}" for row in range(start, stop)], pa.string()),
        })
        # Dictionary encoding only where values repeat: tried on 512 floats a row it costs 4× the write and saves
        # nothing. The thumbnails' dictionary keeps the files small (a real run's JPEGs are all different).
        pq.write_table(table, run.embeddings / f"part-{part:06d}.parquet", row_group_size=ROW_GROUP_ROWS,
                       use_dictionary=["class", "thumbnail"])


def map_coordinates(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Per row, a point near its label's blob centre; the centres lie on a sunflower spiral, one unit apart."""
    labels = np.arange(len(layout.counts))
    angle = labels * math.pi * (3 - math.sqrt(5))  # the golden angle: evenly spread centres, no grid lines
    radius = np.sqrt(labels + 0.5)
    centres = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    points = rng.standard_normal((len(layout.label_of_row), 2), dtype=np.float32) * np.float32(MAP_SPREAD)
    return points + centres[layout.label_of_row]


def _write_map(run: RunDir, layout: Layout, paths: list[str], classes: list[str], rng: np.random.Generator) -> float:
    from doggos.explore import projection

    started = time.monotonic()
    projection.write(run, projection.DEFAULT_PARAMS, map_coordinates(layout, rng), paths, classes, "umap (synthetic)",
                     seconds=0.0)
    return time.monotonic() - started


def synthetic_neighbours(layout: Layout, k: int, rng: np.random.Generator):
    """Each row's k neighbours without a search: the rows beside it in label order (both sides), so mostly its own
    label (a label's first and last rows reach into the next one); MISFILED of the rows get another label's rows.
    Similarities fall with rank, below the near-duplicate rule's 0.95: no pair counts as a duplicate."""
    from doggos.explore.neighbours import Neighbours

    rows = len(layout.label_of_row)
    position = np.empty(rows, dtype=np.int64)
    position[layout.order] = np.arange(rows)
    steps = np.array([(j // 2 + 1) * (1 if j % 2 == 0 else -1) for j in range(k)], dtype=np.int64)
    elsewhere = rng.random(rows) < MISFILED
    # A misfiled row's neighbours: those of a row about a tenth of the run further on in label order.
    anchor = np.where(elsewhere, position + max(1, rows // 10), position)
    targets = (anchor[:, None] + steps[None, :]) % rows
    indices = layout.order[targets]
    indices = np.where(indices == np.arange(rows)[:, None], layout.order[(targets + k + 1) % rows], indices)
    similarities = np.float32(0.9) - np.float32(0.02) * np.arange(k, dtype=np.float32)[None, :] \
        - rng.random((rows, k), dtype=np.float32) * np.float32(0.01)
    return Neighbours(indices.astype(np.int64), similarities.astype(np.float32))


def _quality_k() -> int:
    from doggos.explore.quality import DEFAULT_PARAMS

    return DEFAULT_PARAMS.k


def _write_quality(run: RunDir, layout: Layout, paths: list[str], classes: list[str],
                   rng: np.random.Generator) -> float:
    from doggos.explore.quality import DEFAULT_PARAMS, assess
    from doggos.explore.quality_step import write_results

    started = time.monotonic()
    rows = len(paths)
    neighbours = synthetic_neighbours(layout, DEFAULT_PARAMS.k, rng)
    # Every content hash differs (see _write_parquet), so there are no exact duplicates to look for: no hashes spares
    # grouping a million of them, and a column of zeros stands in for the matrix assess would score them with.
    results = assess(np.zeros((rows, 1), np.float32), classes, paths, DEFAULT_PARAMS,
                     hashes=[None] * rows, neighbours=neighbours, zero_shot_note=NO_ZERO_SHOT)
    run.quality.mkdir(parents=True, exist_ok=True)
    write_results(run.quality, DEFAULT_PARAMS, results)
    return time.monotonic() - started


def ray_stats(rows: int) -> str:
    """A ray_stats.txt like a one-node run's, with this run's row counts."""
    blocks = max(1, math.ceil(rows / MAX_FILE_ROWS))
    per = math.ceil(rows / blocks)
    return (f"Operator 1 ReadBinary: {blocks} tasks executed, {blocks} blocks produced in 1.00s\n"
            f"* Output num rows per block: {per} min, {per} max, {per} mean, {rows} total\n\n"
            f"Operator 2 Map(add_label)->MapBatches(prepare_images)->MapBatches(Embedder): {blocks} tasks executed, "
            f"{blocks} blocks produced in 2.00s\n"
            f"* Output num rows per block: {per} min, {per} max, {per} mean, {rows} total\n\n"
            f"Operator 3 Write: {blocks} tasks executed, {blocks} blocks produced in 0.50s\n"
            f"* Output num rows per block: 1 min, 1 max, 1 mean, {blocks} total\n")


def _write_records(run: RunDir, rows: int, labels: int, dim: int, embed_s: float, steps: dict[str, float]) -> Manifest:
    """config, status, failures, stats and log; returns the manifest, which the caller writes last."""
    config = RunConfig(source=SOURCE, output=str(run.path), model=MODEL)
    duration = embed_s + sum(steps.values())
    ended = datetime.now(timezone.utc).replace(microsecond=0)
    begun = ended - timedelta(seconds=math.ceil(duration))
    times = {"created_at": begun.isoformat(), "started_at": begun.isoformat(), "ended_at": ended.isoformat()}
    rate = rows / embed_s if embed_s > 0 else 0.0
    progress = Progress(found=rows, decoded=rows, embedded=rows, failed=0, elapsed_s=duration, images_per_s=rate,
                        eta_s=0.0, phase="done")
    write_json_atomic(run.config, config.to_dict())
    write_json_atomic(run.status, {"state": "succeeded", "progress": progress.to_dict(), "error": None, **times})
    write_json_atomic(run.failures, [])
    run.ray_stats.write_text(ray_stats(rows), encoding="utf-8")
    run.log.write_text(f"synthetic run: {rows:,} rows, {labels} labels, {dim} dimensions (doggos.bench.synthetic)\n"
                       "done\n", encoding="utf-8")
    return Manifest(
        run_id=run.id, config=config, source=SOURCE, model=MODEL,
        model_description="synthetic embeddings: one cluster per label, no model", random_weights=False,
        embedding_dim=dim, rows=rows, found=rows, failed=0, skipped_files=0, labels=labels,
        plan=ResourcePlan(device="cpu", actors=1, cpus_per_actor=1.0, gpus_per_actor=0.0, threads_per_actor=1,
                          batch_size=ROW_GROUP_ROWS, task_cpus=1.0, decode_in_actor=True),
        ray=RayInfo(address="local", nodes=1, cpus=1.0, gpus=0.0, dashboard_url=None, embedded_by_node={}),
        started_at=times["started_at"], ended_at=times["ended_at"], duration_s=duration, embed_s=embed_s,
        images_per_s=rate, steps=steps, progress=progress, embeddings_path=str(run.embeddings),
        versions={"doggos": "synthetic"},
    )


def _build_shelf(run: RunDir) -> None:
    # Where the thumbnail shelf exists (issue 21) pages read thumbnails from it, and the driver builds it before the
    # manifest: so does this. A checkout without doggos.base.shelf reads them from the Parquet: nothing to build.
    try:
        from doggos.base import shelf
    except ImportError:
        return
    shelf.build(run)
