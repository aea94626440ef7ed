"""The corrected tree and the export (doggos.explore.label_tree): names, failures that leave nothing, s3:// both ways."""

import socket
from pathlib import Path

import pytest
from _labels_fixtures import read_only, write_labelled_run
from conftest import wait_for

from doggos.base import decisions
from doggos.explore import label_tree

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture
def labelled(tmp_path):
    return write_labelled_run(tmp_path)


def images(run, paths) -> list[decisions.Image]:
    return [decisions.Image(run.row(p), p, run.folder_labels[run.row(p)]) for p in paths]


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_clash_gets_a_free_suffix_and_images_in_their_own_folder_keep_their_names():
    paths = ["/s/a/x.jpg", "/s/b/x.jpg", "/s/a/x-2.jpg", "/s/c/x.jpg", "/s/a/y"]
    labels = ["a", "a", "a", "a", "a"]
    changed = [False, True, False, True, False]
    placed, renamed = label_tree.plan(paths, labels, [False, False, False, False, False], changed)
    assert dict(placed) == {"/s/a/x.jpg": "a/x.jpg", "/s/a/x-2.jpg": "a/x-2.jpg", "/s/a/y": "a/y",
                            "/s/b/x.jpg": "a/x-3.jpg", "/s/c/x.jpg": "a/x-4.jpg"}  # x-2.jpg is another image's own
    assert renamed == [("/s/b/x.jpg", "a/x-3.jpg"), ("/s/c/x.jpg", "a/x-4.jpg")]
    placed, renamed = label_tree.plan(paths[:2], ["a", "b"], [False, True])
    assert placed == [("/s/a/x.jpg", "a/x.jpg")] and renamed == []  # excluded: left out
    with pytest.raises(ValueError, match=r"^label: '\.\.'"):
        label_tree.plan(["/s/x.jpg"], [".."], [False])


def test_export_rows_follow_the_run_in_row_order(labelled):
    decisions.record(labelled.run, "relabel", images(labelled, [labelled.copy]), "beagle")
    decisions.record(labelled.run, "keep", images(labelled, [labelled.original]))
    decisions.record(labelled.run, "exclude", images(labelled, [labelled.paths[0]]))
    rows = label_tree.export_rows(labelled.run)
    assert list(rows.columns) == ["path", "label", "new_label", "decision"]
    assert rows["path"].tolist() == labelled.paths and rows["label"].tolist() == labelled.folder_labels
    decided = rows[rows["decision"] != ""].set_index("path")
    assert decided.to_dict("index") == {
        labelled.paths[0]: {"label": "beagle", "new_label": "", "decision": "exclude"},
        labelled.original: {"label": "pug", "new_label": "", "decision": "keep"},
        labelled.copy: {"label": "pug", "new_label": "beagle", "decision": "relabel"}}


def test_a_failed_copy_leaves_no_tree_and_an_earlier_one_intact(labelled, tmp_path):
    decisions.record(labelled.run, "relabel", images(labelled, list(labelled.planted)), list(labelled.planted.values()))
    labelled.file(labelled.paths[20]).unlink()  # a source file gone since the run
    dest = tmp_path / "fixed"
    with pytest.raises(ValueError, match=r"^source: cannot read the run's image .*" + Path(labelled.paths[20]).name):
        label_tree.apply(labelled.run, str(dest))
    assert not dest.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".fixed")]  # no staging left
    dest.mkdir()
    (dest / "earlier.txt").write_text("an earlier tree")
    with pytest.raises(ValueError, match="^source:"):
        label_tree.apply(labelled.run, str(dest), overwrite=True)
    assert files_under(dest) == {"earlier.txt": b"an earlier tree"}
    with pytest.raises(ValueError, match="^mode: must be one of copy, link"):
        label_tree.apply(labelled.run, str(dest), mode="move")


def test_an_empty_destination_under_a_closed_parent_is_filled_in_place(labelled, tmp_path):
    parent = tmp_path / "closed"
    dest = parent / "tree"
    dest.mkdir(parents=True)
    with read_only(parent):
        report = label_tree.apply(labelled.run, str(dest))
        assert report.images == len(labelled.paths) and not report.replaced
        assert files_under(dest)["pug/sofa.jpg"] == labelled.file(labelled.paths[labelled.row(
            next(p for p in labelled.planted if p.endswith("sofa.jpg")))]).read_bytes()
        for entry in sorted(dest.rglob("*"), reverse=True):
            entry.unlink() if entry.is_file() else entry.rmdir()
        labelled.file(labelled.paths[5]).unlink()
        with pytest.raises(ValueError, match="^source:"):
            label_tree.apply(labelled.run, str(dest))
        assert list(dest.iterdir()) == []  # what was written is gone again


