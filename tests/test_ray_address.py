"""A Ray address is checked before launch and bounded after it; no address means a private local Ray, not a neighbour's.

The test servers listen on loopback only. A test that connects a driver to Ray runs it in a subprocess: the session
shares one Ray, and a connection that times out leaves its thread behind.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from doggos.base.config import ConfigError, RunConfig
from doggos.pipeline import cluster, preflight

ROOT = Path(__file__).resolve().parent.parent
NOT_RAY_HOST = "127.0.0.2"  # loopback too, and Ray dials it as given (127.0.0.1 it swaps for this machine's own IP)


def closed_port() -> int:
    """A port nothing listens on: bound once by the kernel's choice, then let go."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.fixture
def no_ray_address_env(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture
def not_ray():
    """host:port of a server that accepts TCP connections (the kernel completes them) and never answers: no Ray there."""
    with socket.create_server((NOT_RAY_HOST, 0)) as server:
        yield f"{NOT_RAY_HOST}:{server.getsockname()[1]}"


def run_driver(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh Python (its own Ray state), from the project root."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_closed_port_is_refused_before_launch_naming_ray_address(image_tree, tiny_clip, no_ray_address_env):
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError, match=f"^ray_address: nothing listens at {address} \\(connection refused\\)") as raised:
        preflight.check(RunConfig(source=str(image_tree[0]), model=tiny_clip, ray_address=address))
    assert raised.value.field == "ray_address"


def test_an_address_that_answers_passes_preflight(not_ray, no_ray_address_env):
    preflight.check_ray_address(not_ray)  # a TCP probe only: whether Ray answers there is the connection's to find


def test_ray_address_from_the_environment_is_checked_and_named(monkeypatch):
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ConfigError, match=f"nothing listens at {address} \\(from RAY_ADDRESS\\)"):
        preflight.check_ray_address(None)
    with pytest.raises(ConfigError, match="from RAY_ADDRESS"):  # Ray reads RAY_ADDRESS in place of "auto" too
        preflight.check_ray_address("auto")
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    with pytest.raises(ConfigError, match="^ray_address: .*dashboard"):
        preflight.check_ray_address(None)


def test_auto_without_a_cluster_on_this_machine_says_so(monkeypatch, no_ray_address_env):
    # Ray's own discovery sees every Ray on this (shared) machine; stand in for a machine that runs none.
    monkeypatch.setattr(cluster, "auto_address", lambda: None)
    with pytest.raises(ConfigError, match="^ray_address: auto joins a Ray cluster running on this machine, and none is running"):
        preflight.check_ray_address("auto")


def test_a_ray_client_address_is_checked_too(no_ray_address_env):
    address = f"ray://127.0.0.1:{closed_port()}"
    # Refused either way: by the probe where the Ray Client is installed, else because it is not.
    with pytest.raises(ConfigError, match="^ray_address: .*(connection refused|Ray Client is not installed)"):
        preflight.check_ray_address(address)


def test_no_address_checks_nothing(no_ray_address_env):
    preflight.check_ray_address(None)


CONNECT = """
import sys
from doggos.pipeline import cluster
from doggos.base.config import ConfigError
cluster.RAY_CONNECT_TIMEOUT_S = int(sys.argv[2])
try:
    with cluster.ray_connection(sys.argv[1]):
        print("connected")
except ConfigError as error:
    print(f"refused {error}")
"""


@pytest.mark.slow
def test_an_address_that_is_not_ray_fails_the_connection_within_the_timeout(not_ray, no_ray_address_env):
    result = run_driver(CONNECT, not_ray, "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == (f"refused ray_address: no Ray cluster let this driver in at {not_ray} within 3 s: "
                                     "check the address and port (a head's GCS port, 6379 unless changed; "
                                     "ray://head:10001 for Ray Client) and that the cluster is up")


CANCEL = """
import logging, sys
from doggos.pipeline import cluster
from doggos.runs.driver import Cancelled, cancel_on_sigterm
logging.basicConfig(level=logging.INFO, format="%(message)s")
cluster.RAY_CONNECT_TIMEOUT_S = 600
cancel_on_sigterm()
try:
    with cluster.ray_connection(sys.argv[1]):
        print("connected")
except Cancelled:
    print("cancelled")
"""


@pytest.mark.slow
def test_a_cancel_is_handled_while_the_connection_waits(not_ray, no_ray_address_env):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    driver = subprocess.Popen([sys.executable, "-c", CANCEL, not_ray], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in driver.stderr:  # wait until the connection is under way
            if "connecting to the Ray cluster at" in line:
                break
        else:
            pytest.fail(f"the driver ended before connecting (exit {driver.wait()})")
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=60)  # the connection itself would wait 600 s
    finally:
        driver.kill()
    assert (driver.returncode, out.strip()) == (0, "cancelled"), err[-3000:]


PRIVATE_THEN_AUTO = """
import json, signal
import ray
from doggos.pipeline import cluster
def handler(signum, frame):
    pass
signal.signal(signal.SIGTERM, handler)
seen = {}
for address in (None, "auto"):
    with cluster.ray_connection(address):
        seen[str(address)] = ray.get_runtime_context().gcs_address
        seen[f"{address} kept the handler"] = signal.getsignal(signal.SIGTERM) is handler
print(json.dumps(seen))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_no_address_starts_a_private_ray_even_beside_a_recorded_one_and_auto_joins_it(ray_session):
    """The session's Ray is recorded as this machine's cluster (as `ray start` or cluster_utils record theirs), in a
    Ray temp folder of this test's own, so no other process on the machine sees the record."""
    theirs = ray_session.get_runtime_context().gcs_address
    temp = tempfile.mkdtemp(prefix="dg", dir="/tmp")  # short: Ray's socket paths under it must stay under 108 bytes
    try:
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text(theirs)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": temp}
        result = run_driver(PRIVATE_THEN_AUTO, env=env, timeout=180)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["None"] != theirs and seen["auto"] == theirs
    assert seen["None kept the handler"] and seen["auto kept the handler"]  # ray.init's own SIGTERM handler is undone


def test_a_warm_ray_that_is_gone_is_passed_over_and_one_that_hangs_fails_the_run(not_ray, monkeypatch):
    # Gone (its port closed): a private local Ray instead, without trying ray.init at all.
    monkeypatch.setattr(cluster, "_connect", lambda *a, **k: pytest.fail("no ray.init for a closed port"))
    assert cluster._join_warm(f"127.0.0.1:{closed_port()}", {}) is False

    # Hanging (its ray.init still running in a thread): no second ray.init beside it; the run fails with the reason.
    def hangs(address, options, what):
        raise cluster._ConnectTimeout("ray_address", f"{what} did not let this driver in")

    monkeypatch.setattr(cluster, "_connect", hangs)
    with pytest.raises(cluster._ConnectTimeout, match="did not let this driver in"):
        cluster._join_warm(not_ray, {})

    # Refused at once (an error from ray.init): passed over.
    def refuses(address, options, what):
        raise ConfigError("ray_address", "cannot connect")

    monkeypatch.setattr(cluster, "_connect", refuses)
    assert cluster._join_warm(not_ray, {}) is False
