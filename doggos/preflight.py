"""Checks that run before a launch, so a bad source, model, device or output is refused with a fix, not a crash later."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from doggos import models
from doggos.config import ConfigError, RunConfig
from doggos.sources import Listing, list_images, open_source


def check(config: RunConfig) -> Listing:
    """Raise ConfigError, SourceError or ModelError (all ValueErrors with a `field`) for the first problem found."""
    if config.output:
        check_writable(config.output)
    check_device(config)
    check_concurrency(config)
    listing = list_images(open_source(config.source, config.s3_endpoint), config.limit)
    models.check_available(config.model)
    return listing


def check_device(config: RunConfig) -> None:
    if config.device != "cuda" or config.ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's GPUs are checked when the run connects to it
    if not cuda_available():
        raise ConfigError("device", "cuda was chosen, but this machine has no CUDA GPU that torch can use; choose cpu or auto")


def check_concurrency(config: RunConfig) -> None:
    """On this machine's own Ray, more actors than cores only multiplies model copies in memory."""
    if config.concurrency is None or config.ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's size is known once the run connects to it
    cores = os.cpu_count() or 1
    if config.concurrency > cores:
        raise ConfigError("concurrency", f"{config.concurrency} embedder actors on a machine with {cores} CPU cores: "
                                         f"each holds a copy of the model; use at most {cores}, or auto")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_writable(folder: str) -> None:
    """The output folder (or its nearest existing parent) must accept a new file."""
    path = Path(folder).expanduser().absolute()
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError("output", f"{probe_dir} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".doggos-write-test-"):
            pass
    except OSError as error:
        raise ConfigError("output", f"cannot write to {probe_dir}: {error.strerror or error}") from None
