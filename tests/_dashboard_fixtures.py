"""Fake but valid finished runs, written straight with pyarrow (no Ray, no model), for the dashboard's tests."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from doggos.base.config import RunConfig
from doggos.base.plan import ResourcePlan
from doggos.base.records import Manifest, Progress, RayInfo, write_manifest
from doggos.base.rundir import RunDir

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
NASTY_LABEL = '<b>bold</b> *x* "q" 🐶'  # HTML, Markdown, quotes and an emoji: must show exactly like this
LABELS = {"beagle": 12, "border collie": 9, NASTY_LABEL: 6}

RAY_STATS = """Operator 1 ReadBinary: 4 tasks executed, 4 blocks produced in 1.38s
* Remote wall time: 11.88ms min, 23.44ms max, 15.16ms mean, 60.65ms total
* Remote cpu time: 10.59ms min, 19.22ms max, 13.0ms mean, 52.01ms total
* Output num rows per block: 75 min, 75 max, 75 mean, 300 total
* Tasks per node: 4 min, 4 max, 4 mean; 1 nodes used

Operator 2 Map(add_label)->MapBatches(prepare_images)->MapBatches(Embedder): 4 tasks executed, 4 blocks produced in 0.45s
* Remote wall time: 62.57ms min, 151.01ms max, 100.31ms mean, 401.26ms total
* Remote cpu time: 77.1ms min, 166.69ms max, 108.23ms mean, 432.9ms total
* Output num rows per block: 75 min, 75 max, 75 mean, 300 total

Operator 3 Write: 4 tasks executed, 4 blocks produced in 0.26s
* Remote cpu time: 6.86ms min, 17.5ms max, 12.3ms mean, 49.21ms total
* Output num rows per block: 1 min, 1 max, 1 mean, 4 total

Dataset throughput:
\t* Ray Data throughput: 0.8893119387282656 rows/s
"""


def jpeg(seed: int, size: tuple[int, int] = (224, 168)) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(40, 215, 3)
    pixels = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=70)
    return out.getvalue()


def write_fake_run(root: Path, run_id: str = "20250101-120000-0001", labels: dict[str, int] | None = None,
                   dim: int = 16, source: str = "/data/dogs", seed: int = 0, random_weights: bool = True,
                   failures: list[dict] | None = None, files: int = 2,
                   model: str = "/models/clip-random-weights-tiny") -> Path:
    """A succeeded run under root/run_id: embeddings (clustered per label), thumbnails, manifest, status, stats."""
    labels = dict(LABELS if labels is None else labels)
    rng = np.random.default_rng(seed)
    run = Path(root) / run_id
    (run / "embeddings").mkdir(parents=True)
    paths, classes, vectors, thumbs, sizes = [], [], [], [], []
    distinct = {}
    for number, (label, count) in enumerate(labels.items()):
        center = rng.normal(0, 1, dim)
        for i in range(count):
            folder = label.replace("/", "|")  # a folder name cannot hold '/', the class column can
            paths.append(f"{source.rstrip('/')}/{folder}/{folder}-{i:04d}.jpg")
            classes.append(label)
            vectors.append(center + rng.normal(0, 0.15, dim))
            key = (number, i % 4)  # a few distinct thumbnails per label keep big fake runs quick to write
            if key not in distinct:
                distinct[key] = jpeg(number * 10 + i % 4, size=(224, 168) if i % 2 else (168, 224))
            thumbs.append(distinct[key])
            sizes.append((640, 480) if i % 2 else (480, 640))
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(paths), dim)
    table = pa.table({
        "path": pa.array(paths, pa.string()),
        "class": pa.array(classes, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), dim),
        "thumbnail": pa.array(thumbs, pa.binary()),
        "width": pa.array([s[0] for s in sizes], pa.int32()),
        "height": pa.array([s[1] for s in sizes], pa.int32()),
    })
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(start, stop - start), run / "embeddings" / f"part-{part:06d}.parquet")
    failures = [{"path": f"{source}/beagle/broken.jpg", "reason": "not an image (unknown or unsupported format)"}] \
        if failures is None else failures
    config = RunConfig(source=source, output=str(run), model=model)
    progress = Progress(found=len(paths) + len(failures), decoded=len(paths), embedded=len(paths), failed=len(failures),
                        elapsed_s=3.0, images_per_s=10.0, eta_s=0.0, phase="done")
    times = {"created_at": "2025-01-01T12:00:00+00:00", "started_at": "2025-01-01T12:00:01+00:00",
             "ended_at": "2025-01-01T12:00:31+00:00"}
    model = config.model
    manifest = Manifest(
        run_id=run_id, config=config, source=source, model=model,
        model_description=f"{model} (RANDOM WEIGHTS: demo only, embeddings carry no meaning)" if random_weights else model,
        random_weights=random_weights, embedding_dim=dim, rows=len(paths), found=len(paths) + len(failures),
        failed=len(failures), skipped_files=0, labels=len(labels),
        plan=ResourcePlan(device="cpu", actors=1, cpus_per_actor=1.0, gpus_per_actor=0.0, threads_per_actor=2,
                          batch_size=16, task_cpus=1.0, decode_in_actor=True),
        ray=RayInfo(address="local", nodes=1, cpus=2.0, gpus=0.0, dashboard_url="http://127.0.0.1:8265",
                    embedded_by_node={"6617a69d49e9c88fe0003427": 27}),
        started_at=times["started_at"], ended_at=times["ended_at"], duration_s=30.0, embed_s=20.0, images_per_s=12.5,
        steps={"map": 10.0}, progress=progress, embeddings_path=str(run / "embeddings"), versions={"python": "3.11"},
    )
    _json(run / "config.json", config.to_dict())
    _json(run / "status.json", {"state": "succeeded", "progress": progress.to_dict(), "error": None, **times})
    _json(run / "failures.json", failures)
    (run / "ray_stats.txt").write_text(RAY_STATS, encoding="utf-8")
    (run / "log.txt").write_text("found images\nplan: 1 embedder actor\ndone\n", encoding="utf-8")
    write_manifest(RunDir(run), manifest)  # last, as the driver does
    return run


def write_failed_run(root: Path, run_id: str = "20250101-130000-0002", error: str = "every image failed") -> Path:
    run = Path(root) / run_id
    run.mkdir(parents=True)
    _json(run / "config.json", RunConfig(source="/nowhere", output=str(run), model="m").to_dict())
    _json(run / "status.json", {"state": "failed", "error": error, "created_at": "2025-01-01T13:00:00+00:00",
                                "ended_at": "2025-01-01T13:00:05+00:00", "progress": {"phase": "listing"}})
    (run / "log.txt").write_text(f"run failed: {error}\n", encoding="utf-8")
    return run


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


# ---- reading what a page drew (AppTest) -------------------------------------------------------------------

def unescape_markdown(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text).replace("\u200b", "")


def markdown_bodies(at: AppTest) -> list[str]:
    """Every string the app hands to Streamlit's Markdown renderer (where unescaped user data would misrender)."""
    bodies = [e.value for kind in ("markdown", "caption", "title", "header", "subheader", "info", "warning", "error",
                                   "success") for e in at.get(kind)]
    return bodies + [caption for image in at.image for caption in image.captions]


