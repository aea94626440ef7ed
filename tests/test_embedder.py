"""The embedder on hand-built batches, without Ray: same vectors as calling the model directly."""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from imagegen import make_photo
from reference import cosine, reference_embeddings

from doggos.pipeline.embedder import Embedder, embedding_array, prepare_images
from doggos.pipeline.progress import ProgressCounter


def file_batch(tmp_path, count=5, extra=()):
    paths, datas = [], []
    for i in range(count):
        path = tmp_path / "beagle" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        make_photo(i, (90 + 10 * i, 70)).save(path, quality=92)
        paths.append(str(path))
        datas.append(path.read_bytes())
    for name, data in extra:
        paths.append(str(tmp_path / "beagle" / name))
        datas.append(data)
    return {"path": np.array(paths, dtype=object), "class": np.array(["beagle"] * len(paths), dtype=object), "bytes": np.array(datas, dtype=object)}


class FakeTracker:
    """Records what the pipeline would report to its Ray progress actor."""

    def __init__(self):
        self.calls = []
        self.add_decoded = self.add_embedded = self

    def remote(self, *args):
        self.calls.append(args)


def test_prepare_then_embed_equals_model_called_directly(tmp_path, tiny_clip):
    batch = file_batch(tmp_path)
    prepared = prepare_images(batch, model=tiny_clip, thumbnail_size=32)
    assert prepared["pixel_values"].shape == (5, 3, 64, 64) and prepared["pixel_values"].dtype == np.float32
    table = Embedder(model=tiny_clip, device="cpu", threads=1)(prepared)
    assert table.column_names == ["path", "class", "embedding", "thumbnail", "width", "height", "content_hash"]
    import hashlib

    assert table.column("content_hash").to_pylist() == [hashlib.sha256(d).hexdigest() for d in batch["bytes"]]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    embeddings = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    expected = reference_embeddings(tiny_clip, list(batch["path"]))
    assert cosine(embeddings, expected).min() >= 0.9999
    assert table.column("width").to_pylist() == [90, 100, 110, 120, 130]


@pytest.mark.parametrize("threads", [1, 2])  # two: the files are decoded on the actor's own thread pool
def test_the_embedder_decodes_raw_files_itself_when_the_plan_says_so(tmp_path, tiny_clip, threads):
    batch = file_batch(tmp_path)
    embedder = Embedder(model=tiny_clip, threads=threads, thumbnail_size=32)
    table = embedder(batch)  # "bytes", no "pixel_values"
    assert (embedder.pool is not None) == (threads > 1 and (os.cpu_count() or 1) > 1)
    embeddings = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert cosine(embeddings, reference_embeddings(tiny_clip, list(batch["path"]))).min() >= 0.9999


def test_decoding_on_the_actors_threads_keeps_the_order_and_the_failures(tmp_path, tiny_clip):
    batch = file_batch(tmp_path, count=6, extra=[("broken.jpg", b"not a jpeg")])
    order = [6, 0, 1, 2, 3, 4, 5]  # the bad file first: the rows after it keep their order
    batch = {key: column[order] for key, column in batch.items()}
    serial = prepare_images(batch, model=tiny_clip, thumbnail_size=32)
    with ThreadPoolExecutor(2) as pool:
        tracker = FakeTracker()
        threaded = prepare_images(batch, model=tiny_clip, thumbnail_size=32, tracker=tracker, pool=pool)
    assert list(threaded["path"]) == list(serial["path"]) == list(batch["path"][1:])
    assert np.array_equal(threaded["pixel_values"], serial["pixel_values"])
    assert list(threaded["thumbnail"]) == list(serial["thumbnail"])
    (decoded, failures), = tracker.calls
    assert decoded == 6 and [p.rsplit("/", 1)[1] for p, _ in failures] == ["broken.jpg"]


def test_a_bad_file_is_reported_and_the_rest_of_its_batch_survives(tmp_path, tiny_clip):
    tracker = FakeTracker()
    batch = file_batch(tmp_path, count=3, extra=[("broken.jpg", b"not a jpeg"), ("empty.jpg", b"")])
    prepared = prepare_images(batch, model=tiny_clip, thumbnail_size=32, tracker=tracker)
    assert len(prepared["path"]) == 3
    (decoded, failures), = tracker.calls
    assert decoded == 3
    assert [(p.rsplit("/", 1)[1], reason.split(" ")[0]) for p, reason in failures] == [("broken.jpg", "not"), ("empty.jpg", "empty")]


def test_an_all_bad_batch_yields_an_empty_batch_the_embedder_accepts(tmp_path, tiny_clip):
    batch = file_batch(tmp_path, count=0, extra=[("a.jpg", b"nope")])
    prepared = prepare_images(batch, model=tiny_clip, thumbnail_size=32)
    assert prepared["pixel_values"].shape == (0, 3, 64, 64)
    table = Embedder(model=tiny_clip)(prepared)
    assert table.num_rows == 0 and table.schema.field("embedding").type.list_size == 32


def test_embedding_array_is_fixed_size_float32():
    array = embedding_array(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert array.type == pa.list_(pa.float32(), 3) and array.to_pylist() == [[0, 1, 2], [3, 4, 5]]


def test_the_actor_embeds_the_zero_shot_prompts_as_the_text_tower_does(tiny_clip):
    """Prompts given to the embedder are embedded once, in __init__, and reported: what the quality step would compute."""
    from doggos.pipeline.encoders import TextEncoder

    tracker, counter = FakeTracker(), ProgressCounter(found=3)
    tracker.set_prompt_features = tracker
    tracker.claim_prompts = SimpleNamespace(remote=counter.claim_prompts)  # the run's tracker: the first actor wins
    prompts = ["a photo of a beagle.", "a photo of a pug.", "a photo of a border collie."]
    Embedder(model=tiny_clip, device="cpu", threads=1, tracker=tracker, prompts=prompts)
    Embedder(model=tiny_clip, device="cpu", threads=1, tracker=tracker, prompts=prompts)  # a second actor of the pool
    [(reported, features, why, logit_scale)] = tracker.calls  # embedded and reported once
    assert reported == prompts and why is None and features.dtype == np.float32
    assert logit_scale == pytest.approx(math.log(1 / 0.07), abs=1e-3)  # the saved model's own (CLIP's initial value)
    np.testing.assert_allclose(features, TextEncoder(tiny_clip).encode(prompts), atol=1e-5)
    features, why = Embedder(model=tiny_clip, device="cpu", threads=1).prompt_features(["dog " * 200])
    assert features is None and why.startswith("a prompt is longer than the") and "tokens this model reads" in why
