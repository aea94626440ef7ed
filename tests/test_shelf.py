"""doggos.base.shelf: a run's thumbnails on one shelf, read a row at a time; never stale, never half-built."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import damage_thumbnails, write_fake_run
from PIL import Image

from doggos.base import shelf, store
from doggos.base.records import read_manifest, write_manifest
from doggos.base.rundir import RunDir

LABELS = {"beagle": 7, "border collie": 6, "pug": 5}  # 18 rows


@pytest.fixture
def run(tmp_path):
    return write_fake_run(tmp_path, labels=LABELS, files=4)


@pytest.fixture
def parquet_only(monkeypatch):
    """Make the Parquet fallback fail: what load_thumbnails then returns came from the shelf."""

    def refuse(run, rows):
        raise AssertionError("read from the Parquet, not from the shelf")

    monkeypatch.setattr(store, "_take_thumbnails", refuse)


def parquet_thumbnails(run) -> list[bytes | None]:
    """Every row's thumbnail as the Parquet has it, read file by file in row-id order (no shelf, no store)."""
    return [t for path in store.embedding_files(run) for t in pq.read_table(path).column("thumbnail").to_pylist()]


def rewrite_in_place(path, change) -> None:
    """Rewrite one Parquet file at the same path (same inode and folder), its thumbnails passed through `change`."""
    table = pq.read_table(path)
    thumbnails = [change(t) for t in table.column("thumbnail").to_pylist()]
    index = table.schema.get_field_index("thumbnail")
    pq.write_table(table.set_column(index, "thumbnail", pa.array(thumbnails, pa.binary())), path)


def test_every_row_reads_as_the_parquet_has_it_across_files(run):
    assert not shelf.is_current(run) and shelf.read(run, [0]) is None  # a fake run has no shelf yet
    assert shelf.build(run) == RunDir(run).thumbnails
    assert shelf.is_current(run)
    expected = parquet_thumbnails(run)
    assert len(expected) == 18 and len(store.embedding_files(run)) == 4
    assert shelf.read(run, range(18)) == expected
    assert [shelf.read(run, [row])[0] for row in range(18)] == expected  # one at a time, as the route reads
    meta = json.loads((RunDir(run).thumbnails / shelf.META).read_text())
    assert (meta["rows"], meta["format"]) == (18, 1)
    assert meta["bytes"] == sum(map(len, expected)) == (RunDir(run).thumbnails / shelf.SHELF).stat().st_size
    offsets = np.fromfile(RunDir(run).thumbnails / shelf.OFFSETS, "<i8")
    assert offsets[0] == 0 and offsets[-1] == meta["bytes"] and len(offsets) == 19


def test_rows_come_back_in_the_order_asked_repeats_included(run, parquet_only):
    shelf.build(run)
    expected = parquet_thumbnails(run)
    rows = [17, 0, 5, 5, 12, 0]
    assert shelf.read(run, rows) == [expected[r] for r in rows]
    assert store.load_thumbnails(run, np.array(rows)) == [expected[r] for r in rows]
    assert shelf.read(run, []) == []


def test_writing_the_manifest_after_the_build_leaves_the_shelf_current(run, parquet_only):
    """The driver builds the shelf, then writes the manifest: the shelf's version is the Parquet's, not the manifest's
    mtime (store.run_version)."""
    shelf.build(run)
    run_dir = RunDir(run)
    before = store.run_version(run)
    write_manifest(run_dir, read_manifest(run_dir))
    os.utime(run_dir.manifest, ns=(before + 10**9, before + 10**9))
    assert store.run_version(run) != before
    assert shelf.is_current(run) and store.load_thumbnails(run, [3]) == [parquet_thumbnails(run)[3]]


def test_a_file_rewritten_in_place_makes_the_shelf_stale_and_ensure_builds_it_again(run):
    shelf.build(run)
    files = store.embedding_files(run)
    rewrite_in_place(files[1], lambda t: t + b"changed")  # rows 4-8: a JPEG with bytes after its end still opens
    assert not shelf.is_current(run)
    assert shelf.read(run, [5]) is None and shelf.read(run, [0, 5]) is None
    now = parquet_thumbnails(run)
    assert now[5].endswith(b"changed")
    assert store.load_thumbnails(run, [5, 0]) == [now[5], now[0]]  # from the Parquet
    assert shelf.ensure(run) and shelf.is_current(run)
    assert shelf.read(run, range(18)) == now


