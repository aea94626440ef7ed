"""The one validated configuration object for a pipeline run."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEVICES = ("auto", "cpu", "cuda")
MAX_BATCH_SIZE = 4096  # more images than this per forward pass is a typo, not a plan
MAX_CONCURRENCY = 1024  # embedder actors; each one holds a full copy of the model
MAX_THUMBNAIL_SIZE = 1024


class ConfigError(ValueError):
    """A setting a user can fix; `field` names it as the CLI and the form do."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RunConfig:
    """What one embedding run is asked to do. Build it with `RunConfig(...)`; it validates itself."""

    source: str  # local folder or URI (s3://bucket/prefix, ...) holding <label>/<image> files
    output: str | None = None  # local folder for the run's files; None: the run manager assigns runs/<run id>
    model: str = DEFAULT_MODEL  # Hugging Face CLIP id, or a local folder saved with save_pretrained
    device: str = "auto"  # auto: cuda when the cluster has GPUs, else cpu
    batch_size: int | None = None  # images per forward pass; None: 16 on CPU, 64 on GPU
    concurrency: int | None = None  # embedder actors; None: derived from the cluster's CPUs/GPUs
    limit: int | None = None  # embed only the first N images (sorted by path); None: all
    ray_address: str | None = None  # existing cluster ("auto", "ray://host:10001", ...); None: RAY_ADDRESS or a local Ray
    s3_endpoint: str | None = None  # S3-compatible endpoint URL; None: AWS_ENDPOINT_URL or AWS itself
    fp16: bool = False  # half precision on cuda (ignored on CPU, where fp16 is slower)
    thumbnail_size: int = 224  # longest side of the JPEG thumbnail stored with each row, in pixels
    projection: bool = True  # compute the default UMAP map as the run's last step, so the Map page opens at once

    def __post_init__(self) -> None:
        for name in ("source", "output", "model"):
            value = getattr(self, name)
            if name == "output" and value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(name, "is required (got an empty value)")
            object.__setattr__(self, name, value.strip())
        if self.device not in DEVICES:
            raise ConfigError("device", f"must be one of {', '.join(DEVICES)} (got {self.device!r})")
        object.__setattr__(self, "batch_size", _optional_count("batch_size", self.batch_size, MAX_BATCH_SIZE))
        object.__setattr__(self, "concurrency", _optional_count("concurrency", self.concurrency, MAX_CONCURRENCY))
        object.__setattr__(self, "limit", _optional_count("limit", self.limit, None))
        object.__setattr__(self, "thumbnail_size", _count("thumbnail_size", self.thumbnail_size, MAX_THUMBNAIL_SIZE))
        if self.thumbnail_size < 16:
            raise ConfigError("thumbnail_size", f"must be at least 16 pixels (got {self.thumbnail_size})")
        for name in ("ray_address", "s3_endpoint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(name, f"must be text (got {value!r})")
            object.__setattr__(self, name, (value or "").strip() or None)
        if self.s3_endpoint and not self.s3_endpoint.startswith(("http://", "https://")):
            raise ConfigError("s3_endpoint", f"must be a URL starting with http:// or https:// (got {self.s3_endpoint!r})")
        for name in ("fp16", "projection"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false (got {getattr(self, name)!r})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"is not a setting (known: {', '.join(sorted(known))})")
        return cls(**data)

    def with_absolute_paths(self) -> "RunConfig":
        """Local source and model folders made absolute, so a driver or worker in another directory finds them."""
        source = self.source if "://" in self.source else os.path.abspath(os.path.expanduser(self.source))
        model = os.path.abspath(os.path.expanduser(self.model)) if os.path.isdir(os.path.expanduser(self.model)) else self.model
        output = os.path.abspath(os.path.expanduser(self.output)) if self.output else None
        return self.replace(source=source, model=model, output=output)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def _count(field: str, value: Any, maximum: int | None) -> int:
    """A positive whole number, also from text such as a form or CLI gives; bools and fractions are refused."""
    if isinstance(value, bool):
        raise ConfigError(field, f"must be a whole number (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(field, f"must be a whole number (got {text!r})") from None
    elif isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(field, f"must be a whole number (got {value!r})")
        value = int(value)
    elif not isinstance(value, int):
        raise ConfigError(field, f"must be a whole number (got {value!r})")
    if value < 1:
        raise ConfigError(field, f"must be at least 1 (got {value})")
    if maximum is not None and value > maximum:
        raise ConfigError(field, f"must be at most {maximum} (got {value})")
    return value


def _optional_count(field: str, value: Any, maximum: int | None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _count(field, value, maximum)


def user_message(error: Exception) -> str:
    """An error as the UI and CLI show it: prefixed with the field to fix, when the error names one."""
    field = getattr(error, "field", None)
    text = str(error)
    return f"{field}: {text}" if field and not text.startswith(f"{field}: ") else text
