"""The run's own CLIP on CPU in this process, embedding queries: words with its text tower, files with its image tower."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from pathlib import Path

import numpy as np

from doggos.base import images
from doggos.base.config import ConfigError
from doggos.pipeline import models

MAX_UPLOAD_BYTES = 20 * 2**20  # larger uploads are refused before decoding (a 40 MP JPEG is ~15 MB)
MAX_TEXT_CHARS = 1_000  # refused before tokenizing: far more than the 77 tokens CLIP reads of ordinary text
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # a saved tokenizer has one of these (vocab.json beside merges.txt)
TEXT_FALLBACK = "Searching by a row of the run or by an image file still works."
IMAGE_FALLBACK = "Searching by a row of the run still works."


class SearchError(ConfigError):
    """A query a user can fix; `field` names what to fix: "text", "k", "row", "image" or "labels" (here, since the
    query encoders raise it too; `doggos.explore.search` uses it for the rest)."""


class EncoderUnavailable(SearchError):
    """The model's text or image side cannot be loaded here; the message says why and which searches still work."""

    def __init__(self, field: str, why: str, hint: str | None = None):
        fallback = TEXT_FALLBACK if field == "text" else IMAGE_FALLBACK
        super().__init__(field, f"unavailable for this model: {why.rstrip('.')}. {fallback}")
        self.why = why
        self.hint = hint  # a ModelError's advice key (e.g. the demo kit for a model not to be had offline), if any

    @classmethod
    def from_model_error(cls, field: str, error: Exception, prefix: str = "") -> "EncoderUnavailable":
        why = getattr(error, "message", None) or str(error)  # the reason without ModelError's "model: " prefix
        return cls(field, prefix + why, getattr(error, "hint", None))


