"""The offline demo kit: a labeled image tree of real handwritten digits and a CLIP with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from doggos.pipeline.models import RANDOM_WEIGHTS_MARKER

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEMO_MODEL_DIR = "clip-random-weights-tiny"  # the name says it: never mistake it for a trained model
DEMO_IMAGES_DIR = "digits"

# The demo tokenizer: CLIP's byte-level BPE with no merges, so any text tokenizes (one token per byte) offline.
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_SIZE = 2 * 256 + 2  # every byte, every byte ending a word (</w>), then the start and end tokens
CONTEXT_LENGTH = 77  # CLIP's text context, start and end tokens included

# The text tower's ids must match the demo tokenizer's (see byte_level_vocab): CLIP pools at the end token.
_TEXT_IDS = dict(vocab_size=TOKENIZER_SIZE, max_position_embeddings=CONTEXT_LENGTH, bos_token_id=TOKENIZER_SIZE - 2,
                 eos_token_id=TOKENIZER_SIZE - 1, pad_token_id=TOKENIZER_SIZE - 1)

# Model shapes: "tiny" runs in seconds anywhere; "vit-b-32" has the image compute of openai/clip-vit-base-patch32;
# "vit-b-32-full" also has its text compute (a smaller vocabulary is the only difference), for text-query timings.
PRESETS = {
    "tiny": dict(
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, **_TEXT_IDS),
        projection_dim=32,
    ),
    "vit-b-32": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
        # The pipeline never runs the text tower: keep it tiny so the saved model stays ~350 MB instead of ~500 MB.
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, **_TEXT_IDS),
        projection_dim=512,
    ),
    "vit-b-32-full": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=32),
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, **_TEXT_IDS),
        projection_dim=512,
    ),
}


def byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-character table as a vocabulary: the 256 byte characters, the same ending a word, then the
    start and end tokens (ids TOKENIZER_SIZE - 2 and - 1)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]  # GPT-2/CLIP's bytes_to_unicode
    tokens = chars + [c + "</w>" for c in chars] + [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def save_tokenizer(folder: str | Path):
    """Save a CLIPTokenizer over `byte_level_vocab` (no merges) with save_pretrained; returns it."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=byte_level_vocab(), merges=[], model_max_length=CONTEXT_LENGTH)
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_random_clip(folder: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Save a randomly initialized CLIP (model, image processor, tokenizer) with save_pretrained, marked as random."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel
    from transformers.utils import logging as transformers_logging

    shape = PRESETS[preset]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=shape["text"], vision_config=shape["vision"], projection_dim=shape["projection_dim"])
    transformers_logging.disable_progress_bar()  # a "Writing model shards" bar for a 1 MB model is noise
    CLIPModel(config).eval().save_pretrained(folder)
    size = shape["vision"]["image_size"]
    # CLIP's own preprocessing (resize shortest edge, center crop, normalize) at this model's input size, in its PIL
    # flavour: the default one wants torchvision (which does not install beside this torch) and warns that it falls back.
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    save_tokenizer(folder)  # text queries and zero-shot labels work offline too
    (folder / RANDOM_WEIGHTS_MARKER).write_text(
        "This CLIP has RANDOM weights, made by doggos' demo kit. It shows how the pipeline works;\n"
        "its embeddings carry no meaning. Use openai/clip-vit-base-patch32 for real results.\n",
        encoding="utf-8",
    )
    return folder


def write_digit_images(folder: str | Path, per_class: int = 30, size: int = 96) -> Path:
    """Render scikit-learn's handwritten digits (real scans, shipped offline) as <folder>/<digit name>/*.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    counts = dict.fromkeys(range(10), 0)
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        if counts[target] >= per_class:
            continue
        counts[target] += 1
        ink = (255 - pixels / 16.0 * 255).astype(np.uint8)  # dark ink on white paper, as the digits were written
        image = Image.fromarray(ink).resize((size, size), Image.Resampling.BICUBIC)
        out = folder / DIGIT_NAMES[target] / f"digit-{index:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    return folder


def kit_folder(runs_root: str | Path) -> Path:
    """Where the dashboard keeps the demo kit: `demo/` beside the runs root (runs/ → demo/)."""
    return Path(runs_root).expanduser().absolute().parent / "demo"


def make_demo_kit(folder: str | Path, per_class: int = 30) -> dict[str, str]:
    """Write the whole kit under `folder`; returns the source and model paths to run with."""
    folder = Path(folder).expanduser().absolute()
    images = write_digit_images(folder / DEMO_IMAGES_DIR, per_class=per_class)
    model = folder / DEMO_MODEL_DIR
    if not (model / RANDOM_WEIGHTS_MARKER).exists() or not (model / "tokenizer.json").exists():
        save_random_clip(model)  # a kit from before text search has no tokenizer: its model is made again
    return {"source": str(images), "model": str(model)}