# ---- s3:// on a local moto server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """(endpoint, boto3 client) of a moto S3 server on 127.0.0.1 with the buckets "src" and "dest"."""
    import boto3
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for key, value in CREDENTIALS.items():
            patch.setenv(key, value)
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout_s=30, poll_s=0.05)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in ("src", "dest"):
            client.create_bucket(Bucket=bucket)
        yield endpoint, client
        server.stop()


def objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """The objects under `prefix` with their bytes; pyarrow's empty folder markers ("x/") left out."""
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {key[len(prefix):]: client.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in listed if not key.endswith("/")}


@pytest.mark.slow
def test_apply_to_s3(s3, labelled, capsys):
    from doggos.cli import main

    endpoint, client = s3
    decisions.record(labelled.run, "relabel", images(labelled, list(labelled.planted)), list(labelled.planted.values()))
    decisions.record(labelled.run, "exclude", images(labelled, [labelled.copy]))
    assert main(["labels", str(labelled.run), "apply", "--to", "s3://dest/fixed", "--s3-endpoint", endpoint]) == 0
    assert "copied 38 images into s3://dest/fixed" in capsys.readouterr().out
    written = objects(client, "dest", "fixed/")
    assert len(written) == 38 and "pug/pug-00-copy.jpg" not in written
    assert written["husky/husky-03-2.jpg"] == (labelled.tree / "beagle" / "husky-03.jpg").read_bytes()
    assert written["beagle/sofa.jpg"] == (labelled.tree / "pug" / "sofa.jpg").read_bytes()
    assert written["beagle/beagle-00.jpg"] == (labelled.tree / "beagle" / "beagle-00.jpg").read_bytes()

    client.put_object(Bucket="dest", Key="fixed/stale/old.jpg", Body=b"old")
    assert main(["labels", str(labelled.run), "apply", "--to", "s3://dest/fixed", "--s3-endpoint", endpoint]) == 2
    assert "to: s3://dest/fixed is not empty" in capsys.readouterr().err
    assert objects(client, "dest", "fixed/")["stale/old.jpg"] == b"old"
    assert main(["labels", str(labelled.run), "apply", "--to", "s3://dest/fixed", "--s3-endpoint", endpoint,
                 "--overwrite"]) == 0
    assert set(objects(client, "dest", "fixed/")) == set(written)  # the earlier tree's other objects are gone

    assert main(["labels", str(labelled.run), "apply", "--to", "s3://nope/fixed", "--s3-endpoint", endpoint]) == 2
    assert "to: the bucket 'nope' does not exist" in capsys.readouterr().err
    labelled.file(labelled.paths[30]).unlink()
    assert main(["labels", str(labelled.run), "apply", "--to", "s3://dest/broken", "--s3-endpoint", endpoint]) == 2
    assert capsys.readouterr().err.startswith("error: source: cannot read")
    assert objects(client, "dest", "broken/") == {}  # the objects written before the failure are deleted


@pytest.mark.slow
def test_an_s3_source_run_is_read_through_its_endpoint(s3, tmp_path, capsys, monkeypatch):
    from doggos.cli import main

    endpoint, client = s3
    run = write_labelled_run(tmp_path, uri_root="s3://src/tree", s3_endpoint=endpoint)
    for path in run.paths:
        client.put_object(Bucket="src", Key=path[len("s3://src/"):], Body=run.file(path).read_bytes())
    assert main(["labels", str(run.run), "accept"]) == 0
    dest = tmp_path / "fixed"
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)  # only the run's recorded endpoint leads to the server
    assert main(["labels", str(run.run), "apply", "--to", str(dest)]) == 0, capsys.readouterr().err
    written = files_under(dest)
    assert len(written) == len(run.paths)
    assert written["beagle/sofa.jpg"] == (run.tree / "pug" / "sofa.jpg").read_bytes()
    assert main(["labels", str(run.run), "apply", "--to", str(tmp_path / "links"), "--link"]) == 2
    assert capsys.readouterr().err.startswith("error: link:")
    assert main(["labels", str(run.run), "apply", "--to", "s3://src/tree/fixed", "--s3-endpoint", endpoint]) == 2
    assert "inside the run's source s3://src/tree" in capsys.readouterr().err