class TextEncoder:
    """The model's text tower and tokenizer: `encode` embeds text exactly as typed (no prompt template is added)."""

    def __init__(self, model: str):
        self.model = model
        self._torch, self._tower, config = _load_tower(model, "text")
        self._tokenizer = load_tokenizer(model, config.vocab_size)
        self._lock = threading.Lock()  # a fast tokenizer raises "Already borrowed" when two threads pad at once
        self.dim = config.projection_dim
        self._positions = config.max_position_embeddings

    @property
    def max_tokens(self) -> int:
        """The most tokens, start and end markers included, that this model reads."""
        limit = self._tokenizer.model_max_length  # a huge sentinel when the tokenizer does not say
        return min(self._positions, limit) if limit else self._positions

    def token_count(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer(text, verbose=False)["input_ids"])  # too long is our error to say, not a log line

    def check(self, text) -> str:
        """`text` when the model can read it whole; otherwise a SearchError on "text" (never silently truncated)."""
        if not isinstance(text, str):
            raise SearchError("text", f"must be text (got {type(text).__name__})")
        if not text.strip():
            raise SearchError("text", "is empty: type a few words to search for")
        if len(text) > MAX_TEXT_CHARS:
            raise SearchError("text", f"is {len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
        count = self.token_count(text)
        if count > self.max_tokens:
            preview = text if len(text) <= 40 else text[:40] + "…"
            raise SearchError("text", f"{preview!r} is {count} tokens; this model reads at most {self.max_tokens}")
        return text

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 text features, not normalised: `get_text_features(...).pooler_output`."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; wrap one text in a list")
        texts = [self.check(text) for text in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            inputs = self._tokenizer(texts, padding=True, return_tensors="pt")  # padding is the end token CLIP pools past
        with self._torch.inference_mode():
            output = self._tower(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return output.text_embeds.float().numpy()


class ImageEncoder:
    """The model's image tower and its own image processor: `encode_file` embeds an uploaded file as the pipeline does."""

    def __init__(self, model: str):
        self.model = model
        self._torch, self._tower, config = _load_tower(model, "image")
        try:
            self._processor = models.load_image_processor(model)
        except models.ModelError as error:
            raise EncoderUnavailable.from_model_error("image", error, "no image processor: ") from None
        self.dim = config.projection_dim

    def encode_file(self, data: bytes) -> np.ndarray:
        """(dim,) float32 image features, not normalised, of an uploaded file's bytes.

        The steps of `doggos.pipeline.embedder.prepare_images` and `Embedder`: `images.decode`, the model's own
        processor, `get_image_features(...).pooler_output` in float32 (the image tower alone computes the same).
        """
        image = read_upload(data)
        try:
            pixels = self._processor(images=[image], return_tensors="np")["pixel_values"].astype(np.float32, copy=False)
        except Exception as error:  # the processor on a pathological image: a reason, as the pipeline records one
            raise SearchError("image", f"preprocessing failed: {type(error).__name__}: {error}") from None
        with self._torch.inference_mode():
            output = self._tower(pixel_values=self._torch.from_numpy(np.ascontiguousarray(pixels)))
        return output.image_embeds[0].float().numpy()


def read_upload(data: bytes):
    """An uploaded file's bytes, checked (not empty, at most MAX_UPLOAD_BYTES) and decoded as the pipeline decodes
    (`doggos.base.images.decode`: RGB, EXIF-upright, pixel limit); a SearchError on "image" says what is wrong."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise SearchError("image", f"must be a file's bytes (got {type(data).__name__})")
    if not data:
        raise SearchError("image", "the file is empty (0 bytes)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise SearchError("image", f"the file is {len(data) / 2**20:.1f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        return images.decode(data)
    except images.ImageError as error:
        raise SearchError("image", str(error)) from None


@functools.lru_cache(maxsize=2)
def text_encoder(model: str) -> TextEncoder:
    """One TextEncoder per model per process (a failed load is not cached: it is tried again next time)."""
    return TextEncoder(model)


@functools.lru_cache(maxsize=2)
def image_encoder(model: str) -> ImageEncoder:
    """One ImageEncoder per model per process."""
    return ImageEncoder(model)


# ---- loading ---------------------------------------------------------------------------------------------------

def local_path(model: str) -> Path | None:
    """The model's folder when `model` names one (as a run records a local model: an absolute path), else None."""
    path = Path(model).expanduser()
    return path if model.startswith((".", "/", "~")) or path.is_dir() else None


def _load_tower(model: str, field: str):
    """(torch, the tower in eval mode on CPU in float32, its sub-config) for field "text" or "image"."""
    local = local_path(model)
    if local is not None and not local.is_dir():
        raise EncoderUnavailable(field, f"the run's model folder {model} is not on this machine")
    try:
        models.check_available(model)
    except models.ModelError as error:
        raise EncoderUnavailable.from_model_error(field, error) from None
    import torch
    from transformers import CLIPConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar in a terminal or a log is noise
    source = str(local) if local is not None else model
    tower_class = CLIPTextModelWithProjection if field == "text" else CLIPVisionModelWithProjection
    try:
        config = CLIPConfig.from_pretrained(source)
        sub = config.text_config if field == "text" else config.vision_config
        # A full CLIP's sub-config may hold the default projection size, not the model's: the projection would not fit.
        sub.projection_dim = config.projection_dim
        with _quiet_load_report():  # the other tower's weights are "unexpected" here, and that is the point
            tower, info = tower_class.from_pretrained(source, config=sub, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise EncoderUnavailable(field, f"cannot load {model}: {_first_line(error)}") from None
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise EncoderUnavailable(field, f"{model} lacks {len(missing)} weights of its {field} tower (e.g. {missing[0]})")
    return torch, tower.eval(), sub


def load_tokenizer(model: str, vocab_size: int):
    """The model's tokenizer, checked to know plain English and to fit the text tower; EncoderUnavailable if not."""
    local = local_path(model)
    if local is not None and not any((local / name).exists() for name in TOKENIZER_FILES):
        raise EncoderUnavailable("text", f"{model} has no tokenizer (tokenizer.json, or vocab.json and merges.txt); "
                                         "a demo kit made before text search needs `python -m doggos demo-kit` again")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local is not None else model)
    except (OSError, ValueError, TypeError) as error:
        raise EncoderUnavailable("text", f"cannot load the tokenizer of {model}: {_first_line(error)}") from None
    # transformers makes up an empty tokenizer when none is saved: every word would become the unknown token.
    probe = tokenizer("a photo of a dog")["input_ids"][1:-1]
    if not probe or tokenizer.unk_token_id in probe:
        raise EncoderUnavailable("text", f"the tokenizer of {model} does not know plain English words")
    if len(tokenizer) > vocab_size:
        raise EncoderUnavailable("text", f"the tokenizer of {model} has {len(tokenizer)} tokens; its text tower reads {vocab_size}")
    return tokenizer


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _quiet_load_report():
    """Hide transformers' table of unexpected weights; missing ones are still checked, from the loading info."""
    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _DropLoadReport()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
