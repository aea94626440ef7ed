"""Search by example and by words: exact top-k against brute force over the stored Parquet, filters, ties, errors, cache."""

import csv
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import NASTY_LABEL, write_fake_run
from imagegen import write_image_tree

from doggos.explore import search
from doggos.explore.search import Hit, SearchError
from doggos.pipeline import encoders
from doggos.pipeline.embedder import Embedder, embedding_array, prepare_images

LABELS = {"beagle": 12, "border collie": 9, NASTY_LABEL: 6}


@pytest.fixture(autouse=True)
def empty_cache():
    search.clear_cache()
    yield
    search.clear_cache()


@pytest.fixture
def run(tmp_path):
    return write_fake_run(tmp_path, labels=LABELS, files=3)


def write_run(root, rows, files=2, name="run"):
    """A finished run of exactly these (path, label, vector) rows, split over `files` Parquet files."""
    run = root / name
    (run / "embeddings").mkdir(parents=True, exist_ok=True)
    for old in (run / "embeddings").glob("*.parquet"):
        old.unlink()
    table = pa.table({"path": [r[0] for r in rows], "class": [r[1] for r in rows],
                      "embedding": embedding_array(np.array([r[2] for r in rows], dtype=np.float32))})
    bounds = np.linspace(0, len(rows), files + 1).astype(int)
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(start, stop - start), run / "embeddings" / f"part-{part:06d}.parquet")
    manifest = run / "manifest.json"
    before = manifest.stat().st_mtime_ns if manifest.exists() else 0
    manifest.write_text(json.dumps({"status": "succeeded", "rows": len(rows)}), encoding="utf-8")
    if manifest.stat().st_mtime_ns <= before:  # a coarse clock: make the re-publication visible, as it would be later
        os.utime(manifest, ns=(before + 1_000_000, before + 1_000_000))
    return run


def stored(run):
    """Path → (label, unit vector), read with pyarrow directly: the reference the index is checked against."""
    table = pq.read_table(run / "embeddings")
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dict(zip(table.column("path").to_pylist(), zip(table.column("class").to_pylist(), vectors)))


def brute_force(reference, query, k, labels=None, exclude=()):
    query = np.asarray(query, dtype=np.float64) / np.linalg.norm(query)
    scored = [(-float(vector @ query), path) for path, (label, vector) in reference.items()
              if (not labels or label in labels) and path not in exclude]
    return [(path, -negative) for negative, path in sorted(scored)[:k]]


def test_the_index_holds_every_stored_row_as_a_unit_vector(run):
    index = search.load_index(run)
    reference = stored(run)
    assert len(index) == 27 and index.dim == 16 and index.vectors.dtype == np.float32
    assert sorted(index.paths) == sorted(reference)
    for row, path in enumerate(index.paths):
        label, vector = reference[path]
        assert index.labels[row] == label == index.label_names[index.label_codes[row]]
        assert np.allclose(index.vectors[row], vector, atol=1e-6)
    assert list(index.label_names) == sorted(LABELS) and index.label_codes.dtype == np.int32
    assert not index.vectors.flags.writeable  # shared by every session: nobody may change it in place


def test_top_k_equals_brute_force_over_the_stored_parquet(run):
    index = search.load_index(run)
    reference = stored(run)
    rng = np.random.default_rng(1)
    for k in (1, 5, 27, 1000):
        query = rng.normal(size=16)
        hits = search.top_k(index, query, k=k)
        expected = brute_force(reference, query, k)
        assert [h.path for h in hits] == [path for path, _ in expected]
        assert np.allclose([h.score for h in hits], [score for _, score in expected], atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, len(expected) + 1))
        assert all(index.paths[h.row] == h.path and index.labels[h.row] == h.label for h in hits)


def test_the_label_filter_keeps_only_those_labels(run):
    index = search.load_index(run)
    reference = stored(run)
    query = np.random.default_rng(2).normal(size=16)
    for labels in (["border collie"], "border collie", [NASTY_LABEL, "beagle"]):
        hits = search.top_k(index, query, k=8, labels=labels)
        wanted = [labels] if isinstance(labels, str) else labels
        assert [h.path for h in hits] == [p for p, _ in brute_force(reference, query, 8, labels=wanted)]
        assert {h.label for h in hits} <= set(wanted)
    assert len(search.top_k(index, query, k=50, labels=[NASTY_LABEL])) == 6  # fewer than k: all of them
    assert len(search.top_k(index, query, k=50, labels=[])) == 27  # an empty filter is no filter


