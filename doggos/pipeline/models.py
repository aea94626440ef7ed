"""Loading CLIP and its image processor from a Hugging Face id or a local folder, with errors a user can act on."""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from doggos.base.config import ConfigError

RANDOM_WEIGHTS_MARKER = "DOGGOS_RANDOM_WEIGHTS"  # file the demo kit puts beside a model with random weights
OFFLINE_HINT = "demo_kit"  # the advice for a model that cannot be had offline: the demo kit's (config.ADVICE)


class ModelError(ConfigError):
    """The model cannot be used; the message says why, and `hint` what to try (each surface words it its own way)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__("model", message, hint)


def is_local(model: str) -> bool:
    return os.path.isdir(os.path.expanduser(model))


def has_random_weights(model: str) -> bool:
    """True for the demo kit's model: it shows the mechanics, not semantic quality."""
    return is_local(model) and (Path(model).expanduser() / RANDOM_WEIGHTS_MARKER).exists()


def describe(model: str) -> str:
    """The model's name as every output shows it, flagged when its weights are random."""
    return f"{model} (RANDOM WEIGHTS: demo only, embeddings carry no meaning)" if has_random_weights(model) else model


FINGERPRINTED = ("config.json", "preprocessor_config.json")  # with the weight files: what fixes the image embeddings
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def fingerprint(model: str) -> str | None:
    """sha256 over what fixes the model's image embeddings: its config, its image processor's config and its weights,
    byte for byte; two runs whose fingerprints match embed the same file alike. A Hub id: its snapshot's commit in this
    machine's Hugging Face cache; None when it is not there (its revision cannot be known offline)."""
    if not is_local(model):
        # A Hub snapshot's folder is named by its commit, which fixes every file in it: no need to hash the weights,
        # nor to have them here (a cluster's driver may hold only the config).
        snapshot = _cached_snapshot(model)
        return None if snapshot is None else f"hub:{model}@{snapshot.name}"
    folder = Path(model).expanduser()
    files = sorted(f for f in folder.iterdir() if f.name in FINGERPRINTED or f.name.endswith(WEIGHT_SUFFIXES))
    # Keyed by size and mtime too: the weights are hashed once per process, and again if they change on disk.
    return _fingerprint(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _fingerprint(files: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _cached_snapshot(model: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def check_available(model: str) -> None:
    """Fail fast, before any launch, when the model cannot be loaded: a bad folder, or offline and not cached."""
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or path.exists()  # hub ids are "org/name"
    if looks_local:
        if not path.is_dir():
            raise ModelError(f"{model!r} is not a folder, and a Hugging Face id has the form 'org/name'", OFFLINE_HINT)
        if not (path / "config.json").exists():
            raise ModelError(f"{model} has no config.json: save the model there with save_pretrained")
        _check_is_clip(str(path), path / "config.json")
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        _check_is_clip(model, Path(cached))
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _hub_reachable():
        raise ModelError(f"{model!r} is not in the Hugging Face cache and the Hub cannot be reached (no network)", OFFLINE_HINT)
    _check_is_clip(model)


def load_model(model: str, device: str = "cpu", fp16: bool = False):
    """CLIPModel in eval mode on `device`; fp16 only where it pays (cuda)."""
    import torch
    from transformers import CLIPModel

    dtype = torch.float16 if fp16 and device.startswith("cuda") else torch.float32
    try:
        clip = CLIPModel.from_pretrained(_resolved(model), dtype=dtype)
    except OSError as error:
        raise ModelError(*_load_message(model, error)) from None
    return clip.to(device).eval()


@functools.lru_cache(maxsize=4)
def load_image_processor(model: str):
    """The model's own image processor, loaded once per process (Ray reuses worker processes across tasks)."""
    from transformers import AutoImageProcessor

    try:
        # The PIL flavour: the default wants torchvision (which does not install beside this torch) and warns.
        return AutoImageProcessor.from_pretrained(_resolved(model), backend="pil")
    except OSError as error:
        raise ModelError(*_load_message(model, error)) from None


def _resolved(model: str) -> str:
    return str(Path(model).expanduser()) if is_local(model) else model


def _check_is_clip(model: str, config_file: Path | None = None) -> None:
    """A CLIP model's config, or a ModelError. A config.json at hand (a folder's, or the Hub cache's) is read as plain
    JSON: importing transformers to read it costs ~2 s at every launch. A hub id not cached yet goes to transformers."""
    if config_file is not None:
        try:
            config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelError(f"{model}: not a model config transformers can read ({error})") from None
        model_type = config.get("model_type", "unknown") if isinstance(config, dict) else "unknown"
    else:
        from transformers import AutoConfig

        try:
            model_type = getattr(AutoConfig.from_pretrained(model), "model_type", "unknown")
        except OSError as error:
            raise ModelError(*_load_message(model, error)) from None
        except ValueError as error:
            raise ModelError(f"{model}: not a model config transformers can read ({error})") from None
    if model_type != "clip":
        raise ModelError(f"{model} is a {model_type!r} model; doggos needs a CLIP model (model_type 'clip')")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _load_message(model: str, error: Exception) -> tuple[str, str | None]:
    """What to say about a model that failed to load, and the hint, if any."""
    text = str(error)
    if "couldn't connect" in text.lower() or "offline" in text.lower() or "cached files" in text.lower():
        return f"{model!r} is not in the Hugging Face cache and cannot be downloaded (no network)", OFFLINE_HINT
    if "is not a local folder and is not a valid model identifier" in text or "Repository Not Found" in text:
        return f"{model!r} is neither a local folder nor a model on the Hugging Face Hub", OFFLINE_HINT
    return f"cannot load {model!r}: {text.splitlines()[0] if text else type(error).__name__}", None