def test_a_republished_run_makes_the_shelf_stale(run):
    """A new embeddings/ folder renamed into place (how a run is published) is not the one the shelf copied."""
    shelf.build(run)
    run_dir = RunDir(run)
    shutil.copytree(run_dir.embeddings, run_dir.staging)
    for path in sorted(run_dir.staging.glob("*.parquet"))[:1]:
        rewrite_in_place(path, lambda t: t + b"republished")
    os.replace(run_dir.embeddings, run.parent / "old")
    os.replace(run_dir.staging, run_dir.embeddings)
    assert not shelf.is_current(run) and shelf.read(run, [17]) is None  # row 17's file itself is byte for byte the same
    assert store.load_thumbnails(run, [0]) == [parquet_thumbnails(run)[0]]


def test_a_damaged_or_missing_thumbnail_reads_as_the_placeholder(tmp_path, parquet_only):
    run = write_fake_run(tmp_path, labels=LABELS, files=1)
    good = parquet_thumbnails(run)
    damage_thumbnails(run, {1: b"", 2: b"not a jpeg", 3: None, 4: good[4][:10]})
    shelf.build(run)
    assert shelf.read(run, [1, 2, 3, 4]) == [b"", b"not a jpeg", b"", good[4][:10]]  # kept as stored; a null as none
    placeholder = store.placeholder()
    assert store.load_thumbnails(run, range(6)) == [good[0]] + [placeholder] * 4 + [good[5]]


def test_a_row_outside_the_run_is_a_precise_error(run):
    shelf.build(run)
    for row in (18, -1):
        with pytest.raises(ValueError, match=rf"^row {row} is out of range: the run has 18 rows$"):
            shelf.read(run, [0, row])
        with pytest.raises(ValueError, match=rf"^row {row} is out of range"):
            store.load_thumbnails(run, [row])
    with pytest.raises(TypeError):
        shelf.read(run, [1.5])


def test_a_build_that_fails_midway_leaves_no_shelf_and_readers_use_the_parquet(run, monkeypatch):
    def crash(folder, final):
        assert (folder / shelf.META).exists()  # the temporary folder is whole: the crash comes at the last moment
        raise RuntimeError("killed")

    monkeypatch.setattr(shelf, "_install", crash)
    with pytest.raises(RuntimeError, match="killed"):
        shelf.build(run)
    assert not RunDir(run).thumbnails.exists() and list(run.glob(".thumbnails-*")) == []
    assert not shelf.is_current(run) and shelf.read(run, [2]) is None
    assert store.load_thumbnails(run, [2]) == [parquet_thumbnails(run)[2]]


def test_a_killed_builders_leftovers_are_cleared_by_the_next_build(run):
    leftover = run / ".thumbnails-abandoned.tmp"
    leftover.mkdir()
    (leftover / shelf.SHELF).write_bytes(b"half")
    shelf.build(run)
    assert not leftover.exists() and shelf.is_current(run)


def test_a_rebuild_replaces_the_old_shelf_whole(run):
    shelf.build(run)
    rewrite_in_place(store.embedding_files(run)[0], lambda t: t + b"v2")
    shelf.build(run)
    assert shelf.is_current(run) and shelf.read(run, range(18)) == parquet_thumbnails(run)
    assert sorted(p.name for p in run.glob("*thumbnails*")) == ["thumbnails", "thumbnails.lock"]


def test_a_shelf_of_another_format_is_not_read(run):
    shelf.build(run)
    meta_path = RunDir(run).thumbnails / shelf.META
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format": 2}))
    assert not shelf.is_current(run) and shelf.read(run, [0]) is None
    assert shelf.ensure(run) and shelf.read(run, [0]) == parquet_thumbnails(run)[:1]


def test_a_truncated_shelf_is_not_read(run):
    shelf.build(run)
    data = RunDir(run).thumbnails / shelf.SHELF
    data.write_bytes(data.read_bytes()[:100])
    assert not shelf.is_current(run) and shelf.read(run, [0]) is None


