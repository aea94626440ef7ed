"""The Map page of an updated run: its map keeps the old run's places, says so, and offers a fresh one (AppTest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import button, map_data, open_page, precompute_map, unescape_markdown, write_fake_run
from conftest import wait_for

from doggos.explore import projection
from doggos.explore.projection import MAP, ProjectionParams

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
PCA = ProjectionParams(method="pca")  # quick to recompute, and no umap to import
OLD_ID, NEW_ID = "20250101-120000-0001", "20250102-120000-0001"
CAPTION = f"Images carried over from run {OLD_ID} keep their places; 2 new ones were placed by their neighbours."


def add_hashes(run: Path) -> None:
    """Give a fake run's rows a content_hash (write_fake_run writes none): here, the file name's."""
    for part in (run / "embeddings").glob("*.parquet"):
        table = pq.read_table(part)
        hashes = [hashlib.sha256(Path(p).name.encode()).hexdigest() for p in table.column("path").to_pylist()]
        pq.write_table(table.append_column("content_hash", pa.array(hashes, pa.string())), part)


@pytest.fixture
def updated_run(runs_root):
    """A run that carried 21 images over from an older one and embedded 2 more, its PCA map placed from the old's."""
    old = write_fake_run(runs_root, OLD_ID, labels={"beagle": 12, "border collie": 9})
    new = write_fake_run(runs_root, NEW_ID, labels={"beagle": 14, "border collie": 9})
    for run in (old, new):
        add_hashes(run)
    config = json.loads((new / "config.json").read_text())
    (new / "config.json").write_text(json.dumps({**config, "reuse": str(old)}))
    precompute_map(old, PCA)
    MAP.run(new, PCA)
    return new


def test_map_of_an_updated_run_says_its_places_are_kept_and_recomputes_on_request(updated_run):
    at = open_page("pages/map.py", current_run_id=NEW_ID, map_params=PCA)
    assert CAPTION in [unescape_markdown(c.value) for c in at.caption]
    assert at.get("bidi_component")

    button(at, "Recompute map").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert projection.fresh_marker(updated_run, PCA).exists()
    assert any("in the background" in i.value for i in at.info) and not at.get("bidi_component")  # the usual wait
    settled = wait_for(lambda: (s := MAP.status(updated_run, PCA)).state != "running" and s)
    assert settled.state == "ready", settled.error
    assert "placed_from" not in projection.info(settled.path)
    at.run()
    assert not any("carried over" in c.value for c in at.caption)
    assert not any(b.label == "Recompute map" for b in at.button)
    assert f"/maps/{PCA.name}/points.bin" in map_data(at)["points_url"]


def test_map_of_a_run_embedded_from_scratch_offers_no_recompute(updated_run):
    at = open_page("pages/map.py", current_run_id=OLD_ID, map_params=PCA)
    assert at.get("bidi_component") and not any("carried over" in c.value for c in at.caption)
    assert not any(b.label == "Recompute map" for b in at.button)