def test_a_rows_neighbours_exclude_the_row_itself(run):
    index = search.load_index(run)
    reference = stored(run)
    row = int(np.flatnonzero(index.labels == "border collie")[0])
    hits = search.by_row(index, row, k=5)
    assert row not in [h.row for h in hits] and len(hits) == 5
    assert [h.path for h in hits] == [p for p, _ in brute_force(reference, index.vectors[row], 5,
                                                              exclude={index.paths[row]})]
    assert search.label_summary(hits) == "5 of 5 nearest are border collie"  # the fake run clusters by label
    assert len(search.by_row(index, row, k=1000)) == 26


def test_equal_scores_come_in_path_order_even_at_the_cut(tmp_path):
    e = np.eye(4, dtype=np.float32)  # basis vectors: every score is exactly 1 or 0, whatever the arithmetic
    rows = [("d/4.jpg", "b", e[0]), ("a/9.jpg", "b", e[1]), ("c/1.jpg", "a", e[0]), ("a/2.jpg", "a", e[0] * 3),
            ("b/7.jpg", "b", e[0]), ("e/0.jpg", "a", e[2]), ("a/1.jpg", "a", e[3])]
    index = search.load_index(write_run(tmp_path, rows, files=3))
    hits = search.top_k(index, e[0], k=3)
    assert [(h.path, h.score) for h in hits] == [("a/2.jpg", 1.0), ("b/7.jpg", 1.0), ("c/1.jpg", 1.0)]
    assert [h.path for h in search.top_k(index, e[0], k=6)] == ["a/2.jpg", "b/7.jpg", "c/1.jpg", "d/4.jpg",
                                                                 "a/1.jpg", "a/9.jpg"]
    assert [h.path for h in search.top_k(index, -e[1], k=2, labels="b")] == ["b/7.jpg", "d/4.jpg"]


def test_zero_and_broken_vectors_stay_zero_and_match_nothing(tmp_path):
    rows = [("a.jpg", "x", [0.0, 0.0, 0.0]), ("b.jpg", "x", [3.0, 4.0, 0.0]), ("c.jpg", "x", [np.nan, 1.0, 0.0])]
    index = search.load_index(write_run(tmp_path, rows, files=1))
    assert np.allclose(index.vectors, [[0, 0, 0], [0.6, 0.8, 0], [0, 0, 0]], atol=1e-7)
    assert [(h.path, h.score) for h in search.top_k(index, [0.0, 1.0, 0.0], k=3)] == \
        [("b.jpg", pytest.approx(0.8)), ("a.jpg", 0.0), ("c.jpg", 0.0)]


@pytest.mark.parametrize("k", [0, -1, 1001, "ten", True, 2.5, None])
def test_k_outside_1_to_1000_is_refused(run, k):
    with pytest.raises(SearchError, match=r"^k: must be") as caught:
        search.top_k(search.load_index(run), np.ones(16), k=k)
    assert caught.value.field == "k"


def test_k_given_as_text_or_numpy_is_read(run):
    index = search.load_index(run)
    assert len(search.top_k(index, np.ones(16), k=" 3 ")) == len(search.top_k(index, np.ones(16), k=np.int64(3))) == 3


@pytest.mark.parametrize("row", [-1, 27, "x", True, 1.5])
def test_rows_outside_the_run_are_refused(run, row):
    with pytest.raises(SearchError, match=r"^row: must be") as caught:
        search.by_row(search.load_index(run), row)
    assert caught.value.field == "row"


def test_an_unknown_label_is_refused_naming_the_known_ones(run):
    index = search.load_index(run)
    with pytest.raises(SearchError, match=r"labels: no such label 'poodle' in this run \(known: .*'beagle'") as caught:
        search.top_k(index, np.ones(16), labels=["beagle", "poodle"])
    assert caught.value.field == "labels"


def test_cheap_checks_come_before_the_model_runs(run):
    index = search.load_index(run)  # no encoder at all: the k and labels errors must come first
    with pytest.raises(SearchError, match="^k:"):
        search.by_text(index, None, "a dog", k=0)
    with pytest.raises(SearchError, match="^labels:"):
        search.by_image(index, None, b"...", labels=["poodle"])


def test_a_model_of_another_size_is_refused_on_the_query_field(run, tiny_clip):
    index = search.load_index(run)  # 16-d fake embeddings; the tiny CLIP gives 32
    with pytest.raises(SearchError, match="not the one the run was made with") as caught:
        search.by_text(index, encoders.text_encoder(tiny_clip), "a dog")
    assert caught.value.field == "text"


