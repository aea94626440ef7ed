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
    assert list_images(open_source(str(tmp_path)), limit=2).paths == [str(tmp_path / p) for p in ("a/1.png", "b/2.jpg")]


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


def _tree(root, counts: dict[str, int]) -> None:
    for label, count in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            (root / label / f"{i:03d}.jpg").write_bytes(b"x")


def _labels(paths) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in paths:
        counts[label_of(path)] = counts.get(label_of(path), 0) + 1
    return counts


def test_a_limit_samples_evenly_across_labels_not_the_first_paths(tmp_path):
    """Issue 25 item 6: --limit 30 on the demo kit's 10 digits took 30 paths of one label."""
    digits = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    _tree(tmp_path, {name: 30 for name in digits})
    paths = list_images(open_source(str(tmp_path)), limit=30).paths
    assert _labels(paths) == {name: 3 for name in digits} and paths == sorted(paths)
    assert _labels(list_images(open_source(str(tmp_path)), limit=4).paths) == {"eight": 1, "five": 1, "four": 1,
                                                                                 "nine": 1}  # labels in name order
    assert len(list_images(open_source(str(tmp_path)), limit=301).paths) == 300


def test_a_small_label_gives_its_all_and_the_rest_share_what_is_left(tmp_path):
    _tree(tmp_path, {"a": 2, "b": 40, "c": 40})
    assert _labels(list_images(open_source(str(tmp_path)), limit=12).paths) == {"a": 2, "b": 5, "c": 5}


def test_the_sample_is_seeded_not_the_first_files_and_the_same_on_every_listing(tmp_path):
    _tree(tmp_path / "one", {"a": 50, "b": 50})
    first = list_images(open_source(str(tmp_path / "one")), limit=10).paths
    assert _labels(first) == {"a": 5, "b": 5}
    assert first == list_images(open_source(str(tmp_path / "one")), limit=10).paths  # a resume picks the same
    names = [p.rsplit("/", 1)[1] for p in first]
    assert names != ["000.jpg", "001.jpg", "002.jpg", "003.jpg", "004.jpg"] * 2  # spread over each label
    (tmp_path / "one").rename(tmp_path / "moved")  # the same tree elsewhere: the same images
    assert [p.rsplit("/", 1)[1] for p in list_images(open_source(str(tmp_path / "moved")), limit=10).paths] == names
    (tmp_path / "moved" / "a" / "new.jpg").write_bytes(b"x")  # to a label above its share: one of it moves
    after = list_images(open_source(str(tmp_path / "moved")), limit=10).paths
    assert len({p[-9:] for p in after} ^ {p[-9:] for p in first}) <= 2  # "a/012.jpg": label and name


def test_what_a_limit_keeps_when_it_grows_and_what_added_files_move(tmp_path):
    """The docstring's claims, and not the one it made before ("an added image displaces at most one image of its
    own label"): a larger limit keeps a smaller one's images; an image added to a label smaller than its share takes
    a place from another label; a new label folder takes its share from several."""
    from doggos.pipeline.sources import sample_across_labels

    _tree(tmp_path, {"a": 2, "b": 30, "c": 30})
    paths = list_images(open_source(str(tmp_path))).paths
    picks = [set(sample_across_labels(paths, n, str(tmp_path))) for n in range(1, len(paths) + 1)]
    assert all(small <= large for small, large in zip(picks, picks[1:]))  # growing the limit only adds
    before = list_images(open_source(str(tmp_path)), limit=12).paths
    (tmp_path / "a" / "new.jpg").write_bytes(b"x")  # "a" gave all it had: the new image takes one of b's or c's
    after = list_images(open_source(str(tmp_path)), limit=12).paths
    assert _labels(before) == {"a": 2, "b": 5, "c": 5} and _labels(after) == {"a": 3, "b": 5, "c": 4}
    _tree(tmp_path, {"d": 30})  # a new label: three of the others' images, from two labels, make way for it
    moved = set(after) - set(list_images(open_source(str(tmp_path)), limit=12).paths)
    assert len(moved) == 3 and {label_of(path) for path in moved} == {"b", "c"}


@pytest.mark.usefixtures("every_run_goes_through_app_py")
def test_the_form_and_the_cli_say_how_a_limit_picks(runs_root):
    from _dashboard_fixtures import open_page

    from doggos.cli import build_parser

    at = open_page("pages/run.py")
    assert "evenly across the labels" in at.text_input(key="form_limit").help and "Seeded" in \
        at.text_input(key="form_limit").help
    start = build_parser()._subparsers._group_actions[0].choices["embed"]
    limit = next(action for action in start._actions if "--limit" in action.option_strings)
    assert "evenly across labels" in limit.help and "seeded" in limit.help
