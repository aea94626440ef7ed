"""Updating a run: rows of unchanged files are carried over, new and changed files embedded, gone ones dropped; a
reuse across models or settings is refused before anything runs."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from imagegen import make_photo, write_image_tree

from doggos.base.config import ConfigError, RunConfig
from doggos.base.rundir import RunDir
from doggos.cli import main
from doggos.pipeline import preflight
from doggos.runs import driver

pytestmark = [pytest.mark.ray, pytest.mark.slow]
LABELS = ("akita", "boxer", "corgi")


def config_for(tree, model, out, **changes) -> RunConfig:
    return RunConfig(source=str(tree), model=model, output=str(out), batch_size=2, projection=False, quality=False,
                     **changes)


@pytest.fixture(scope="module")
def first(ray_session, tiny_clip, tmp_path_factory):
    """A finished run over 12 images, then its tree changed: 2 files new, 1 changed, 1 deleted, 1 moved."""
    base = tmp_path_factory.mktemp("update")
    tree = base / "tree"
    write_image_tree(tree, per_label=4, labels=LABELS)
    manifest = driver.run(config_for(tree, tiny_clip, base / "first"))
    assert manifest.rows == 12 and manifest.embedding_key["model"]
    make_photo(9001).save(tree / "akita" / "new-1.jpg", quality=90)
    (tree / "dalmatian").mkdir()
    make_photo(9002).save(tree / "dalmatian" / "new-2.jpg", quality=90)
    make_photo(9003).save(tree / "boxer" / "boxer-1.jpg", quality=90)  # same name, other bytes
    (tree / "boxer" / "boxer-0.jpg").unlink()
    (tree / "corgi" / "corgi-3.jpg").rename(tree / "akita" / "corgi-3.jpg")  # moved: same bytes, new label
    return base, tree, RunDir(base / "first")


def rows_by_path(run: RunDir) -> dict:
    table = pq.read_table(run.embeddings).to_pandas()
    assert table["path"].is_unique
    return {row.path: row for row in table.itertuples()}


def test_an_update_embeds_only_new_and_changed_files_and_matches_a_full_run(first, tiny_clip):
    from doggos.base import decisions

    base, tree, old = first
    excluded = str(tree / "akita" / "akita-0.jpg")
    decisions.record(old, "exclude", [decisions.Image(0, excluded, "akita")], source="cli")
    updated = driver.run(config_for(tree, tiny_clip, base / "updated", reuse=str(old.path)))
    assert (updated.reused, updated.embedded, updated.dropped, updated.rows) == (10, 3, 1, 13)
    assert updated.reused_from == old.id and updated.reuse_text() == "reused 10, embedded 3, dropped 1"
    assert updated.progress.decoded == 3  # carried-over files were hashed, never decoded
    # A label decision names its image by path: it holds in the update.
    assert decisions.state(RunDir(base / "updated")).effects[excluded].decision == "exclude"
    driver.run(config_for(tree, tiny_clip, base / "full"))
    carried, fresh = rows_by_path(RunDir(base / "updated")), rows_by_path(RunDir(base / "full"))
    assert sorted(carried) == sorted(fresh) == sorted(str(p) for p in tree.rglob("*.jpg"))
    for path, row in fresh.items():
        twin = carried[path]
        assert twin.content_hash == row.content_hash and twin._2 == row._2  # the hash, and the label as filed now
        cosine = np.dot(twin.embedding, row.embedding) / np.linalg.norm(twin.embedding) / np.linalg.norm(row.embedding)
        assert cosine >= 0.9999, path
        assert (twin.thumbnail, twin.width, twin.height) == (row.thumbnail, row.width, row.height)
    assert carried[str(tree / "akita" / "corgi-3.jpg")]._2 == "akita"  # the moved file took its new folder's label


def test_reuse_is_refused_for_another_model_or_other_settings(first, tiny_clip, tmp_path):
    base, tree, old = first
    other = tmp_path / "other-clip"
    shutil.copytree(tiny_clip, other)
    processor = json.loads((other / "preprocessor_config.json").read_text())
    processor["image_mean"] = [0.5, 0.5, 0.5]  # the same weights, other preprocessing: other embeddings
    (other / "preprocessor_config.json").write_text(json.dumps(processor))
    for model, changes, why in ((str(other), {}, "other weights or preprocessing"),
                                (tiny_clip, {"thumbnail_size": 64}, "thumbnail size 224"),
                                (tiny_clip, {"fp16": True}, "half precision")):
        with pytest.raises(ConfigError, match=why) as refused:
            preflight.check(config_for(tree, model, tmp_path / "never", reuse=str(old.path), **changes))
        assert refused.value.field == "reuse"
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("target, message", [
    ("{base}/missing", "reuse: no run folder"),
    ("{base}/unfinished", "reuse: run unfinished has not succeeded"),
])
def test_the_cli_refuses_a_missing_or_unfinished_run_to_reuse(first, tiny_clip, target, message, capsys):
    base, tree, _ = first
    (base / "unfinished").mkdir(exist_ok=True)
    (base / "unfinished" / "status.json").write_text('{"state": "failed"}')
    code = main(["embed", "--source", str(tree), "--model", tiny_clip, "--out", str(base / "never"),
                 "--reuse", target.format(base=base)])
    assert code == 2 and message in capsys.readouterr().err
    assert not (base / "never").exists()
