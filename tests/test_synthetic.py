"""Synthetic runs (doggos.bench.synthetic) read like real ones; the map-scale benchmark's pure helpers."""

from __future__ import annotations

import base64
import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from doggos.base import store
from doggos.base.rundir import RunDir
from doggos.bench import map_scale, synthetic
from doggos.explore import projection
from doggos.explore.quality import DEFAULT_PARAMS as QUALITY_PARAMS
from doggos.explore.quality_step import read_results
from doggos.runs.manager import RunManager

ROWS, LABELS, DIM = 2003, 5, 64  # 2003 = 5 × 400 + 3: the first three labels get one row more


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic.write_run(tmp_path_factory.mktemp("runs"), ROWS, labels=LABELS, dim=DIM, run_id="synthetic-1")


def test_the_run_reads_like_a_finished_one(run):
    index = store.load_index(run)
    assert len(index) == ROWS and index["row"].tolist() == list(range(ROWS))
    assert index["label"].value_counts().sort_index().tolist() == [401, 401, 401, 400, 400]
    assert index["path"].is_unique
    (info,) = RunManager(run.parent).list()
    assert (info.id, info.state, info.manifest.rows) == ("synthetic-1", "succeeded", ROWS)
    assert info.manifest.embedding_dim == DIM


def test_parquet_has_row_groups_of_1024(run):
    (path,) = store.embedding_files(run)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, ROWS - 1024]


def test_embeddings_cluster_per_label(run):
    vectors, meta = store.load_embeddings(run)
    assert vectors.shape == (ROWS, DIM) and vectors.dtype == np.float32
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    same = meta["label"].to_numpy()[:, None] == meta["label"].to_numpy()[None, :]
    similarity = unit @ unit.T
    assert similarity[same].mean() > 0.5 > 0.1 > abs(similarity[~same].mean())


def test_thumbnails_are_small_jpegs_coloured_per_label(run):
    thumbnails = store.load_thumbnails(run, [0, 1, 2])
    for data in thumbnails:
        assert 1_000 <= len(data) <= 3_500
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and max(image.size) == synthetic.THUMB_SIDE
    index = store.load_index(run)
    every = store.load_thumbnails(run)
    assert len(set(every)) == synthetic.THUMBNAILS
    by_label = {}
    for label, data in zip(index["label"], every):
        by_label.setdefault(label, set()).add(data)
    assert all(not a & b for a in by_label.values() for b in by_label.values() if a is not b)  # no label shares one


def test_the_default_map_is_stored(run):
    frame, info = projection.load(projection.projection_path(run))
    index = store.load_index(run)
    assert info["method"] == "umap (synthetic)" and info["points"] == ROWS
    assert frame["path"].tolist() == index["path"].tolist() and frame["label"].tolist() == index["label"].tolist()
    centres = frame.groupby("label")[["x", "y"]].mean()
    spread = frame.groupby("label")[["x", "y"]].std().to_numpy().max()
    gaps = np.linalg.norm(centres.to_numpy()[:, None] - centres.to_numpy()[None], axis=2)
    assert spread < gaps[gaps > 0].min()  # one blob per label


def test_the_default_quality_results_are_stored(run):
    results = read_results(RunDir(run).quality, QUALITY_PARAMS)
    assert len(results.images) == ROWS and results.neighbours.indices.shape == (ROWS, QUALITY_PARAMS.k)
    assert not (results.neighbours.indices == np.arange(ROWS)[:, None]).any()  # nobody is its own neighbour
    misfiled = (results.images["suggested"] != results.images["class"]).mean()
    assert 0 < misfiled < 0.1
    assert results.duplicates.empty and results.zero_shot_note == synthetic.NO_ZERO_SHOT