def test_the_cache_keeps_a_run_until_it_is_published_again(tmp_path):
    rows = [("a.jpg", "x", [1.0, 0.0]), ("b.jpg", "y", [0.0, 1.0])]
    run = write_run(tmp_path, rows)
    first = search.load_index(run)
    assert search.load_index(str(run)) is first
    run = write_run(tmp_path, rows + [("c.jpg", "z", [1.0, 1.0])])  # new Parquet, then the manifest, as a run does
    second = search.load_index(run)
    assert second is not first and len(second) == 3 and second.version > first.version
    assert search.load_index(run) is second


def test_the_cache_holds_a_few_runs_only(tmp_path):
    runs = [write_run(tmp_path, [(f"{i}.jpg", "x", [1.0, float(i)])], name=f"run{i}")
            for i in range(search.CACHE_ENTRIES + 1)]
    first = search.load_index(runs[0])
    for run in runs[1:]:
        search.load_index(run)
    assert search.load_index(runs[0]) is not first  # the least recently used run was let go


def test_hits_read_as_the_cli_json_a_csv_and_a_summary():
    hits = [Hit(1, 4, "/d/b/1.jpg", "beagle", 0.9), Hit(2, 0, '/d/x/"2".jpg', NASTY_LABEL, 0.5),
            Hit(3, 7, "/d/c/3.jpg", "collie", 0.25), Hit(4, 2, "/d/x/4.jpg", NASTY_LABEL, 0.125)]
    assert hits[0].to_dict() == {"rank": 1, "row": 4, "path": "/d/b/1.jpg", "class": "beagle", "score": 0.9}
    assert json.loads(json.dumps([h.to_dict() for h in hits]))[1]["class"] == NASTY_LABEL
    table = list(csv.reader(io.StringIO(search.hits_csv(hits))))
    assert table[0] == ["path", "label", "score"] and table[2] == ['/d/x/"2".jpg', NASTY_LABEL, "0.500000"]
    assert search.label_summary(hits) == f"2 of 4 nearest are {NASTY_LABEL}"
    assert search.label_summary(hits[:1]) == "1 of 1 nearest is beagle"
    assert search.label_summary([hits[2], hits[0]]) == "1 of 2 nearest is beagle"  # equal counts: the first label by name
    assert search.label_summary([]) == "no results"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_clip):
    """A run embedded by the pipeline's own steps (prepare_images + Embedder), without Ray, written as Parquet."""
    root = tmp_path_factory.mktemp("real")
    files = write_image_tree(root / "images", per_label=3)
    batch = {"path": np.array(list(files), dtype=object), "class": np.array(list(files.values()), dtype=object),
             "bytes": np.array([open(p, "rb").read() for p in files], dtype=object)}
    table = Embedder(model=tiny_clip, threads=1)(prepare_images(batch, model=tiny_clip, thumbnail_size=32))
    run = root / "run"
    (run / "embeddings").mkdir(parents=True)
    pq.write_table(table.slice(0, 4), run / "embeddings" / "part-000000.parquet")
    pq.write_table(table.slice(4), run / "embeddings" / "part-000001.parquet")
    (run / "manifest.json").write_text(json.dumps({"status": "succeeded", "model": tiny_clip}), encoding="utf-8")
    return run, files


def test_an_image_file_of_the_run_finds_itself_first(real_run, tiny_clip):
    run, files = real_run
    index = search.load_index(run)
    encoder = encoders.image_encoder(tiny_clip)
    for path in files:
        hits = search.by_image(index, encoder, open(path, "rb").read(), k=3)
        assert hits[0].path == path and hits[0].score >= 0.9999


def test_words_are_searched_with_the_runs_text_tower(real_run, tiny_clip):
    run, files = real_run
    index = search.load_index(run)
    encoder = encoders.text_encoder(tiny_clip)
    hits = search.by_text(index, encoder, "a beagle in the park", k=4, labels=["beagle", "shiba_inu"])
    expected = brute_force(stored(run), encoder.encode(["a beagle in the park"])[0], 4, labels={"beagle", "shiba_inu"})
    assert [h.path for h in hits] == [p for p, _ in expected]
    assert np.allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
    with pytest.raises(SearchError, match="^text: is empty"):
        search.by_text(index, encoder, "  ")

