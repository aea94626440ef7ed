"""Connecting to Ray (a local one, or an existing cluster) and asking what it offers: CPUs, usable GPUs, a dashboard."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from doggos.config import ConfigError

GPU_PROBE_TIMEOUT_S = 120  # how long to wait for a free GPU to check that the workers' torch can use it

log = logging.getLogger("doggos")


@contextlib.contextmanager
def ray_connection(address: str | None):
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local Ray; reuse one already connected."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address:
        # Ship our own package: the cluster's workers may not have this checkout.
        options["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parent)]}
        ray.init(address=address, **options)
    else:
        ray.init(include_dashboard=False, **options)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_shape() -> tuple[list[float], float]:
    """CPUs of each live node, and the GPUs of the whole cluster."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return [n["Resources"].get("CPU", 0.0) for n in nodes], ray.cluster_resources().get("GPU", 0.0)


def usable_gpus(gpus: float, device: str) -> float:
    """`gpus` if torch in a GPU worker can use CUDA, else 0 for device=auto (embed on CPU) or a ConfigError for cuda.

    Ray counts the GPUs a node has, not whether the torch installed there was built for them: a CPU-only torch
    beside a GPU would fail in every actor. One zero-CPU task on a GPU asks torch itself.
    """
    import ray

    def probe() -> tuple[bool, str]:
        import torch

        return torch.cuda.is_available(), torch.__version__

    answer = ray.remote(num_gpus=1, num_cpus=0)(probe).remote()
    try:
        usable, torch_version = ray.get(answer, timeout=GPU_PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(answer)
        log.warning("no GPU came free within %d s to check torch's CUDA support; assuming it works", GPU_PROBE_TIMEOUT_S)
        return gpus
    if usable:
        return gpus
    if device == "cuda":
        raise ConfigError("device", f"cuda was chosen, but torch {torch_version} on the cluster's GPU workers cannot "
                                    "use CUDA: install a CUDA build of torch there, or choose cpu or auto")
    log.warning("the cluster has %g GPU(s), but torch %s on its GPU workers cannot use CUDA: embedding on CPU",
                gpus, torch_version)
    return 0.0


def dashboard_url() -> str | None:
    """The cluster's Ray dashboard address, or None (the embedded local Ray runs without one)."""
    try:
        import ray

        url = ray.get_runtime_context().get_dashboard_url() if hasattr(ray.get_runtime_context(), "get_dashboard_url") else None
        url = url or ray._private.worker.get_dashboard_url()
        return (url if url.startswith("http") else f"http://{url}") if url else None
    except Exception:
        return None
