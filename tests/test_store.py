"""doggos.base.store: reading a finished run (rows, labels, thumbnails, embeddings, failures, Ray statistics)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import NASTY_LABEL, RAY_STATS, damage_thumbnails, write_fake_run
from PIL import Image

from doggos.base import store

LABELS = {"beagle": 5, "border collie": 4, NASTY_LABEL: 3}


@pytest.fixture
def run(tmp_path):
    return write_fake_run(tmp_path, labels=LABELS, source="s3://bucket/dogs", files=3)


def test_index_has_one_row_per_image_in_file_order(run):
    index = store.load_index(run)
    table = pq.read_table(run / "embeddings")  # pyarrow's own reading of the folder, for comparison
    assert list(index.columns) == ["row", "path", "label", "name", "width", "height", "folder_label", "excluded"]
    assert list(index["row"]) == list(range(12))
    assert sorted(index["path"]) == sorted(table.column("path").to_pylist())
    assert index["path"][0] == "s3://bucket/dogs/beagle/beagle-0000.jpg" and index["name"][0] == "beagle-0000.jpg"
    assert index["label"].tolist().count(NASTY_LABEL) == 3
    assert index["folder_label"].tolist() == index["label"].tolist() and not index["excluded"].any()  # no decisions


def test_row_ids_agree_across_index_thumbnails_and_embeddings(run):
    index = store.load_index(run)
    thumbnails = store.load_thumbnails(run)
    vectors, meta = store.load_embeddings(run)
    assert len(thumbnails) == len(index) == len(vectors) == 12
    assert meta["path"].tolist() == index["path"].tolist()
    assert vectors.dtype == np.float32 and vectors.shape == (12, 16)
    direct = {}
    for f in store.embedding_files(run):
        part = pq.read_table(f).to_pydict()
        direct.update({p: (t, e) for p, t, e in zip(part["path"], part["thumbnail"], part["embedding"])})
    for row in range(12):
        thumbnail, embedding = direct[index["path"][row]]
        assert thumbnails[row] == thumbnail
        assert np.allclose(vectors[row], embedding)
    assert Image.open(io.BytesIO(thumbnails[0])).format == "JPEG"


def test_label_counts_most_frequent_first(run):
    counts = store.label_counts(store.load_index(run))
    assert counts.to_dict("records") == [
        {"label": "beagle", "images": 5}, {"label": "border collie", "images": 4}, {"label": NASTY_LABEL, "images": 3}]


def test_filter_index_by_labels_and_file_name_sorted_by_label_then_path(run):
    index = store.load_index(run).sample(frac=1, random_state=1)  # the order Ray wrote: any
    assert len(store.filter_index(index)) == 12
    picked = store.filter_index(index, ["border collie", NASTY_LABEL])
    assert picked["label"].tolist() == [NASTY_LABEL] * 3 + ["border collie"] * 4
    assert picked["path"].tolist()[3:] == sorted(picked["path"].tolist()[3:])
    assert store.filter_index(index, name_contains="  COLLIE-0003 ")["name"].tolist() == ["border collie-0003.jpg"]
    assert store.filter_index(index, ["beagle"], "collie").empty


def test_index_is_what_python_lists_would_give(run):
    """load_index keeps text in Arrow and cuts names with Arrow kernels: the frame equals the plain one."""
    table = store.read_columns(run, store.INDEX_COLUMNS)
    paths = table.column("path").to_pylist()
    plain = pd.DataFrame({"row": np.arange(len(paths), dtype=np.int64), "path": paths,
                          "label": table.column("class").to_pylist(), "name": [store.file_name(p) for p in paths],
                          "width": table.column("width").to_numpy(), "height": table.column("height").to_numpy()})
    pd.testing.assert_frame_equal(store.folder_index(run), plain)
    pd.testing.assert_frame_equal(store.load_index(run),
                                  plain.assign(folder_label=plain["label"], excluded=np.zeros(len(plain), bool)))


@pytest.mark.parametrize("paths", [
    ["s3://bucket/a/b c.jpg", "/data/dogs/x.png", "x.png", "dir/", "s3://bucket/dogs/", "", "///", "a\nb/c\nd.jpg",
     "é/🐶 ü.jpg", "a//b.jpg"],
    [None, "a/b.jpg", None],
    [None, None],
    [],
])
def test_file_names_cut_every_path_as_file_name_does(paths):
    expected = [None if p is None else store.file_name(p) for p in paths]
    assert store.file_names(pa.array(paths, pa.string())).to_pylist() == expected
    halves = pa.chunked_array([pa.array(paths[:1], pa.string()), pa.array(paths[1:], pa.string())])
    assert store.file_names(halves).to_pylist() == expected


def test_text_series_is_what_a_list_of_its_strings_gives():
    for values in (["a", None, "b"], ["a"], [None, None], []):
        expected = pd.DataFrame({"x": values})["x"]
        pd.testing.assert_series_equal(store.text_series(pa.array(values, pa.string())), expected, check_names=False)
        assert store.text_series(pa.chunked_array([pa.array(values, pa.string())])).tolist() == expected.tolist()


@pytest.fixture
def shuffled(tmp_path):
    """A run's index in no useful order, with exact copies of some rows (equal label and path: index order decides)."""
    labels = {"beagle": 9, "border collie": 7, NASTY_LABEL: 5, "akita": 4}
    index = store.load_index(write_fake_run(tmp_path, labels=labels, files=2))
    index = pd.concat([index, index.iloc[[2, 11, 20]]]).sample(frac=1, random_state=3)
    return index.reset_index(drop=True)


