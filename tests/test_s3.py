"""s3:// sources against a real S3-compatible server (moto) on 127.0.0.1: listing, the pipeline, and bad buckets."""

import os
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import wait_for
from imagegen import make_photo

from doggos.base.config import RunConfig
from doggos.base.rundir import RunDir
from doggos.pipeline.sources import SourceError, list_images, open_source
from doggos.runs import driver

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 30) -> None:
    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(listening, timeout_s=timeout_s, poll_s=0.05)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(monkeypatch_module, tmp_path_factory):
    """A moto S3 server holding s3://doggos/train/<label>/<image> plus a stray text file."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in CREDENTIALS.items():
        monkeypatch_module.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="doggos")
    client.create_bucket(Bucket="empty")
    expected = {}
    for li, label in enumerate(("husky", "pug dog")):
        for i in range(3):
            key = f"train/{label}/{i}.jpg"
            path = tmp_path_factory.mktemp("upload") / f"{i}.jpg"
            make_photo(10 * li + i).save(path)
            client.upload_file(path, "doggos", key)
            expected[f"s3://doggos/{key}"] = label
    client.put_object(Bucket="doggos", Key="train/README.txt", Body=b"not an image")
    yield endpoint, expected
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_lists_an_s3_prefix_with_labels(s3):
    endpoint, expected = s3
    source = open_source("s3://doggos/train", s3_endpoint=endpoint)
    listing = list_images(source)
    assert [source.to_uri(p) for p in listing.paths] == sorted(expected)
    assert listing.skipped_files == 1


def test_endpoint_from_the_environment(s3, monkeypatch):
    endpoint, expected = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert len(list_images(open_source("s3://doggos/train/")).paths) == len(expected)


@pytest.mark.ray
def test_pipeline_reads_s3_and_keeps_full_uris(s3, ray_session, tiny_clip, tmp_path):
    endpoint, expected = s3
    config = RunConfig(projection=False, quality=False, source="s3://doggos/train", output=str(tmp_path / "run"), model=tiny_clip, s3_endpoint=endpoint)
    manifest = driver.run(config)
    table = pq.read_table(RunDir(config.output).embeddings)
    assert dict(zip(table.column("path").to_pylist(), table.column("class").to_pylist())) == expected
    assert manifest.source == "s3://doggos/train" and manifest.rows == len(expected)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://no-such-bucket/train", "bucket .no-such-bucket. does not exist"),
        ("s3://empty/train", "nothing found under s3://empty/train"),
        ("s3://doggos/nothing-here", "nothing found"),
    ],
)
def test_bad_buckets_and_prefixes_say_what_is_wrong(s3, uri, message):
    endpoint, _ = s3
    with pytest.raises(SourceError, match=message):
        list_images(open_source(uri, s3_endpoint=endpoint))


def test_unreachable_endpoint_fails_with_a_clear_message(monkeypatch_module):
    # How fast is set by sources.S3_CONNECT_TIMEOUT_S and S3_ATTEMPTS, not timed here.
    with pytest.raises(SourceError, match="unreachable"):
        list_images(open_source("s3://doggos/train", s3_endpoint=f"http://127.0.0.1:{free_port()}"))


def test_access_denied_says_to_set_credentials(tmp_path):
    """A second server that enforces authentication: our made-up keys are refused."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0", **CREDENTIALS)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in CREDENTIALS.items():
                patch.setenv(key, value)
            with pytest.raises(SourceError, match="access denied"):
                list_images(open_source("s3://doggos/train", s3_endpoint=f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(timeout=10)
