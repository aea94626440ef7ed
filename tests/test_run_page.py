"""The Run page through Streamlit's AppTest: the form and its checks, launching, the live run, cancel, the history,
updating a finished run and resuming a failed one."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from _dashboard_fixtures import button, open_page, unescape_markdown, write_failed_run, write_fake_run

from doggos.base.config import RunConfig
from doggos.base.records import read_manifest, write_manifest
from doggos.base.rundir import RunDir
from doggos.runs.manager import RunManager

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
RUN_ID = "20250101-120000-0001"


@pytest.fixture
def recorded_starts(monkeypatch):
    calls = []

    def fake_start(self, config, check=True, by=None):
        calls.append(config)
        return "20990101-000000-beef"

    monkeypatch.setattr(RunManager, "start", fake_start)
    return calls


def test_run_form_rejects_a_zero_batch_size_and_starts_nothing(runs_root, recorded_starts, image_tree, tiny_clip):
    at = open_page("pages/run.py")
    at.text_input(key="form_source").input(str(image_tree[0]))
    at.text_input(key="form_model").input(tiny_clip)
    at.text_input(key="form_batch_size").input("0")
    button(at, "Launch run").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "batch_size" in errors[0] and "at least 1" in errors[0]
    assert recorded_starts == []
    assert list(runs_root.iterdir()) == []


def test_run_form_shows_every_field_error_at_once(runs_root, recorded_starts, image_tree, tiny_clip):
    at = open_page("pages/run.py")
    at.text_input(key="form_source").input(str(image_tree[0]))
    at.text_input(key="form_model").input(tiny_clip)
    at.text_input(key="form_batch_size").input("0")
    at.text_input(key="form_concurrency").input("abc")
    at.text_input(key="form_ray_address").input("127.0.0.1:1")
    button(at, "Launch run").click().run()
    errors = " | ".join(unescape_markdown(e.value) for e in at.error)
    for field in ("batch_size", "concurrency", "ray_address"):
        assert f"`{field}`" in errors, errors
    assert "Under **Advanced**: Ray address needs a fix" in errors  # the expander may be closed: say where to look
    assert recorded_starts == []


def test_run_form_names_the_source_when_preflight_refuses_it(runs_root, tmp_path, tiny_clip):
    at = open_page("pages/run.py")
    at.text_input(key="form_source").input(str(tmp_path / "no such folder"))
    at.text_input(key="form_model").input(tiny_clip)
    button(at, "Launch run").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "`source`" in errors[0] and "does not exist" in unescape_markdown(errors[0])
    assert list(runs_root.iterdir()) == []  # the real RunManager.start refused before creating anything


def test_run_launch_calls_the_run_manager_with_the_form_values(runs_root, recorded_starts, tmp_path):
    at = open_page("pages/run.py")
    at.text_input(key="form_source").input(str(tmp_path))
    at.text_input(key="form_model").input("/models/clip")
    at.radio(key="form_device").set_value("cpu")
    at.text_input(key="form_batch_size").input("8")
    at.text_input(key="form_limit").input(" 5 ")
    button(at, "Launch run").click().run()
    assert not at.error
    assert recorded_starts == [RunConfig(source=str(tmp_path), model="/models/clip", device="cpu", batch_size=8,
                                         limit=5)]
    assert at.session_state["watched_run"] == "20990101-000000-beef"


def test_run_demo_kit_button_prepares_the_kit_beside_the_runs_root_and_fills_the_form(runs_root, monkeypatch):
    from doggos.pipeline import demo

    folders = []

    def fake_kit(folder, per_class=30):
        folders.append(Path(folder))
        return {"source": f"{folder}/digits", "model": f"{folder}/clip-random-weights-tiny"}

    monkeypatch.setattr(demo, "make_demo_kit", fake_kit)
    at = open_page("pages/run.py")
    button(at, "Prepare demo kit").click().run()
    assert folders == [runs_root.parent / "demo"]
    assert at.text_input(key="form_source").value == f"{runs_root.parent / 'demo'}/digits"
    assert at.text_input(key="form_model").value.endswith("clip-random-weights-tiny")
    assert any("Demo kit ready" in s.value for s in at.success)


def test_run_form_keeps_its_values_across_pages(runs_root, recorded_starts):
    at = open_page("pages/run.py")
    at.text_input(key="form_source").input("/data/my dogs")
    at.text_input(key="form_batch_size").input("zero")
    button(at, "Launch run").click().run()  # a form sends its values on submit; this one is refused
    assert recorded_starts == []
    at.switch_page("pages/browse.py").run()
    at.switch_page("pages/run.py").run()
    assert at.text_input(key="form_source").value == "/data/my dogs"


def test_run_page_shows_a_live_run_and_cancels_it(runs_root):
    """A 'driver' that is really `sleep`: the page must show its progress and log, and Cancel must stop it."""
    from doggos.base.processes import process_start
    from doggos.base.records import Progress, update_status
    from doggos.base.rundir import RunDir

    driver = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        run = RunDir(runs_root / "20250105-000000-live")
        run.path.mkdir()
        run.config.write_text(json.dumps(RunConfig(source="/data/dogs", model="m").to_dict()))
        run.log.write_text("found 100 images\nplan: 1 embedder actor\n")
        update_status(run, state="running", pid=driver.pid, pid_start=process_start(driver.pid),
                      created_at="2025-01-05T00:00:00+00:00",
                      progress=Progress(found=100, embedded=40, reused=30, images_per_s=8.0, eta_s=7.5,
                                        phase="embedding"))
        at = open_page("pages/run.py")
        bars = at.get("progress")
        assert len(bars) == 1 and bars[0].proto.value == 70  # the rows carried over count as done
        assert any("plan: 1 embedder actor" in c.value for c in at.code)
        assert [(m.label, m.value) for m in at.metric][:3] == [("Embedded", "40 / 100"), ("Reused", "30"),
                                                               ("Images/s · last 5 s", "8.0")]
        at.button(key="cancel-20250105-000000-live").click().run()
        assert driver.wait(timeout=10) is not None
        assert RunManager().get("20250105-000000-live").state == "cancelled"
        assert not at.get("progress")
    finally:
        driver.kill()
        driver.wait()


def test_run_page_times_a_start_up_phase_against_this_machines_past_runs(runs_root):
    """Loading the model shows no rows to count: the page says how long it has gone on and how long it usually takes
    here (the median of the finished runs' recorded phases), where the ETA showed "–"."""
    import time

    from doggos.base.processes import process_start
    from doggos.base.records import Progress, update_status
    from doggos.base.rundir import RunDir

    for number, loading_s in enumerate((18.0, 20.0, 31.0)):  # finished runs that recorded their phases
        past = RunDir(write_fake_run(runs_root, f"2025010{number + 1}-120000-000{number}"))
        update_status(past, phase_started={"listing": 100.0, "starting ray": 101.0, "loading model": 110.0,
                                           "embedding": 110.0 + loading_s, "done": 200.0})
    driver = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        run = RunDir(runs_root / "20250105-000000-live")
        run.path.mkdir()
        run.config.write_text(json.dumps(RunConfig(source="/data/dogs", model="m").to_dict()))
        now = time.time()
        update_status(run, state="running", pid=driver.pid, pid_start=process_start(driver.pid),
                      created_at="2025-01-05T00:00:00+00:00", progress=Progress(found=100, phase="loading model"),
                      phase_started={"listing": now - 25, "starting ray": now - 24, "loading model": now - 12})
        at = open_page("pages/run.py")
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Loading model · usually 20 s"] in ("12 s", "13 s", "14 s")
        assert metrics["Images/s · last 5 s"] == "–" and "ETA" not in metrics
        assert "(usually 20 s)" in at.get("progress")[0].proto.text
    finally:
        driver.kill()
        driver.wait()


def test_run_history_lists_runs_and_deletes_one(runs_root):
    write_fake_run(runs_root, RUN_ID)
    write_failed_run(runs_root, "20250101-130000-0002", error="every image failed")
    at = open_page("pages/run.py")
    table = at.dataframe[0].value
    assert list(table["id"]) == ["20250101-130000-0002", RUN_ID]
    assert "failed" in table["state"][0] and table["error"][0] == "every image failed"
    at.selectbox(key="delete_run_id").set_value("20250101-130000-0002")
    at.button(key="delete_run_confirm").click().run()
    assert not (runs_root / "20250101-130000-0002").exists() and (runs_root / RUN_ID).exists()
    assert list(at.dataframe[0].value["id"]) == [RUN_ID]




def make_reusable(run: Path, model: str) -> Path:
    """Give a fake finished run what a run made now has for another to reuse it: content hashes, the model's key."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from doggos.pipeline import reuse

    for part in sorted((run / "embeddings").glob("*.parquet")):
        table = pq.read_table(part)
        hashes = [hashlib.sha256(path.encode()).hexdigest() for path in table.column("path").to_pylist()]
        pq.write_table(table.append_column("content_hash", pa.array(hashes, pa.string())), part)
    manifest = read_manifest(RunDir(run))
    write_manifest(RunDir(run), dataclasses.replace(manifest, embedding_key=reuse.embedding_key(model, False, 224)))
    return run


@pytest.fixture
def held_drivers(tmp_path, monkeypatch):
    """Drivers started in the test wait at their first phase (a test hook: no Ray starts); the test's runs, listed
    here, are cancelled at the end."""
    monkeypatch.setenv("DOGGOS_TEST_HOLD", f"listing={tmp_path / 'never'}")  # inherited by the driver
    started = []
    yield started
    for run_id in started:
        RunManager().cancel(run_id)


def test_run_update_fills_the_form_and_launches_a_run_that_reuses_the_old_one(runs_root, image_tree, tiny_clip,
                                                                              held_drivers):
    old = make_reusable(write_fake_run(runs_root, RUN_ID, source=str(image_tree[0]), model=tiny_clip), tiny_clip)
    at = open_page("pages/run.py", form_source="/data/other", form_model="/models/other")
    assert not [i for i in at.info if "Updating run" in i.value]  # a full run until asked
    at.button(key="update_run_confirm").click().run()
    assert at.text_input(key="form_source").value == str(image_tree[0])
    assert at.text_input(key="form_model").value == tiny_clip
    notes = [unescape_markdown(i.value) for i in at.info if "Updating run" in i.value]
    assert notes == [f"Updating run **{image_tree[0].name} · 1 Jan 12:00:00**: images whose bytes are unchanged are "
                     "carried over, only new or changed files are embedded."]
    button(at, "Full run instead").click().run()  # back to a full run, settings kept
    assert not [i for i in at.info if "Updating run" in i.value] and "form_reuse" not in at.session_state
    assert at.text_input(key="form_source").value == str(image_tree[0])

    at.button(key="update_run_confirm").click().run()
    button(at, "Launch run").click().run()
    assert not at.error, [e.value for e in at.error]
    new_id = at.session_state["watched_run"]
    held_drivers.append(new_id)
    assert new_id != RUN_ID
    config = json.loads((runs_root / new_id / "config.json").read_text())  # as RunManager.start wrote it
    assert config["reuse"] == str(old) and config["source"] == str(image_tree[0]) and config["model"] == tiny_clip
    assert not [i for i in at.info if "Updating run" in i.value]  # that update is started: the note goes


def test_run_update_of_a_run_that_cannot_be_reused_says_why_by_the_note(runs_root, image_tree, tiny_clip):
    write_fake_run(runs_root, RUN_ID, source=str(image_tree[0]), model=tiny_clip)  # no content hashes: made before
    at = open_page("pages/run.py")
    at.button(key="update_run_confirm").click().run()
    button(at, "Launch run").click().run()
    errors = [unescape_markdown(e.value) for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("**Updated run** (`reuse`): run 20250101-120000-0001 has no ")
    assert [run.id for run in RunManager().list()] == [RUN_ID]  # nothing started
    assert [i for i in at.info if "Updating run" in i.value]  # still updating, to fix or to clear


def test_run_resume_button_restarts_a_failed_run_in_its_folder(runs_root, image_tree, tiny_clip, held_drivers):
    run_id = "20250101-130000-0002"
    run = runs_root / run_id
    run.mkdir()
    (run / "config.json").write_text(json.dumps(RunConfig(source=str(image_tree[0]), model=tiny_clip,
                                                          output=str(run)).to_dict()))
    (run / "status.json").write_text(json.dumps({
        "state": "failed", "error": "the driver exited unexpectedly (killed by SIGKILL)",
        "created_at": "2025-01-01T13:00:00+00:00", "ended_at": "2025-01-01T13:05:00+00:00",
        "progress": {"found": 16, "embedded": 8, "phase": "embedding"}}))
    at = open_page("pages/run.py")
    assert any("Failed runs you can resume" in m.value for m in at.markdown)
    at.button(key=f"resume-{run_id}").click().run()
    held_drivers.append(run_id)
    assert not at.error, [e.value for e in at.error]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] in ("queued", "starting", "running"), status  # its driver goes on, held at listing
    assert [(a["error"], a["fraction"]) for a in status["attempts"]] == [
        ("the driver exited unexpectedly (killed by SIGKILL)", 0.5)]
    assert at.session_state["watched_run"] == run_id
    assert len(at.get("progress")) == 1  # the live view shows it
    assert not [b for b in at.button if b.key == f"resume-{run_id}"]


def test_run_resume_of_a_run_whose_source_is_gone_says_why(runs_root):
    write_failed_run(runs_root, "20250101-130000-0002")  # its source, /nowhere, does not exist
    at = open_page("pages/run.py")
    at.button(key="resume-20250101-130000-0002").click().run()
    errors = [unescape_markdown(e.value) for e in at.error]
    assert len(errors) == 1 and "cannot resume: source: /nowhere does not exist" in errors[0]
    assert RunManager().get("20250101-130000-0002").state == "failed"


def test_run_history_tells_how_an_updated_and_resumed_run_came_to_be(runs_root):
    write_fake_run(runs_root, RUN_ID)
    new = write_fake_run(runs_root, "20250102-120000-0002")
    manifest = read_manifest(RunDir(new))
    write_manifest(RunDir(new), dataclasses.replace(manifest, reused=20, embedded=7, dropped=2, reused_from=RUN_ID,
                                                    attempts=2))
    status = json.loads((new / "status.json").read_text())
    status["attempts"] = [{"ended_at": "2025-01-02T12:00:10+00:00", "error": "the driver exited unexpectedly",
                           "found": 28, "embedded": 4, "reused": 10, "fraction": 0.52}]
    (new / "status.json").write_text(json.dumps(status))
    at = open_page("pages/run.py", watched_run="20250102-120000-0002")
    table = at.dataframe[0].value
    assert list(table["story"]) == [f"update of {RUN_ID} · killed at 52 %, resumed · reused 20, embedded 7, dropped 2",
                                    ""]
    assert list(table["images"]) == [27, 27]
    outcome = [unescape_markdown(s.value) for s in at.success]
    assert outcome and "finished: 27 images (reused 20, embedded 7, dropped 2), 3 labels" in outcome[0]