@pytest.mark.parametrize("filters", [(), (["border collie", NASTY_LABEL],), ((), "00"), (["beagle"], "0001"),
                                     (["akita"], "nothing like this")])
def test_ordered_rows_page_by_page_is_filter_index_sliced(shuffled, filters, monkeypatch):
    whole = store.filter_index(shuffled, *filters)
    chosen = store.matching_rows(shuffled, *filters)
    order = store.browse_order(shuffled)
    assert len(whole) == (len(shuffled) if chosen is None else len(chosen))
    for select_max in (store.SELECT_MAX, 5):  # a partial sort for the first rows, the whole sort past them
        monkeypatch.setattr(store, "SELECT_MAX", select_max)
        for window in (slice(0, 4), slice(4, 8), slice(8, 16), slice(0, len(whole)), slice(24, 28)):
            expected = whole.iloc[window]
            pd.testing.assert_frame_equal(shuffled.iloc[store.ordered_rows(shuffled, chosen, window)], expected)
            pd.testing.assert_frame_equal(shuffled.iloc[store.ordered_rows(shuffled, chosen, window, order)], expected)
    assert store.filter_positions(shuffled, *filters, order=order).tolist() == \
        store.filter_positions(shuffled, *filters).tolist()


def test_ordered_rows_leaves_a_few_excluded_rows_out_of_every_window(shuffled, monkeypatch):
    """All rows but a few chosen (the excluded ones left out): the first windows come from the whole index's order."""
    excluded = np.zeros(len(shuffled), dtype=bool)
    excluded[[0, 3, 17]] = True
    index = shuffled.assign(excluded=excluded)
    chosen = store.matching_rows(index)
    assert len(chosen) == len(index) - 3
    whole = store.filter_index(index)
    assert not whole["excluded"].any() and len(whole) == len(index) - 3
    for select_max in (store.SELECT_MAX, 8):  # the whole index's first rows, or the chosen ones sorted
        monkeypatch.setattr(store, "SELECT_MAX", select_max)
        for window in (slice(0, 4), slice(4, 8), slice(0, len(whole)), slice(20, 40)):
            pd.testing.assert_frame_equal(index.iloc[store.ordered_rows(index, chosen, window)], whole.iloc[window])


def test_matching_rows_is_none_without_filters(shuffled):
    assert store.matching_rows(shuffled) is None and store.matching_rows(shuffled, [], "  ") is None
    akitas = shuffled.iloc[store.matching_rows(shuffled, ["akita"], " AKITA-000 ")]
    assert akitas["label"].unique().tolist() == ["akita"] and len(akitas) == 4


def test_row_count_reads_only_the_footers(run):
    assert store.row_count(run) == 12


def test_file_name_of_uris_and_paths():
    assert store.file_name("s3://bucket/a/b c.jpg") == "b c.jpg"
    assert store.file_name("/data/dogs/x.png") == "x.png"


def test_detail_image_never_downloads_and_prefers_a_local_original(tmp_path):
    thumbnail = _jpeg((168, 224))
    assert store.detail_image("s3://bucket/dogs/a.jpg", thumbnail) == (thumbnail, "stored thumbnail", (168, 224))
    assert store.detail_image(str(tmp_path / "gone.jpg"), thumbnail) == (thumbnail, "stored thumbnail", (168, 224))
    original = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (200, 100, 50)).save(original)
    data, origin, size = store.detail_image(str(original), thumbnail)
    assert origin == "original file" and size == (768, 384) and Image.open(io.BytesIO(data)).size == (768, 384)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert store.detail_image(str(broken), thumbnail)[:2] == (thumbnail, "stored thumbnail (the original could not be read)")


def _jpeg(size) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format="JPEG")
    return out.getvalue()


def test_missing_embeddings_raise_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet"):
        store.load_index(tmp_path)