def test_files_split_the_rows(tmp_path):
    run = synthetic.write_run(tmp_path, 3000, labels=3, dim=8, files=3, quality=False)
    files = store.embedding_files(run)
    assert [f.name for f in files] == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [1000, 1000, 1000]
    assert not RunDir(run).quality.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "rows: must be a whole number of at least 1"),
    ({"rows": 10, "labels": 11}, "labels: at most one per row"),
    ({"rows": 10, "dim": 1}, "dim: must be a whole number of at least 2"),
    ({"rows": 70_000, "files": 1}, "files: must be a whole number from 2"),
    ({"rows": 10, "files": 11}, "files: must be a whole number from 1"),
])
def test_bad_arguments_say_which(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.write_run(tmp_path, **{"labels": 1, **kwargs})
    assert not any(tmp_path.iterdir())


def test_an_existing_run_is_never_overwritten(tmp_path):
    synthetic.write_run(tmp_path, 20, labels=2, dim=4, run_id="r")
    with pytest.raises(ValueError, match="run_id: .* already exists"):
        synthetic.write_run(tmp_path, 20, labels=2, dim=4, run_id="r")


# ---- map_scale, without a browser ------------------------------------------------------------------------------------

def test_map_scale_arguments():
    args = map_scale.parse_args(["--rows", "100000", "--rows", "1M", "--rows", "250k", "--rows", "1_000"])
    assert args.rows == [100_000, 1_000_000, 250_000, 1_000]
    assert (args.dim, args.labels, args.out, args.keep) == (512, 120, "bench-data/map-scale", None)
    assert args.pages == ["map", "browse", "search", "quality"]
    assert map_scale.parse_args([]).rows == [100_000]


@pytest.mark.parametrize("bad", ["0", "-5", "ten", "1.5M", ""])
def test_map_scale_refuses_a_bad_row_count(bad, capsys):
    with pytest.raises(SystemExit):
        map_scale.parse_args(["--rows", bad])
    assert "--rows" in capsys.readouterr().err


def test_websocket_frame_sizes():
    assert map_scale.frame_bytes(base64.b64encode(bytes(1000)).decode(), opcode=2) == 1000
    assert map_scale.frame_bytes("héllo", opcode=1) == 6  # text frames: UTF-8 bytes, not characters


def test_bytes_counter_adds_responses_and_frames():
    class FakeCdp:
        def __init__(self):
            self.handlers = {}

        def on(self, event, handler):
            self.handlers[event] = handler

    cdp = FakeCdp()
    counter = map_scale.ByteCounter(cdp)
    cdp.handlers["Network.loadingFinished"]({"requestId": "1", "encodedDataLength": 5000})
    binary = base64.b64encode(b"abc").decode()
    cdp.handlers["Network.webSocketFrameReceived"]({"response": {"opcode": 2, "payloadData": binary}})
    cdp.handlers["Network.webSocketFrameReceived"]({"response": {"opcode": 1, "payloadData": "{}"}})
    assert counter.total == 5005


def test_the_table_shows_figures_and_failures():
    ok = map_scale.SizeResult(100_000, run="/tmp/r", write_s=4.2, server_start_s=3.0, peak_rss_mb=812.4,
                              cells=[map_scale.Cell("Browse", 3.456, 2.5, 19.0, 700.0),
                                     map_scale.Cell("Map", mb=1.0, heap_mb=9.0, error="not ready in 120 s: missing x")],
                              hover_ms=[40.0, 60.0, 50.0], frame_ms=[2.0, 9.5, 4.0])
    reused = map_scale.SizeResult(1_000_000, run="/keep/r", problems=["streamlit exited with code 1"])
    table = map_scale.format_table([ok, reused])
    assert "| 100,000 | Browse | 3.46 | 2.5 | 19.0 | 700 |" in table
    assert "| 100,000 | Map | FAILED | 1.0 | 9.0 | – |" in table
    assert "| 100,000 | 4.2 | 3.0 | 812 | 50 (n=3) | 4.0 / 9.5 |" in table
    assert "| 1,000,000 | reused | – | – | – | – |" in table
    assert "- 100,000 Map: not ready in 120 s: missing x" in table
    assert "- 1,000,000: streamlit exited with code 1" in table