def map_data(at: AppTest) -> dict:
    """What the Map page sent its map component (URLs, labels, colours, selection)."""
    maps = at.get("bidi_component")
    assert len(maps) == 1
    return json.loads(maps[0].proto.json)


def precompute_map(run: Path, params=None) -> Path:
    """Store a PCA map under `params`' file name: the Map page then draws at once, and umap is never imported."""
    from doggos.base import store
    from doggos.explore import projection

    vectors, meta = store.load_embeddings(run)
    return projection.write(run, params or projection.DEFAULT_PARAMS, projection.pca_2d(vectors), meta["path"].tolist(),
                            meta["label"].tolist(), "pca")


def open_page(page: str, **state) -> AppTest:
    """Run app.py with `state` in the session, then switch to `page`; fails on any exception the page raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def precompute_quality(run: Path, params=None) -> Path:
    """Store label-quality results (numpy neighbours, no zero-shot): the Quality page then draws at once, without Ray."""
    from doggos.base import store
    from doggos.explore.quality import DEFAULT_PARAMS, assess
    from doggos.explore.quality_step import write_results

    params = params or DEFAULT_PARAMS
    vectors, meta = store.load_embeddings(run)
    results = assess(vectors, meta["label"].tolist(), meta["path"].tolist(), params, backend="numpy")
    return write_results(RunDir(run).quality, params, results)


MISFILED = {3: "border collie", 4: "border collie"}  # beagle images (their embeddings say so) filed under another label
NEAR_COPY = (1, 2)  # row 1's embedding becomes row 2's, scaled: a near duplicate within beagle


def misfile(run: Path) -> None:
    """Rewrite the run's Parquet: MISFILED rows get another label, NEAR_COPY's first row a copy of the second's vector."""
    from doggos.base import store

    files = store.embedding_files(run)
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables)
    classes = table.column("class").to_pylist()
    for row, label in MISFILED.items():
        classes[row] = label
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    vectors[NEAR_COPY[0]] = vectors[NEAR_COPY[1]] * 1.001
    table = table.set_column(table.schema.get_field_index("class"), "class", pa.array(classes, pa.string()))
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", embedding)
    start = 0
    for path, part in zip(files, tables):
        pq.write_table(table.slice(start, part.num_rows), path)
        start += part.num_rows


def damage_thumbnails(run, damaged: dict[int, bytes | None]) -> None:
    """Overwrite some rows' stored thumbnails (by row id, in a run written as one file) with bad bytes or a null."""
    (path,) = sorted((run / "embeddings").glob("*.parquet"))
    table = pq.read_table(path)
    thumbnails = table.column("thumbnail").to_pylist()
    for row, data in damaged.items():
        thumbnails[row] = data
    pq.write_table(table.set_column(table.schema.get_field_index("thumbnail"), "thumbnail",
                                    pa.array(thumbnails, pa.binary())), path)
