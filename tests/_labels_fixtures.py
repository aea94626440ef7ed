"""A finished run over real image files, with planted misfiled images and an exact duplicate (no Ray, no model)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import write_fake_run
from imagegen import make_photo

LABELS = ("beagle", "husky", "pug")
PER_LABEL = 12
DIM = 16


@dataclass(frozen=True)
class LabelledRun:
    run: Path
    tree: Path  # the source folder on this machine (its files, whatever the paths the run stores)
    paths: list[str]  # as the run stores them, in row order
    folder_labels: list[str]
    planted: dict[str, str]  # misfiled image path → its true label
    original: str  # the planted exact duplicate: the original ...
    copy: str  # ... and its copy (same label, same bytes)

    def row(self, path: str) -> int:
        return self.paths.index(path)

    def file(self, path: str) -> Path:
        """The local file behind a stored path."""
        return self.tree / Path(*path.split("/")[-2:])


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    make_photo(seed, size=(40, 30)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def write_labelled_run(root: Path, run_id: str = "20250102-120000-0001", uri_root: str | None = None,
                       quality: bool = True, s3_endpoint: str | None = None) -> LabelledRun:
    """root/tree/<label>/<file>.jpg and the run root/<run_id> over them, with clustered embeddings per true label.

    beagle/husky-03.jpg is a husky (its name clashes with husky/husky-03.jpg once relabelled), pug/sofa.jpg a beagle;
    pug/pug-00-copy.jpg has pug-00.jpg's bytes. `uri_root`: what the stored paths start with instead of the tree's
    folder (an s3:// prefix the caller uploads the tree to). `quality`: store the label check's results (k=10)."""
    tree = Path(root) / "tree"
    prefix = (uri_root or str(tree)).rstrip("/")
    rng = np.random.default_rng(7)
    centers = {label: rng.normal(0, 1, DIM) for label in LABELS}
    files: list[tuple[str, str, str, bytes]] = []  # (folder, name, true label, bytes)
    for number, label in enumerate(LABELS):
        files += [(label, f"{label}-{i:02d}.jpg", label, _jpeg(100 * number + i)) for i in range(PER_LABEL)]
    files += [("beagle", "husky-03.jpg", "husky", _jpeg(999)), ("pug", "sofa.jpg", "beagle", _jpeg(998))]
    files.append(("pug", "pug-00-copy.jpg", "pug", files[2 * PER_LABEL][3]))
    files.sort(key=lambda f: (f[0], f[1]))  # as a listing sorts them
    paths, folders, vectors, hashes, data = [], [], [], [], []
    vector_of = {}
    for folder, name, truth, content in files:
        (tree / folder).mkdir(parents=True, exist_ok=True)
        (tree / folder / name).write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        if digest not in vector_of:  # the copy gets the original's embedding, as the model would give it
            vector_of[digest] = centers[truth] + rng.normal(0, 0.15, DIM)
        paths.append(f"{prefix}/{folder}/{name}")
        folders.append(folder)
        vectors.append(vector_of[digest])
        hashes.append(digest)
        data.append(content)
    counts = {label: folders.count(label) for label in LABELS}
    run = write_fake_run(Path(root), run_id, labels=counts, dim=DIM, source=prefix, files=1, failures=[],
                         random_weights=False, model="/models/clip")
    matrix = np.asarray(vectors, np.float32)
    table = pa.table({
        "path": pa.array(paths, pa.string()), "class": pa.array(folders, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), DIM),
        "thumbnail": pa.array(data, pa.binary()), "width": pa.array([40] * len(paths), pa.int32()),
        "height": pa.array([30] * len(paths), pa.int32()), "content_hash": pa.array(hashes, pa.string()),
    })
    for old in (run / "embeddings").glob("*.parquet"):
        old.unlink()
    pq.write_table(table, run / "embeddings" / "part-000000.parquet")
    if s3_endpoint:  # the run read its source through this server: reading it back must too
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["config"]["s3_endpoint"] = s3_endpoint
        (run / "manifest.json").write_text(json.dumps(manifest))
    if quality:
        from doggos.base.rundir import RunDir
        from doggos.explore import quality_step
        from doggos.explore.quality import DEFAULT_PARAMS

        results = quality_step.assess_run(run, DEFAULT_PARAMS, backend="numpy")
        quality_step.write_results(RunDir(run).quality, DEFAULT_PARAMS, results)
    planted = {f"{prefix}/beagle/husky-03.jpg": "husky", f"{prefix}/pug/sofa.jpg": "beagle"}
    return LabelledRun(run, tree, paths, folders, planted, f"{prefix}/pug/pug-00.jpg", f"{prefix}/pug/pug-00-copy.jpg")


@contextmanager
def read_only(folder: Path):
    """`folder` made unwritable, even for root (whom file modes do not stop): chmod, or an immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    try:
        flagged = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    except OSError:  # no chattr here
        flagged = False
    if not flagged:
        pytest.skip("running as root where `chattr +i` is not allowed: no way to make a read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
