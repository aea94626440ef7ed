"""The dashboard, page by page, through Streamlit's AppTest (the Run page: test_run_page.py; the page helpers in
dashboard.ui: test_ui.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _dashboard_fixtures import (APP, NASTY_LABEL, button, damage_thumbnails, map_data, markdown_bodies, open_page,
                                 precompute_map, precompute_quality, unescape_markdown, write_failed_run,
                                 write_fake_run)
from conftest import wait_for
from streamlit.testing.v1 import AppTest

from dashboard import ui
from doggos.base import store
from doggos.base.rundir import RunDir
from doggos.explore import map_payload, map_serving, projection
from doggos.runs.manager import RunManager

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py"))
RUN_ID = "20250101-120000-0001"


@pytest.fixture
def fake_run(runs_root):
    """A finished run with three labels (one of them nasty) whose default map is already on disk."""
    run = write_fake_run(runs_root, RUN_ID)
    precompute_map(run)
    precompute_quality(run)
    return run


# ---- every page --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_runs(runs_root, page):
    at = open_page(page)
    assert at.title, f"{page} shows no title"
    if page != "pages/run.py":
        assert any("No finished run" in i.value for i in at.info), f"{page} does not say there is nothing to show"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_run(fake_run, page):
    at = open_page(page)
    assert at.session_state["current_run"].id == RUN_ID
    assert not at.get("error"), [e.value for e in at.error]
    assert not any("No finished run" in i.value for i in at.info)


def test_every_page_has_its_own_tests():
    tests = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("test_*.py"))
    for page in PAGES:
        stem = Path(page).stem
        assert f"def test_{stem}_" in tests, f"{page} has no test_{stem}_* test in tests/"


def test_every_page_file_is_in_the_navigation(runs_root):
    at = AppTest.from_file(APP, default_timeout=30).run()
    for page in PAGES:
        at.switch_page(page)  # raises ValueError for a file that st.navigation does not register


def test_a_deep_link_opened_first_still_gets_the_frame(fake_run, monkeypatch):
    """A server's very first request for /map runs pages/map.py without app.py; the page's guard sends it through."""
    monkeypatch.undo()  # the real behaviour, without every_run_goes_through_app_py
    monkeypatch.setenv("DOGGOS_RUNS_DIR", str(fake_run.parent))
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/map.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Map"] and at.get("bidi_component")
    assert at.sidebar.selectbox(key="current_run_id").value == RUN_ID


def test_app_start_up_imports_no_heavy_library(fake_run):
    """umap, torch, ray and transformers take seconds to import: no page may pull them in just by being shown."""
    script = (
        "import sys\nfrom streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
        f"for page in {PAGES!r}:\n    at.switch_page(page).run()\n    assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('umap', 'torch', 'ray', 'transformers', 'numba') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_sidebar_defaults_to_the_latest_succeeded_run_and_switches(runs_root):
    write_fake_run(runs_root, "20250101-100000-0001", labels={"old": 3})
    write_fake_run(runs_root, "20250102-100000-0002", labels={"new": 4})
    write_failed_run(runs_root, "20250103-100000-0003")  # newer, but failed: not offered
    at = AppTest.from_file(APP, default_timeout=30).run()
    picker = at.sidebar.selectbox(key="current_run_id")
    assert picker.options == [ui.run_choice_label(RunManager().get(i)) for i in ("20250102-100000-0002", "20250101-100000-0001")]
    assert at.session_state["current_run"].id == "20250102-100000-0002"
    picker.set_value("20250101-100000-0001").run()
    at.switch_page("pages/browse.py").run()
    assert at.session_state["current_run"].id == "20250101-100000-0001"
    assert len(at.image) == 3


# ---- Browse page -------------------------------------------------------------------------------------------------

def test_browse_filters_by_label_and_paginates(runs_root):
    write_fake_run(runs_root, RUN_ID, labels={"beagle": 30, "border collie": 25, NASTY_LABEL: 6})
    at = open_page("pages/browse.py")
    labels = at.multiselect(key="browse_labels")
    assert labels.options == [f"{NASTY_LABEL} (6)", "beagle (30)", "border collie (25)"]
    assert len(at.image) == 48
    at.pagination(key="browse_page").select(2).run()
    assert len(at.image) == 61 - 48
    at.multiselect(key="browse_labels").select("border collie").run()  # this run's widget: page 1's checkboxes are gone
    captions = [unescape_markdown(c) for image in at.image for c in image.captions]
    assert len(captions) == 25 and all(c.startswith("border collie · ") for c in captions)
    assert not at.get("pagination")  # one page: no pager, and the page number went back to 1
    at.text_input(key="browse_name").input("0002").run()
    assert [unescape_markdown(c) for image in at.image for c in image.captions] == ["border collie · border collie-0002.jpg"]


def test_browse_view_shows_the_image_larger_with_its_full_path(runs_root):
    write_fake_run(runs_root, RUN_ID, source="s3://bucket/dogs")
    at = open_page("pages/browse.py")
    at.button(key="browse-view-3").click().run()
    assert not at.exception
    assert "s3://bucket/dogs/beagle/beagle-0003.jpg" in [c.value for c in at.code]
    assert any("stored thumbnail" in c.value for c in at.caption)  # an s3 original is never downloaded


def test_browse_draws_placeholders_for_thumbnails_that_are_missing_or_damaged(runs_root):
    run = write_fake_run(runs_root, RUN_ID, labels={"beagle": 4, "border collie": 4}, files=1)
    damage_thumbnails(run, {0: b"", 1: b"not a jpeg", 2: None})
    at = open_page("pages/browse.py")
    assert not at.exception and len(at.image) == 8  # every image drawn: three of them as grey squares
    at.button(key="browse-view-1").click().run()  # the larger view of a damaged one opens too
    assert not at.exception


def test_browse_renders_a_2880_image_run_one_page_at_a_time(runs_root):
    # How fast this is, is measured by bench/dashboard_scale.py, not asserted here.
    write_fake_run(runs_root, RUN_ID, labels={f"breed {i:03d}": 24 for i in range(120)}, dim=32, files=4)
    at = open_page("pages/browse.py")  # fills the caches
    assert len(at.image) == 48
    fresh = AppTest.from_file(APP, default_timeout=30).run()
    fresh.switch_page("pages/browse.py")
    fresh.run()  # a new session reads the cached data
    assert not fresh.exception and len(fresh.image) == 48


def test_browse_pages_far_into_a_run_keep_the_label_then_path_order(runs_root, monkeypatch):
    # The first rows of the order are picked by a partial sort, later ones from the whole sort (store.SELECT_MAX).
    # A few labels' rows are sorted alone (store.SORT_ALONE_MAX), more are filtered from the whole sort.
    monkeypatch.setattr(store, "SELECT_MAX", 30)
    monkeypatch.setattr(store, "SORT_ALONE_MAX", 40)
    run = write_fake_run(runs_root, RUN_ID, labels={"beagle": 30, "border collie": 25, NASTY_LABEL: 6}, files=3)
    index = store.load_index(run)
    at = open_page("pages/browse.py", browse_page_size=24)
    for labels in ([], ["beagle", "border collie"], ["border collie", NASTY_LABEL]):  # 61, 55 and 31 rows
        at.multiselect(key="browse_labels").set_value(labels).run()
        expected = [ui.caption_for(label, name) for label, name in
                    store.filter_index(index, labels)[["label", "name"]].itertuples(index=False)]
        shown = [c for image in at.image for c in image.captions]
        for page in range(2, len(expected) // 24 + 2):  # rows 1-24 and 25-48 straddle SELECT_MAX, 49-61 lie past it
            at.pagination(key="browse_page").select(page).run()
            assert not at.exception
            shown += [c for image in at.image for c in image.captions]
        assert shown == expected


def test_browse_shares_one_index_between_sessions(runs_root):
    from dashboard import frame

    write_fake_run(runs_root, RUN_ID)
    first, second = open_page("pages/browse.py"), open_page("pages/browse.py")
    assert not first.exception and not second.exception
    run = second.session_state[frame.CURRENT_RUN]
    # st.cache_resource: the same objects for every session, never a copy per rerun (a 1,000,000-row index is 100 MB).
    assert frame.run_index(run) is frame.run_index(run) and frame.label_counts(run) is frame.label_counts(run)
    assert frame.row_count(run) == len(frame.run_index(run)) == 27
    assert frame.label_names(run) == tuple(sorted([NASTY_LABEL, "beagle", "border collie"]))
    chosen = frame.matching_rows(run, ["beagle"], " 0001")
    assert chosen is frame.matching_rows(run, ("beagle",), "0001") and not chosen.flags.writeable


# ---- Map page ----------------------------------------------------------------------------------------------------

def test_map_draws_one_point_per_embedding_with_a_legend_entry_per_label(fake_run):
    at = open_page("pages/map.py")
    data = map_data(at)
    index = store.load_index(fake_run)
    rows = len(index)
    counts = index.groupby("label").size()
    assert data["labels"] == sorted(counts.index) and data["counts"] == [int(counts[label]) for label in data["labels"]]
    assert len(data["colours"]) == len(data["labels"]) and data["colour_by"] == "label" and data["selected"] == []
    # The points travel by the app's route, not in the page: the URL names this run's default map.
    assert data["points_url"].startswith(f"/doggos/runs/{RUN_ID}/maps/{projection.DEFAULT_PARAMS.name}/points.bin?v=")
    served = map_serving.points_buffer(RunDir(fake_run), projection.DEFAULT_PARAMS.name)
    assert len(map_payload.unpack(served)["x"]) == rows
    assert data["thumb_url"].startswith(f"/doggos/runs/{RUN_ID}/thumbnails/{{row}}.jpg?v=")
    assert any(f"{rows:,} points" in c.value for c in at.caption)
    assert any("random weights" in w.value for w in at.warning)  # the fake run's model is the demo kit's


def test_map_selection_shows_the_selected_images(fake_run):
    at = open_page("pages/map.py", map_selection={"run": RUN_ID, "rows": [0, 5, 20]})
    assert any("3 selected images" in s.value for s in at.subheader)
    assert map_data(at)["selected"] == [0, 5, 20]  # the map greys the rest
    index = store.load_index(fake_run)
    captions = [unescape_markdown(c) for image in at.image for c in image.captions]
    assert captions == [f"{index.label[r]} · {index.name[r]}" for r in (0, 5, 20)]
    assert [b.label for b in at.get("download_button")] == ["Download CSV"]
    assert ui.selection_csv(index.iloc[[0, 5, 20]]).splitlines() == ["path,label"] + [
        f"{index.path[r]},{index.label[r]}" for r in (0, 5, 20)]
    button(at, "Clear selection").click().run()
    assert not at.image and "map_selection" not in at.session_state


def test_map_ignores_a_selection_made_on_another_run(fake_run):
    at = open_page("pages/map.py", map_selection={"run": "some-other-run", "rows": [0, 1]})
    assert not at.image


def test_map_computes_missing_parameters_in_the_background(fake_run):
    at = open_page("pages/map.py")
    at.get("button_group")[0].set_value("pca")  # the Method control
    button(at, "Apply").click().run()
    assert not at.get("bidi_component")
    assert any("in the background" in i.value for i in at.info)
    params = projection.ProjectionParams(method="pca")
    assert wait_for(lambda: (s := projection.MAP.status(fake_run, params)).state != "running" and s).state == "ready"
    at.run()
    assert f"/maps/{params.name}/points.bin" in map_data(at)["points_url"]


def test_map_says_when_its_umap_waits_for_a_slot(fake_run, monkeypatch):
    monkeypatch.setenv("DOGGOS_MAP_SLOTS", "3")
    projection.projection_path(fake_run).unlink()
    # A live computation (this process stands in for it) that is queued for a slot.
    marker = projection.projection_path(fake_run).with_suffix(".running")
    marker.write_text(json.dumps({"created": time.time(), "pid": os.getpid()}))
    marker.with_suffix(".waiting").touch()
    at = open_page("pages/map.py")
    assert any("is queued" in i.value and "at most 3 UMAPs compute at once" in i.value for i in at.info)
    assert not at.get("bidi_component")


def test_map_says_what_stage_its_umap_is_at(fake_run):
    projection.projection_path(fake_run).unlink()
    # A live computation (this process stands in for it) that reports the layout's progress.
    marker = projection.projection_path(fake_run).with_suffix(".running")
    marker.write_text(json.dumps({"created": time.time() - 75, "pid": os.getpid()}))
    projection.MAP.progress_file(fake_run, projection.DEFAULT_PARAMS).write_text("layout: epoch 40 of 100")
    at = open_page("pages/map.py")
    (info,) = [unescape_markdown(i.value) for i in at.info if "in the background" in i.value]
    assert " · 1 min 1" in info and info.endswith("Now: layout: epoch 40 of 100.")


def test_map_shows_why_a_projection_failed(fake_run):
    projection.projection_path(fake_run).unlink()
    error_file = projection.projection_path(fake_run).with_suffix(".error.txt")
    error_file.write_text("MemoryError: the run is too big for this machine")
    at = open_page("pages/map.py")
    assert any("too big for this machine" in unescape_markdown(e.value) for e in at.error)
    assert not at.get("bidi_component")


# ---- Run summary page --------------------------------------------------------------------------------------------

def test_summary_shows_model_counts_parquet_failures_and_ray(fake_run):
    at = open_page("pages/summary.py")
    assert any("random weights" in w.value for w in at.warning)
    assert any("RANDOM WEIGHTS" in t.value for t in at.text)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images embedded"] == "27" and metrics["Labels"] == "3" and metrics["Dimension"] == "16"
    assert metrics["Failed files"] == "1"
    codes = [c.value for c in at.code]
    assert str(fake_run / "embeddings") in codes
    assert any("pd.read_parquet" in c for c in codes) and any("ray.data.read_parquet" in c for c in codes)
    frames = [d.value for d in at.dataframe]
    assert any(list(f.columns) == ["path", "reason"] and f["path"][0].endswith("broken.jpg") for f in frames)
    operators = next(f for f in frames if "tasks" in f.columns)
    assert list(operators["tasks"]) == [4, 4, 4] and operators["name"][2] == "Write"
    assert any("Operator 1 ReadBinary" in c for c in codes)
    assert [b.proto.url for b in at.get("link_button")] == ["http://127.0.0.1:8265"]
    cluster = next(f for f in frames if "setting" in f.columns and "nodes" in list(f["setting"]))
    assert dict(zip(cluster["setting"], cluster["value"]))["embedded on"] == "1 node: 6617a69d 27 images"


def test_summary_says_what_an_updated_and_resumed_run_carried_over(runs_root):
    run = write_fake_run(runs_root, RUN_ID)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(reused=20, embedded=7, dropped=2, reused_from="20241231-000000-0000", attempts=2)
    (run / "manifest.json").write_text(json.dumps(manifest))
    status = json.loads((run / "status.json").read_text())
    status["attempts"] = [{"error": "the driver process exited unexpectedly (killed by SIGKILL)", "fraction": 0.52}]
    (run / "status.json").write_text(json.dumps(status))
    at = open_page("pages/summary.py")
    assert {m.label: m.value for m in at.metric}["Images"] == "27"
    captions = [unescape_markdown(c.value) for c in at.caption]
    assert "update of 20241231-000000-0000 · killed at 52 %, resumed · reused 20, embedded 7, dropped 2" in captions, \
        captions


def test_summary_without_failures_or_dashboard(runs_root):
    run = write_fake_run(runs_root, RUN_ID, failures=[], random_weights=False)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["ray"]["dashboard_url"] = None
    (run / "manifest.json").write_text(json.dumps(manifest))
    at = open_page("pages/summary.py")
    assert not at.warning and not at.get("link_button")
    assert any("Every image was read" in c.value for c in at.caption)


# ---- safe display ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_labels_with_markup_display_literally(fake_run, page):
    at = open_page(page, map_selection={"run": RUN_ID, "rows": list(range(27))})
    if page == "pages/browse.py":
        at.multiselect(key="browse_labels").select(NASTY_LABEL).run()
    for body in markdown_bodies(at):
        assert "<b>" not in body and "*x*" not in body, f"unescaped markup handed to Markdown on {page}: {body!r}"
    shown = [unescape_markdown(c) for image in at.image for c in image.captions]
    if page in ("pages/browse.py", "pages/map.py"):
        assert any(c.startswith(f"{NASTY_LABEL} · ") for c in shown)
    if page == "pages/map.py":  # the component writes labels as text (textContent), never as markup
        assert NASTY_LABEL in map_data(at)["labels"]


def test_a_selected_image_opens_in_the_dialog_with_its_neighbours(fake_run):
    at = open_page("pages/map.py", map_selection={"run": RUN_ID, "rows": [4, 7]})
    index = store.load_index(fake_run)
    next(b for b in at.button if b.label == "View").click().run()  # the first selected image: row 4
    assert any(index.path[4] == c.value for c in at.code)
    assert any("Nearest neighbours" in m.value for m in at.markdown)
    captions = [unescape_markdown(c) for image in at.image for c in image.captions]
    neighbours = [c for c in captions if c.count(" · ") == 2]  # "score · label · file"
    assert len(neighbours) == 8 and not any(c.endswith(f" · {index.name[4]}") for c in neighbours)
    assert any(b.label == "More like this" for b in at.button)  # a dialog's button reruns only the dialog: the
    # browser tier clicks it


def test_opening_a_run_made_before_shelves_gives_it_one_in_the_background(fake_run):
    from doggos.base import shelf

    assert not shelf.is_current(fake_run)  # the fake run, like an old run, has only its Parquet
    at = open_page("pages/browse.py")
    assert at.image  # drawn from the Parquet meanwhile
    assert wait_for(lambda: shelf.is_current(fake_run))
