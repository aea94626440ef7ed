"""Checks that run before a launch, so a bad source, model, device, output or Ray address is refused with a fix, not a
crash later; every problem found is reported at once."""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from doggos.base.config import ConfigError, RunConfig, problems_of, raise_all, split_ray_address
from doggos.pipeline import models, reuse
from doggos.pipeline.sources import Listing, list_images, open_source

RAY_PROBE_TIMEOUT_S = 3.0  # a live Ray head accepts a TCP connection at once; this covers a slow network, not a dead host


def check(config: RunConfig) -> Listing:
    """The source's images, or every problem found: one ConfigError (SourceError, ModelError...) or ConfigErrors."""
    found, listing = _run_checks(config.to_dict())
    raise_all(found)
    return listing


def problems(settings: dict[str, Any]) -> list[ConfigError]:
    """The problems found by the checks whose settings are all valid.

    `settings` holds validated settings (`config.validate`'s first result): a setting that is missing was invalid,
    and the checks that read it are skipped, so a bad batch size does not hide a missing source.
    """
    return _run_checks(settings)[0]


def _run_checks(settings: dict[str, Any]) -> tuple[list[ConfigError], Listing | None]:
    runnable = [check for needs, check in CHECKS if all(name in settings for name in needs)]
    # The checks are independent and mostly wait (a listing, the Hub, a TCP probe): run them side by side.
    with ThreadPoolExecutor(max_workers=max(1, len(runnable)), thread_name_prefix="doggos-preflight") as pool:
        futures = [pool.submit(check, settings) for check in runnable]
    found: list[ConfigError] = []
    listing = None
    for future in futures:
        try:
            result = future.result()
        except ConfigError as error:  # SourceError and ModelError too; anything else is a bug and propagates
            found.extend(problems_of(error))
        else:
            listing = result if isinstance(result, Listing) else listing
    return found, listing


def _output(s: dict[str, Any]) -> None:
    if s["output"]:
        check_writable(s["output"])


def _source(s: dict[str, Any]) -> Listing:
    return list_images(open_source(s["source"], s["s3_endpoint"]), s.get("limit"))  # a bad limit hides no source problem


def _model(s: dict[str, Any]) -> None:
    models.check_available(s["model"])


def _reuse(s: dict[str, Any]) -> None:
    if not s["reuse"]:
        return
    if s.get("output") and Path(s["output"]).expanduser().absolute() == Path(s["reuse"]).expanduser().absolute():
        raise ConfigError("reuse", "is the output folder itself: a run is updated into a new folder (--out), and the "
                                   "old one stays as it was")
    reuse.check_reusable(s["reuse"], reuse.embedding_key(s["model"], s["fp16"], s["thumbnail_size"]))


CHECKS: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any]], Any]], ...] = (  # (settings read, check)
    (("output",), _output),
    (("device", "ray_address"), lambda s: check_device(s["device"], s["ray_address"])),
    (("concurrency", "ray_address"), lambda s: check_concurrency(s["concurrency"], s["ray_address"])),
    (("source", "s3_endpoint"), _source),
    (("model",), _model),
    (("ray_address",), lambda s: check_ray_address(s["ray_address"])),
    (("reuse", "model", "fp16", "thumbnail_size", "output"), _reuse),
)


def check_device(device: str, ray_address: str | None) -> None:
    if device != "cuda" or ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's GPUs are checked when the run connects to it
    if not cuda_available():
        raise ConfigError("device", "cuda was chosen, but this machine has no CUDA GPU that torch can use; choose cpu or auto")


def check_concurrency(concurrency: int | None, ray_address: str | None) -> None:
    """On this machine's own Ray, more actors than cores only multiplies model copies in memory."""
    if concurrency is None or ray_address or os.environ.get("RAY_ADDRESS"):
        return  # a cluster's size is known once the run connects to it
    cores = os.cpu_count() or 1
    if concurrency > cores:
        raise ConfigError("concurrency", f"{concurrency} embedder actors on a machine with {cores} CPU cores: "
                                         f"each holds a copy of the model; use at most {cores}, or auto")


def check_ray_address(address: str | None) -> None:
    """The cluster a run would join must answer now: a quick TCP probe, not Ray's minutes of retries after launch.

    `auto` needs a cluster running on this machine; ray:// needs the Ray Client installed.
    """
    from doggos.pipeline.cluster import auto_address, resolve_address

    given = resolve_address(address)
    if not given:
        return  # a private local Ray: nothing to reach
    shown = given if given == address else f"{given} (from RAY_ADDRESS)"
    try:
        kind, host, port = split_ray_address(given)
    except ValueError as error:  # only RAY_ADDRESS can get here: RunConfig checked the field's own form
        raise ConfigError("ray_address", f"{error} (got {shown!r})") from None
    if kind == "auto":
        found = auto_address()
        if found is None:
            raise ConfigError("ray_address", "auto joins a Ray cluster running on this machine, and none is running: "
                                             "start one (ray start --head), or leave the address empty for a private local Ray")
        kind, host, port = split_ray_address(found)
        shown = f"{found} (the cluster auto found on this machine)"
    if kind == "client" and importlib.util.find_spec("grpc") is None:
        raise ConfigError("ray_address", f"{shown} is a Ray Client address, and the Ray Client is not installed here "
                                         "(pip install \"ray[client]\"); or give the head's host:port")
    _probe(host, port, shown)


def _probe(host: str, port: int, shown: str) -> None:
    try:
        socket.create_connection((host, port), timeout=RAY_PROBE_TIMEOUT_S).close()
    except socket.gaierror:
        raise ConfigError("ray_address", f"{shown}: unknown host {host!r}") from None
    except ConnectionRefusedError:
        raise ConfigError("ray_address", f"nothing listens at {shown} (connection refused): check the head's address and "
                                         "port (ray start --head prints it) and that the cluster is up") from None
    except TimeoutError:
        raise ConfigError("ray_address", f"{shown} did not answer within {RAY_PROBE_TIMEOUT_S:g} s: check the host, "
                                         "and that no firewall blocks the port") from None
    except OSError as error:
        raise ConfigError("ray_address", f"cannot reach {shown}: {error.strerror or error}") from None


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
