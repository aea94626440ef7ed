"""Sources: labels from parent folders, recursive listing, and clear errors for bad local paths."""

import pytest

from doggos.pipeline.sources import SourceError, is_image_name, label_of, list_images, open_source


@pytest.mark.parametrize(
    "path, label",
    [
        ("/data/train/beagle/1.jpg", "beagle"),
        ("doggos-dataset/train/border_collie/x.jpeg", "border_collie"),
        ("/data/My Dogs/Shiba \"Inu\" <b>/a b.png", "Shiba \"Inu\" <b>"),
        ("/data/chiens/Épagneul 🐶/1.jpg", "Épagneul 🐶"),
        ("/data/flat.jpg", "data"),  # no class folder: the root folder's name
        ("bucket/x.jpg", "bucket"),
    ],
)
def test_label_is_parent_folder_verbatim(path, label):
    assert label_of(path) == label


@pytest.mark.parametrize("name, ok", [("a.JPG", True), ("b.jpeg", True), ("c.webp", True), ("._c.jpg", False), ("notes.txt", False), ("x.jpg.bak", False)])
def test_image_names(name, ok):
    assert is_image_name(name) is ok


def test_lists_recursively_sorted_and_skips_other_files(tmp_path):
    for rel in ("b/2.jpg", "a/1.png", "a/deep/3.jpeg", "a/readme.txt", "a/.hidden.jpg", "__MACOSX/a/._1.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    listing = list_images(open_source(str(tmp_path)))
    assert listing.paths == [str(tmp_path / p) for p in ("a/1.png", "a/deep/3.jpeg", "b/2.jpg")]
    assert listing.skipped_files == 3
    assert list_images(open_source(str(tmp_path)), limit=2).paths == listing.paths[:2]


def test_missing_folder_says_so_and_hints_at_the_demo_kit(tmp_path):
    with pytest.raises(SourceError, match="^source: .*does not exist") as raised:
        list_images(open_source(str(tmp_path / "nope")))
    assert (raised.value.field, raised.value.hint) == ("source", "demo_kit")
    assert "`" not in raised.value.message  # advice is each surface's to word (config.ADVICE), not the message's


def test_empty_folder_says_no_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"no images under .*1 other files"):
        list_images(open_source(str(tmp_path)))


def test_a_file_is_not_a_source(tmp_path):
    (tmp_path / "one.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="is a file"):
        list_images(open_source(str(tmp_path / "one.jpg")))


def test_uris_resolve_to_filesystems(tmp_path):
    local = open_source(f"file://{tmp_path}")
    assert (local.root, local.scheme) == (str(tmp_path), "")
    s3 = open_source("s3://bucket/train/", s3_endpoint="http://127.0.0.1:1")
    assert (s3.uri, s3.root, s3.scheme, s3.to_uri("bucket/train/a/1.jpg")) == ("s3://bucket/train", "bucket/train", "s3://", "s3://bucket/train/a/1.jpg")
    with pytest.raises(SourceError, match="names no bucket"):
        open_source("s3://")