def test_ensure_on_a_run_without_parquet_says_no(tmp_path):
    (tmp_path / "empty" / "embeddings").mkdir(parents=True)
    assert shelf.ensure(tmp_path / "empty") is False
    assert shelf.ensure(tmp_path / "missing") is False
    with pytest.raises(FileNotFoundError, match="holds no Parquet files"):
        shelf.build(tmp_path / "empty")


def test_two_threads_ensuring_at_once_build_once(run, monkeypatch):
    builds, checks, both_want_one = [], [], threading.Event()
    write_shelf, is_current = shelf._write_shelf, shelf.is_current

    def checked(run):
        checks.append(is_current(run))
        if checks.count(False) == 3:  # each thread's first look, and the builder's second one under the lock
            both_want_one.set()
        return checks[-1]

    def counted(files, folder):
        builds.append(folder)
        assert both_want_one.wait(timeout=30)  # the other thread is on its way to the lock: it must wait for this build
        return write_shelf(files, folder)

    monkeypatch.setattr(shelf, "is_current", checked)
    monkeypatch.setattr(shelf, "_write_shelf", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(shelf.ensure(run))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [True, True] and len(builds) == 1
    assert shelf.read(run, range(18)) == parquet_thumbnails(run)


def test_two_builders_at_once_both_leave_a_whole_shelf(run):
    errors = []

    def build():
        try:
            shelf.build(run)
        except Exception as error:  # a failure in a thread would otherwise go unseen
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and shelf.is_current(run) and shelf.read(run, range(18)) == parquet_thumbnails(run)
    assert sorted(p.name for p in run.glob("*thumbnails*")) == ["thumbnails", "thumbnails.lock"]


def tiny_jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 100, 200)).save(out, "JPEG", quality=50)
    return out.getvalue()


def test_a_page_of_a_100000_row_run_comes_from_the_shelf(tmp_path, parquet_only):
    """One Parquet file of 100,000 ~300-byte thumbnails; each row's is unique (its id after the JPEG's end)."""
    run = tmp_path / "big"
    (run / "embeddings").mkdir(parents=True)
    rows = 100_000
    bases = [tiny_jpeg(shade) for shade in range(0, 256, 16)]
    thumbnails = [bases[row % 16] + b"row %d" % row for row in range(rows)]
    pq.write_table(pa.table({"path": [f"/d/x/{row}.jpg" for row in range(rows)],
                             "thumbnail": pa.array(thumbnails, pa.binary())}), run / "embeddings" / "part-0.parquet")
    assert shelf.ensure(run)
    page = np.random.default_rng(0).choice(rows, 24, replace=False).tolist() + [rows - 1, 0]
    assert store.load_thumbnails(run, page) == [thumbnails[row] for row in page]


def test_the_driver_builds_the_shelf_before_the_manifest(tmp_path, monkeypatch):
    """driver.run with the pipeline faked (no Ray): the finished run has a current shelf."""
    from doggos.base.config import RunConfig
    from doggos.pipeline.sources import Listing
    from doggos.runs import driver

    fake = write_fake_run(tmp_path / "fake", labels=LABELS, files=3)
    output = tmp_path / "run"
    order = []

    def embed(config, run_dir, *args, **kwargs):
        shutil.copytree(fake / "embeddings", run_dir.embeddings)
        return read_manifest(RunDir(fake))

    build = shelf.build
    monkeypatch.setattr(driver.dataset, "list_source", lambda config, listing=None: (None, Listing([], 0)))
    monkeypatch.setattr(driver.dataset, "embed", embed)
    monkeypatch.setattr(driver, "ray_connection", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(driver.shelf, "build", lambda run_dir: (order.append("shelf"), build(run_dir))[1])
    monkeypatch.setattr(driver, "write_manifest", lambda *a: (order.append("manifest"), write_manifest(*a)))
    config = RunConfig(source=str(tmp_path), output=str(output), model="m", projection=False, quality=False)
    driver.run(config, listing=Listing([], 0))  # a listing given: the model is not looked for either
    assert order == ["shelf", "manifest"]
    assert shelf.is_current(output) and shelf.read(output, range(18)) == parquet_thumbnails(output)
