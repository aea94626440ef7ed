"""The two halves of embedding: `prepare_images` (decode + the model's processor) and `Embedder` (the model, in actors)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from doggos.base import images
from doggos.pipeline import models
from doggos.pipeline.progress import hold


def prepare_images(batch: dict[str, np.ndarray], model: str, thumbnail_size: int, tracker=None,
                   pool: ThreadPoolExecutor | None = None) -> dict[str, np.ndarray]:
    """Decode and preprocess a batch of files exactly as the model's own image processor does.

    A file that fails is dropped from the batch and reported with its reason; the others go on. `pool` spreads the
    files over its threads (Pillow and numpy release the GIL): the embedder actors pass theirs, whose cores would
    otherwise idle while one thread decodes.
    """
    processor = models.load_image_processor(model)
    files = list(zip(batch["path"], batch["class"], batch["bytes"]))
    prepare = partial(_prepare_one, processor=processor, thumbnail_size=thumbnail_size)
    prepared = list(pool.map(prepare, files)) if pool is not None and len(files) > 1 else [prepare(f) for f in files]
    kept = [p for p in prepared if not isinstance(p, _Failure)]
    failures = [(p.path, p.reason) for p in prepared if isinstance(p, _Failure)]
    if tracker is not None:
        # Waited for (about a millisecond a block): the driver reads the failures once the last task is done.
        _wait(tracker.add_decoded.remote(len(kept), failures))
    if not kept:
        crop = processor.crop_size
        pixels_array = np.zeros((0, 3, crop["height"], crop["width"]), dtype=np.float32)
    else:
        pixels_array = np.stack([p.pixels for p in kept])
    return {
        "path": np.array([p.path for p in kept], dtype=object),
        "class": np.array([p.label for p in kept], dtype=object),
        "pixel_values": pixels_array,
        "thumbnail": np.array([p.thumbnail for p in kept], dtype=object),
        "width": np.array([p.width for p in kept], dtype=np.int32),
        "height": np.array([p.height for p in kept], dtype=np.int32),
        "content_hash": np.array([p.content_hash for p in kept], dtype=object),
    }


class _Prepared(NamedTuple):
    path: str
    label: str
    pixels: np.ndarray
    thumbnail: bytes
    width: int
    height: int
    content_hash: str


class _Failure(NamedTuple):
    path: str
    reason: str


def _prepare_one(file: tuple, processor, thumbnail_size: int) -> _Prepared | _Failure:
    path, label, data = file
    try:
        image = images.decode(data)
        pixel_values = processor(images=[image], return_tensors="np")["pixel_values"][0]
    except images.ImageError as error:
        return _Failure(str(path), str(error))
    except Exception as error:  # the processor on a pathological image: record it, keep the batch
        return _Failure(str(path), f"preprocessing failed: {type(error).__name__}: {error}")
    return _Prepared(path, label, pixel_values.astype(np.float32, copy=False),
                     images.thumbnail_jpeg(image, thumbnail_size), image.width, image.height,
                     hashlib.sha256(data).hexdigest())  # while the bytes are in hand: exact duplicates, later


def _wait(ref) -> None:
    import ray

    if isinstance(ref, ray.ObjectRef):  # a stand-in tracker (unit tests) returns none
        ray.get(ref)


def _claimed(tracker) -> bool:
    """Whether this actor is the first to claim the prompts (a stand-in tracker in unit tests answers directly)."""
    import ray

    answer = tracker.claim_prompts.remote()
    return ray.get(answer) if isinstance(answer, ray.ObjectRef) else bool(answer)


def _ray_node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class Embedder:
    """CLIP image features for batches of preprocessed pixels: the model loads once per actor, in `__init__`."""

    def __init__(self, model: str, device: str = "cpu", fp16: bool = False, threads: int | None = None, tracker=None,
                 thumbnail_size: int | None = None, prompts: list[str] | None = None):
        import torch

        if threads:
            # Ray caps a worker's math threads at its logical CPU share; use the cores the plan gave this actor.
            torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))
        self.torch = torch
        self.device = device
        self.model = models.load_model(model, device=device, fp16=fp16)
        self.dtype = next(self.model.parameters()).dtype
        self.tracker = tracker
        self.node = _ray_node_id() if tracker is not None else None  # the run's manifest says where work ran
        self.model_id, self.thumbnail_size = model, thumbnail_size
        self.pool: ThreadPoolExecutor | None = None  # decodes files here, when the plan has the actors do it
        self.batches = 0  # embedded by this actor (a test hold counts them)
        if prompts and tracker is not None and _claimed(tracker):
            # The label-quality step's zero-shot prompts, while the whole model is loaded here anyway: that step then
            # needs no text tower of its own (measured: ~1 s and ~340 MiB less after the images are embedded). One
            # actor of the pool does it; should it die first, the step embeds them itself.
            features, why = self.prompt_features(prompts)
            tracker.set_prompt_features.remote(prompts, features, why, float(self.model.logit_scale.detach()))
        hold("loading model")

    def prompt_features(self, prompts: list[str]) -> tuple[np.ndarray | None, str | None]:
        """(text features of `prompts`, float32, not normalised; None) or (None, why they cannot be computed)."""
        from doggos.pipeline.encoders import EncoderUnavailable, load_tokenizer

        text_config = self.model.config.text_config
        try:
            tokenizer = load_tokenizer(self.model_id, text_config.vocab_size)
        except EncoderUnavailable as error:
            return None, error.why
        inputs = tokenizer(list(prompts), padding=True, return_tensors="pt")
        if inputs["input_ids"].shape[1] > text_config.max_position_embeddings:
            return None, f"a prompt is longer than the {text_config.max_position_embeddings} tokens this model reads"
        with self.torch.inference_mode():
            output = self.model.get_text_features(input_ids=inputs["input_ids"].to(self.device),
                                                  attention_mask=inputs["attention_mask"].to(self.device))
        return getattr(output, "pooler_output", output).float().cpu().numpy(), None

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        torch = self.torch
        if "bytes" in batch:  # files not decoded yet: the plan decodes inside the actor (see ResourcePlan)
            if self.pool is None and torch.get_num_threads() > 1:
                # As many threads as torch has: the model waits for the batch anyway, so its cores are free to decode.
                self.pool = ThreadPoolExecutor(torch.get_num_threads(), thread_name_prefix="decode")
            batch = prepare_images(batch, self.model_id, self.thumbnail_size, self.tracker, self.pool)
        pixels = batch["pixel_values"]
        # Ray hands batches over zero-copy and read-only; torch wants memory it may write.
        pixels = torch.from_numpy(pixels if pixels.flags.writeable and pixels.flags.c_contiguous else np.array(pixels))
        with torch.inference_mode():
            if len(pixels):
                output = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
                features = getattr(output, "pooler_output", output)  # transformers v5 returns an output object
                embeddings = features.float().cpu().numpy()
            else:
                embeddings = np.zeros((0, self.model.config.projection_dim), dtype=np.float32)
        if self.tracker is not None:
            self.tracker.add_embedded.remote(len(embeddings), self.node)
            self.batches += 1
            hold("embedding", self.batches)
        return pa.table(
            {
                "path": pa.array(list(batch["path"]), pa.string()),
                "class": pa.array(list(batch["class"]), pa.string()),
                "embedding": embedding_array(embeddings),
                "thumbnail": pa.array(list(batch["thumbnail"]), pa.binary()),
                "width": pa.array(batch["width"], pa.int32()),
                "height": pa.array(batch["height"], pa.int32()),
                "content_hash": pa.array(list(batch["content_hash"]), pa.string()),
            }
        )


def embedding_array(embeddings: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 as Arrow fixed_size_list<float32>[dim]: plain Parquet any reader understands."""
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
