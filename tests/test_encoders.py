"""Query encoders on the tiny random CLIP: the same vectors as the whole CLIP model, and field errors for bad input."""

import io
import shutil
import struct
import zlib

import numpy as np
import pytest
from imagegen import make_photo
from PIL import Image
from reference import cosine, reference_embeddings

from doggos.base.images import MAX_PIXELS
from doggos.explore.search import SearchError
from doggos.pipeline import demo, encoders
from doggos.pipeline.encoders import EncoderUnavailable, ImageEncoder, TextEncoder

TEXTS = ["a photo of a dog", "Beagle", "zwei Hunde 🐶 im Schnee, très calmes!", "7"]


@pytest.fixture(scope="module")
def text(tiny_clip):
    return encoders.text_encoder(tiny_clip)


@pytest.fixture(scope="module")
def image(tiny_clip):
    return encoders.image_encoder(tiny_clip)


def jpeg_bytes(seed, size=(120, 90)):
    out = io.BytesIO()
    make_photo(seed, size).save(out, format="JPEG", quality=90)
    return out.getvalue()


def png_claiming_size(width, height):
    """A real PNG whose header says width x height: decode must refuse it from the header, before any pixel."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_the_text_tower_alone_gives_clips_text_features_on_the_text_as_typed(tiny_clip, text):
    import torch
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    inputs = AutoTokenizer.from_pretrained(tiny_clip)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model.get_text_features(**inputs).pooler_output.numpy()
    got = text.encode(TEXTS)
    assert got.shape == (4, 32) and got.dtype == np.float32
    assert cosine(got, expected).min() >= 0.9999
    one_at_a_time = np.concatenate([text.encode([t]) for t in TEXTS])  # padding in a batch changes nothing
    assert cosine(one_at_a_time, expected).min() >= 0.9999


def test_an_image_file_embeds_like_the_model_called_directly(tmp_path, image):
    paths = []
    for seed in range(3):
        path = tmp_path / f"{seed}.jpg"
        path.write_bytes(jpeg_bytes(seed, (100 + 30 * seed, 80)))
        paths.append(str(path))
    got = np.stack([image.encode_file(open(p, "rb").read()) for p in paths])
    assert got.shape == (3, 32) and got.dtype == np.float32
    assert cosine(got, reference_embeddings(image.model, paths)).min() >= 0.9999


def test_text_is_refused_when_empty_too_long_or_not_text(text):
    assert text.max_tokens == demo.CONTEXT_LENGTH
    longest = "x" * (text.max_tokens - 2)  # the demo tokenizer reads one token per byte, plus start and end
    assert text.token_count(longest) == text.max_tokens
    assert text.encode([longest]).shape == (1, 32)
    cases = {"": "is empty", "   \n\t": "is empty", longest + "x": f"is {text.max_tokens + 1} tokens; this model reads at most 77",
             "y" * (encoders.MAX_TEXT_CHARS + 1): "at most 1,000", 42: "must be text"}
    for bad, message in cases.items():
        with pytest.raises(SearchError, match=message) as caught:
            text.encode(["fine", bad])
        assert caught.value.field == "text" and str(caught.value).startswith("text: ")


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"GIF89a but not really", "not an image"),
    (b"\xff\xd8" + bytes(encoders.MAX_UPLOAD_BYTES), "at most 20 MB"),
    (png_claiming_size(8000, 6000), f"limit {MAX_PIXELS:,}"),
    ("a/path.jpg", "must be a file's bytes"),
])
def test_bad_uploads_are_refused_on_the_image_field(image, data, message):
    with pytest.raises(SearchError, match=message) as caught:
        image.encode_file(data)
    assert caught.value.field == "image"


def test_an_upload_in_a_bytearray_or_another_mode_is_read_like_a_file(image):
    rgba = io.BytesIO()
    make_photo(5).convert("RGBA").save(rgba, format="PNG")
    vector = image.encode_file(bytearray(rgba.getvalue()))
    assert vector.shape == (32,) and np.isfinite(vector).all()


def test_a_model_without_a_tokenizer_refuses_text_but_still_embeds_images(tiny_clip, tmp_path):
    bare = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_clip, bare, ignore=shutil.ignore_patterns("tokenizer*", "vocab.json", "merges.txt"))
    with pytest.raises(EncoderUnavailable, match="has no tokenizer.*by an image file still works") as caught:
        TextEncoder(str(bare))
    assert caught.value.field == "text" and isinstance(caught.value, ValueError)
    assert ImageEncoder(str(bare)).encode_file(jpeg_bytes(1)).shape == (32,)


def test_models_that_cannot_be_loaded_say_why(tmp_path, monkeypatch):
    with pytest.raises(EncoderUnavailable, match="not on this machine.*still works"):
        TextEncoder(str(tmp_path / "gone" / "clip"))
    with pytest.raises(EncoderUnavailable, match="not on this machine") as caught:
        ImageEncoder(str(tmp_path / "gone" / "clip"))
    assert caught.value.field == "image" and "by a row of the run still works" in str(caught.value)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(EncoderUnavailable, match="needs a CLIP model"):
        TextEncoder(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(EncoderUnavailable, match="not in the Hugging Face cache") as caught:
        TextEncoder("openai/clip-vit-base-patch32")
    assert caught.value.hint == "demo_kit" or "demo-kit" in str(caught.value)  # the advice a ModelError carries


def test_encoders_load_once_per_model(tiny_clip, text, image):
    assert encoders.text_encoder(tiny_clip) is text and encoders.image_encoder(tiny_clip) is image


def test_the_demo_tokenizer_reads_any_text_and_matches_its_model(tiny_clip, text):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    config = AutoConfig.from_pretrained(tiny_clip).text_config
    assert len(tokenizer) == config.vocab_size == demo.TOKENIZER_SIZE
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == \
        (config.bos_token_id, config.eos_token_id, config.pad_token_id)
    ids = tokenizer("Ünïcode 🐶 and ASCII, too.")["input_ids"]
    assert ids[0] == config.bos_token_id and ids[-1] == config.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert text.token_count("dog") == 5  # d, o, g</w>, start, end: one token per byte