def test_failures_manifest_log_and_stats(run):
    assert store.read_failures(run) == [{"path": "s3://bucket/dogs/beagle/broken.jpg",
                                         "reason": "not an image (unknown or unsupported format)"}]
    assert store.read_ray_stats(run) == RAY_STATS
    (run / "failures.json").write_text("{not json")
    assert store.read_failures(run) == []
    assert store.read_ray_stats(run / "nowhere") == "" and store.read_log(run / "nowhere") == ""


def test_run_version_changes_when_the_run_is_republished(run):
    before = store.run_version(run)
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text())
    import os

    os.utime(manifest, ns=(before + 10**9, before + 10**9))
    assert store.run_version(run) != before and store.run_version(run / "nowhere") == 0


def test_parse_operator_stats():
    operators = store.parse_operator_stats(RAY_STATS)
    assert [(o["operator"], o["name"], o["tasks"], o["blocks"], o["wall_s"], o["rows_out"]) for o in operators] == [
        (1, "ReadBinary", 4, 4, 1.38, 300),
        (2, "Map(add_label)->MapBatches(prepare_images)->MapBatches(Embedder)", 4, 4, 0.45, 300),
        (3, "Write", 4, 4, 0.26, 4),
    ]
    assert operators[1]["cpu_s"] == pytest.approx(0.4329)
    assert store.operator_chain(operators) == "ReadBinary → Map(add_label)->MapBatches(prepare_images)->MapBatches(Embedder) → Write"
    assert store.parse_operator_stats("Operator 7 Foo: 2 tasks executed, 3 blocks produced in 812.5ms")[0]["wall_s"] == 0.8125
    assert store.parse_operator_stats("(Ray Data stats unavailable: boom)") == []


def test_execution_plan_from_the_log():
    log = ("2026 INFO streaming_executor.py:216 -- Execution plan of Dataset dataset_1: InputDataBuffer[Input] -> "
           "TaskPoolMapOperator[ReadBinary->Map(add_label)] -> ActorPoolMapOperator[MapBatches(Embedder)] -> "
           "TaskPoolMapOperator[Write]\n")
    assert store.execution_plan(log) == "InputDataBuffer[Input] → ReadBinary->Map(add_label) → MapBatches(Embedder) → Write"
    assert store.execution_plan("nothing here") is None


def test_loading_snippets_run_as_shown(run, tmp_path):
    odd = tmp_path / "it's a \"folder\""
    (run / "embeddings").rename(odd)
    snippets = store.loading_snippets(str(odd))
    compile(snippets["ray"], "<ray snippet>", "exec")
    scope: dict = {}
    exec(snippets["pandas"].replace("print(", "(lambda *a: None)("), scope)
    frame = scope["df"]
    assert isinstance(frame, pd.DataFrame) and len(frame) == 12 and len(scope["embeddings"][0]) == 16


def test_thumbnails_of_some_rows_match_the_full_read_across_files(tmp_path):
    run = write_fake_run(tmp_path, labels={"a": 10, "b": 9}, files=3)
    everything = store.load_thumbnails(run)
    rows = [18, 0, 7, 6, 12]  # out of order and across all three files
    assert store.load_thumbnails(run, rows) == [everything[r] for r in rows]


def test_embedding_chunks_are_the_matrix_in_row_order_across_files(tmp_path):
    """The quality step reads the matrix a chunk at a time: any chunk size, across Parquet files, the same rows."""
    run = write_fake_run(tmp_path / "run", labels={"beagle": 7, "pug": 6, "akita": 4}, dim=8, files=3)
    vectors, _ = store.load_embeddings(run)
    assert len(vectors) == 17
    for size in (1, 4, 5, 17, 100):
        chunks = list(store.embedding_chunks(run, size))
        assert [len(c) for c in chunks[:-1]] == [size] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= size
        np.testing.assert_array_equal(np.concatenate(chunks), vectors)
    with pytest.raises(ValueError, match="rows_per_chunk: must be at least 1"):
        next(store.embedding_chunks(run, 0))


def test_a_missing_or_damaged_thumbnail_reads_as_the_grey_placeholder(tmp_path):
    run = write_fake_run(tmp_path, labels=LABELS, files=1)
    good = store.load_thumbnails(run)
    damage_thumbnails(run, {1: b"", 2: b"not a jpeg", 3: None, 4: good[4][:10]})
    placeholder = store.placeholder()
    assert Image.open(io.BytesIO(placeholder)).size == (224, 224)
    assert store.load_thumbnails(run, [0, 1, 2, 3, 4, 5]) == [good[0]] + [placeholder] * 4 + [good[5]]
    assert store.load_thumbnails(run)[1:5] == [placeholder] * 4 and store.load_thumbnails(run)[6:] == good[6:]

