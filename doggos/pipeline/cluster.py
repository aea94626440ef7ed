"""Connecting to Ray (a private local one, or an existing cluster) and asking what it offers: CPUs, usable GPUs, a dashboard."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from doggos.base.config import ConfigError, split_ray_address

GPU_PROBE_TIMEOUT_S = 120  # how long to wait for a free GPU to check that the workers' torch can use it
RAY_CONNECT_TIMEOUT_S = 30  # a cluster that has not let the driver in by then is reported, not retried for minutes

log = logging.getLogger("doggos")


def resolve_address(address: str | None) -> str | None:
    """The cluster address a run uses: `address`, RAY_ADDRESS in place of none or of "auto" (as Ray itself reads it),
    or None for a private local Ray."""
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    if from_env and address in (None, "", "auto"):
        return from_env
    return address or None


def auto_address() -> str | None:
    """The cluster `auto` joins on this machine, found as ray.init finds it (the last `ray start`, else a running
    GCS); None when there is none. Only a preflight check: a stale record is caught by probing the address."""
    from ray._private import services

    services.find_gcs_addresses.cache_clear()  # a cached answer may name a cluster that has gone since
    try:
        return services.canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None


@contextlib.contextmanager
def ray_connection(address: str | None, warm: str | None = None):
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a private local Ray; reuse one already connected.

    Without an address the run gets its own Ray even when another runs on this machine (joining one takes "auto"),
    or, given `warm`, joins that local Ray (a runs root's warm one, `doggos.runs.warm`) as a job of its own; a warm
    Ray that does not answer is passed over for a private one.
    A cluster that has not let us in within RAY_CONNECT_TIMEOUT_S is a ConfigError naming ray_address; meanwhile the
    main thread stays free, so a SIGTERM (a cancel) is handled at once. The caller's SIGTERM handler is kept.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    forbid_implicit_ray()
    address = resolve_address(address)
    options: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    with _sigterm_handler_kept():
        if address:
            # Ship our own package: the cluster's workers may not have this checkout.
            options["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parents[1])]}  # the doggos package
            from doggos.pipeline.progress import HOLD_ENV

            if os.environ.get(HOLD_ENV):  # tests: a cluster's workers do not inherit the driver's environment
                options["runtime_env"]["env_vars"] = {HOLD_ENV: os.environ[HOLD_ENV]}
            _connect(address, options)
        elif not (warm and _join_warm(warm, options)):
            # "local", not None: None would join a cluster recorded on this machine (e.g. a test suite's).
            ray.init(address="local", include_dashboard=False, **options)
    try:
        yield
    finally:
        ray.shutdown()


def forbid_implicit_ray() -> None:
    """Turn off Ray's auto-init in this process: `ray.get` and friends without a connection then raise, instead of
    quietly starting a second local Ray (as a progress call that outlived the run's Ray once did, from a thread, leaving
    a GCS the exiting process could not reach). Only `ray_connection` starts or joins Ray in doggos."""
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # read by Ray when it is imported: processes started from here
    hook = sys.modules.get("ray._private.auto_init_hook")
    if hook is not None:  # Ray read the variable at its import already (Ray 2.60's module-level flag)
        hook.enable_auto_connect = False


class _ConnectTimeout(ConfigError):
    """ray.init did not return in time; its thread is still inside it, so no other ray.init may follow here."""


def _join_warm(address: str, options: dict) -> bool:
    """Join the warm local Ray at `address`; False (logged) when it refuses us at once: it may have just stopped.

    A join that hangs is not passed over: `ray.init` is still running in its thread, and a second one beside it (the
    private Ray) would share its half-made state. The run fails instead, with the reason, and can be resumed."""
    if not _answers(address):
        log.warning("the warm local Ray at %s does not answer: starting a private local Ray instead", address)
        return False
    try:
        _connect(address, options, what="the warm local Ray")
    except _ConnectTimeout:
        raise
    except ConfigError as error:
        log.warning("%s: starting a private local Ray instead", error.message)
        return False
    return True


def _answers(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something listens at a host:port address (a warm Ray that stopped leaves its port closed)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _connect(address: str, options: dict, what: str = "the Ray cluster") -> None:
    """ray.init(address) in a helper thread, waited on for at most RAY_CONNECT_TIMEOUT_S.

    Ray retries an address that does not answer for many minutes, inside calls that hold the main thread and keep
    signal handlers from running; waiting on a thread instead keeps a cancel prompt. On a timeout the helper thread
    is left behind (a daemon: it cannot be stopped): the process is expected to fail and exit, as a driver does.
    """
    import ray

    shown = _shown(address)
    log.info("connecting to %s at %s (giving up after %d s)", what, shown, RAY_CONNECT_TIMEOUT_S)
    outcome: dict = {}
    finished = threading.Event()

    def connect() -> None:
        try:
            ray.init(address=address, **options)
        except BaseException as error:  # handed to the waiting thread, which raises it as a ConfigError
            outcome["error"] = error
        finally:
            finished.set()

    quiet = _DropRecords("SIGTERM handler is not set")  # Ray's note that a thread leaves signals alone: as intended
    logging.getLogger("ray._private.worker").addFilter(quiet)
    try:
        threading.Thread(target=connect, name="doggos-ray-connect", daemon=True).start()
        if not finished.wait(RAY_CONNECT_TIMEOUT_S):
            raise _ConnectTimeout("ray_address", f"no Ray cluster let this driver in at {shown} within {RAY_CONNECT_TIMEOUT_S} s: "
                                             "check the address and port (a head's GCS port, 6379 unless changed; "
                                             "ray://head:10001 for Ray Client) and that the cluster is up")
    finally:
        logging.getLogger("ray._private.worker").removeFilter(quiet)
    error = outcome.get("error")
    if error is None:
        return
    if address.strip().lower() == "auto" and auto_address() is None:
        raise ConfigError("ray_address", "auto joins a Ray cluster running on this machine, and none is running: "
                                         "start one (ray start --head), or leave the address empty for a private local Ray")
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise ConfigError("ray_address", f"cannot connect to the Ray cluster at {shown}: {first_line}") from error


def _shown(address: str) -> str:
    """The address as given, and as Ray dials it when that differs (Ray swaps 127.0.0.1 for this machine's IP)."""
    try:
        kind, _, _ = split_ray_address(address)
        if kind != "gcs":
            return address
        from ray._private import services

        dialed = services.canonicalize_bootstrap_address(address)
    except Exception:  # only a nicer message is at stake
        return address
    return address if dialed in (None, address) else f"{address} (which Ray dials as {dialed})"


@contextlib.contextmanager
def _sigterm_handler_kept():
    """Keep the SIGTERM handler in place across ray.init, which swaps in its own (a sys.exit) in the main thread.

    A SIGTERM that reaches Ray's handler meanwhile is handed to the one it replaced (the driver's raises Cancelled).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread: there is nothing to keep
        return
    previous = signal.getsignal(signal.SIGTERM)
    handed_over = False
    try:
        yield
    except SystemExit as exit_:
        if exit_.code in (signal.SIGTERM, -signal.SIGTERM) and callable(previous):
            handed_over = True
            signal.signal(signal.SIGTERM, previous)
            previous(signal.SIGTERM, None)
        raise  # ray.init was cut short either way; a handler that returns cannot resume it
    finally:
        current = signal.getsignal(signal.SIGTERM)
        # Ray's handler goes; one the caller's handler put there when it ran (the driver's disarms itself) stays.
        # (previous is None for a handler installed outside Python, which cannot be set back.)
        if previous is not None and not handed_over and callable(current) and current is not previous:
            signal.signal(signal.SIGTERM, previous)


class _DropRecords(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


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
