"""dashboard.ui: the pages' non-drawing helpers (escaping, form errors, paging, selections, history), no Streamlit."""

from __future__ import annotations

import os

from _dashboard_fixtures import unescape_markdown, write_failed_run, write_fake_run

from dashboard import ui
from doggos.runs.manager import RunManager

RUN_ID = "20250101-120000-0001"


def test_markdown_literal_escapes_everything_markdown_or_streamlit_would_interpret():
    text = '<b>bold</b> *x* _y_ `c` [l](u) $m$ :dog: :red[r] # h | t ~s~ \\ "q" \'a\' 🐶'
    escaped = ui.markdown_literal(text)
    assert unescape_markdown(escaped) == text
    for token in ("<b>", "*x*", "_y_", "`c`", "[l](u)", "$m$", ":dog:", ":red[", "~s~"):
        assert token not in escaped
    assert ui.markdown_literal("two\nlines") == "two lines"
    # Only emoji shortcodes get an invisible space: times, paths and messages copy exactly as shown.
    for plain in ("12:44:56", "2 cores: each", "s3://bucket/a b.jpg", "device: cuda"):
        assert "\u200b" not in ui.markdown_literal(plain) and unescape_markdown(ui.markdown_literal(plain)) == plain


def test_page_slice_clamps_to_the_last_page():
    assert ui.page_count(0, 48) == 1 and ui.page_count(97, 48) == 3
    assert ui.page_slice(97, 3, 48) == slice(96, 97)
    assert ui.page_slice(97, 9, 48) == slice(96, 97)
    assert ui.page_slice(10, 0, 48) == slice(0, 10)


class _Manager:
    def __init__(self, error=None):
        self.error, self.started = error, []

    def start(self, config, by=None):
        if self.error:
            raise self.error
        self.started.append(config)
        return "run-1"


def test_launch_maps_every_error_to_its_form_field(image_tree, tiny_clip):
    from doggos.base.config import ConfigError
    from doggos.pipeline.models import ModelError
    from doggos.pipeline.sources import SourceError

    good = {"source": str(image_tree[0]), "model": tiny_clip}
    assert ui.launch(_Manager(), {**good, "source": ""}).errors == {"source": "is required (got an empty value)"}
    assert set(ui.launch(_Manager(), {**good, "limit": "abc"}).errors) == {"limit"}
    assert ui.launch(_Manager(SourceError("/x does not exist")), good).errors == {"source": "/x does not exist"}
    assert ui.launch(_Manager(ModelError("offline")), good).errors == {"model": "offline"}
    assert ui.launch(_Manager(OSError("disk full")), good).errors == {"": "the run could not be started: disk full"}
    assert ui.launch(_Manager(ConfigError("output", "read-only")), good).errors == {"": "output: read-only"}
    manager = _Manager()
    result = ui.launch(manager, {**good, "device": "cpu", "batch_size": "4", "concurrency": ""})
    assert result.run_id == "run-1" and manager.started[0].batch_size == 4 and manager.started[0].concurrency is None


def test_launch_shows_every_form_error_at_once_and_starts_nothing(image_tree, tiny_clip):
    manager = _Manager()
    result = ui.launch(manager, {"source": str(image_tree[0]), "model": tiny_clip, "batch_size": "0",
                                 "concurrency": "abc"})
    assert result.errors == {"batch_size": "must be at least 1 (got 0)",
                             "concurrency": "must be a whole number (got 'abc')"}
    assert result.run_id is None and manager.started == []


def test_launch_runs_the_checks_a_bad_setting_does_not_touch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    result = ui.launch(_Manager(), {"source": str(tmp_path / "missing"), "model": "openai/clip-vit-base-patch32",
                                    "batch_size": "0"})
    assert set(result.errors) == {"batch_size", "source", "model"}
    assert "does not exist" in result.errors["source"] and "Hugging Face cache" in result.errors["model"]


def test_launch_gathers_every_problem_the_run_manager_finds(image_tree, tiny_clip):
    from doggos.base.config import ConfigError, ConfigErrors
    from doggos.pipeline.sources import SourceError

    refusal = ConfigErrors([SourceError("gone"), ConfigError("ray_address", "nothing listens"),
                            ConfigError("output", "read-only")])
    errors = ui.launch(_Manager(refusal), {"source": str(image_tree[0]), "model": tiny_clip}).errors
    assert errors == {"source": "gone", "ray_address": "nothing listens", "": "output: read-only"}


def test_ui_advice_points_to_the_button_once_and_renders_as_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    errors = ui.launch(_Manager(), {"source": str(tmp_path / "no *such* folder"),
                                    "model": "openai/clip-vit-base-patch32", "limit": "0"}).errors
    texts = {name: ui.field_error_text(name, message) for name, message in errors.items()}
    advised = [name for name, text in texts.items() if "Prepare demo kit" in text]
    assert len(advised) == 1  # the source and the model both call for the kit: said once
    text = texts[advised[0]]
    assert "Press **Prepare demo kit** above" in text  # bold as Markdown renders it, not escaped
    assert "*such*" not in text and "no \\*such\\* folder" in text  # the message itself stays escaped
    assert not any("python -m doggos" in t or "`python" in t for t in texts.values())  # no command-line advice here


def test_field_error_text_names_the_field_and_escapes_the_message():
    text = ui.field_error_text("batch_size", "must be a whole number (got '*x*')")
    assert text.startswith("**Batch size** (`batch_size`): ") and "*x*" not in text
    advised = ui.field_error_text("limit", ui.FieldMessage("bad", "Press **Here**."))
    assert advised == "**Image limit** (`limit`): bad. Press **Here**."


def test_history_rows_and_choice_labels(runs_root):
    write_fake_run(runs_root, RUN_ID)
    write_failed_run(runs_root)
    runs = RunManager().list()
    rows = ui.history_rows(runs)
    assert [r["id"] for r in rows] == ["20250101-130000-0002", RUN_ID]
    assert [r["run"] for r in rows] == ["nowhere · 1 Jan 13:00:00", "dogs · 1 Jan 12:00:00"]  # source folder · time
    assert rows[1]["images"] == 27 and rows[1]["failed"] == 1 and rows[1]["duration"] == "30 s"
    assert rows[0]["state"].endswith("failed") and rows[0]["error"] == "every image failed"
    assert rows[0]["labels"] == "" and rows[0]["images/s"] == ""  # nothing to say, not "None"
    assert rows[1]["story"] == ""  # a plain run has none (test_run_page.py shows an updated, resumed one's)
    assert ui.run_choice_label(runs[1]) == "dogs · 1 Jan 12:00:00 · 27 images"


def test_demo_kit_folder_sits_beside_the_runs_root(tmp_path):
    assert ui.demo_kit_folder(tmp_path / "runs") == tmp_path / "demo"


def test_machine_summary_reads_the_gpus_and_whether_torch_can_use_them(tmp_path):
    gpus = tmp_path / "gpus"
    (gpus / "0000:01:00.0").mkdir(parents=True)
    (gpus / "0000:01:00.0" / "information").write_text("Model: \t NVIDIA H100 80GB HBM3\nIRQ: 42\n")
    cuda = ui.machine_summary(gpus, torch_version="2.13.0+cu128")
    assert cuda["gpus"] == 1 and cuda["cuda_usable"] and "1 NVIDIA GPU: NVIDIA H100 80GB HBM3" in cuda["text"]
    cpu_build = ui.machine_summary(gpus, torch_version="2.13.0+cpu")
    assert not cpu_build["cuda_usable"] and "(CPU-only build)" in cpu_build["text"]
    none = ui.machine_summary(tmp_path / "no-driver", torch_version="2.13.0+cu128")
    assert none["gpus"] == 0 and not none["cuda_usable"] and "no CUDA GPU" in none["text"]
    assert none["cpus"] == os.cpu_count() and f"{os.cpu_count()} CPU cores" in none["text"]


def test_machine_summary_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from dashboard import ui; ui.machine_summary(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_detail_width_enlarges_small_images_a_little_and_never_shrinks_big_ones():
    assert ui.detail_width((96, 96)) == 288  # at most 3x
    assert ui.detail_width((168, 224)) == 240  # longest side to 320
    assert ui.detail_width((768, 384)) == 768
    assert ui.detail_width((0, 0)) == "content"


def test_plain_log_drops_terminal_colour_codes():
    assert ui.plain_log("\x1b[36m(MapWorker pid=1)\x1b[0m Loading\n") == "(MapWorker pid=1) Loading\n"


def test_format_duration():
    # under 10 s a tenth shows (the one formatter, doggos.base.units.duration; its own tests: tests/test_units.py)
    assert [ui.format_duration(s) for s in (None, 4.4, 75, 3725)] == ["–", "4.4 s", "1 min 15 s", "1 h 02 min"]


def test_update_form_values_fill_the_form_with_the_run_and_its_folder_and_launch_passes_it(runs_root, image_tree,
                                                                                           tiny_clip):
    from doggos.base.config import ConfigError

    write_fake_run(runs_root, RUN_ID)
    run = RunManager().get(RUN_ID)
    values = ui.update_form_values(run)
    assert values["form_reuse"] == str(runs_root / RUN_ID)
    assert values["form_source"] == "/data/dogs" and values["form_model"] == "/models/clip-random-weights-tiny"
    assert "form_reuse" not in ui.form_values_of(run.config)  # restoring settings never restores an update
    note = unescape_markdown(ui.update_note(values["form_reuse"], [run]))
    assert note.startswith("Updating run **dogs · 1 Jan 12:00:00**: images whose bytes are unchanged are carried over")
    assert "**/gone/run**" in unescape_markdown(ui.update_note("/gone/run", [run]))  # a run not listed: its folder

    good = {"source": str(image_tree[0]), "model": tiny_clip}
    manager = _Manager()
    assert ui.launch(manager, {**good, "reuse": "/runs/old"}).run_id == "run-1"
    assert ui.launch(manager, {**good, "reuse": ""}).run_id == "run-1"
    assert [config.reuse for config in manager.started] == ["/runs/old", None]
    errors = ui.launch(_Manager(ConfigError("reuse", "no run folder '/runs/old'")), good).errors
    assert errors == {"reuse": "no run folder '/runs/old'"}
    assert ui.field_error_text("reuse", errors["reuse"]).startswith("**Updated run** (`reuse`): no run folder")


def test_rows_text_and_live_metrics_show_reused_rows_only_when_there_are_some(runs_root):
    import dataclasses

    from doggos.base.records import Progress

    write_fake_run(runs_root, RUN_ID)
    plain = RunManager().get(RUN_ID).manifest
    assert ui.rows_text(plain) == "27 images"
    updated = dataclasses.replace(plain, reused=20, embedded=7, reused_from="20241231-000000-0000")
    assert ui.rows_text(updated) == "27 images (reused 20, embedded 7)"
    dropped = dataclasses.replace(updated, dropped=1_203)
    assert ui.rows_text(dropped) == "27 images (reused 20, embedded 7, dropped 1,203)"

    live = Progress(found=2_880, embedded=1_383, reused=1_497, images_per_s=8.0, run_images_per_s=6.5, eta_s=0.0,
                    phase="embedding")
    assert ui.live_metrics(live) == {"Embedded": "1,383 / 2,880", "Reused": "1,497", "Images/s · last 5 s": "8.0",
                                     "Images/s · start to Parquet": "6.5", "ETA": "0 s", "Failed files": "0"}
    assert list(ui.live_metrics(dataclasses.replace(live, reused=0))) == [
        "Embedded", "Images/s · last 5 s", "Images/s · start to Parquet", "ETA", "Failed files"]
    caption = "embedding · 1,383/2,880 images embedded · 1,497 reused · 8.0 images/s (last 5 s) · ETA 0 s"
    assert ui.progress_caption(live) == caption


def test_resume_says_why_a_run_cannot_resume_and_starts_nothing(runs_root):
    write_fake_run(runs_root, RUN_ID)
    write_failed_run(runs_root)  # its source, /nowhere, does not exist
    manager = RunManager()
    assert ui.resume(manager, RUN_ID).startswith(f"run {RUN_ID} succeeded: there is nothing to resume")
    assert ui.resume(manager, "20250101-130000-0002").startswith("source: /nowhere does not exist")
    assert [run.state for run in manager.list()] == ["failed", "succeeded"]
    assert manager.get("20250101-130000-0002").status.attempts == ()


def test_two_runs_that_read_the_same_get_their_ids_in_the_picker(runs_root):
    """Two runs of one source started in the same second: a select box sends back the option's text, so identical
    texts would make the newer run impossible to pick."""
    write_fake_run(runs_root, RUN_ID)
    write_fake_run(runs_root, RUN_ID + "b")
    write_fake_run(runs_root, "20250102-120000-0003")
    runs = {run.id: run for run in RunManager().list()}
    labels = ui.run_choice_labels(runs)
    assert len(set(labels.values())) == 3
    assert labels[RUN_ID] == f"dogs · 1 Jan 12:00:00 · 27 images · {RUN_ID}"
    assert labels["20250102-120000-0003"] == "dogs · 2 Jan 12:00:00 · 27 images"  # unique: no id


def test_the_live_fragment_reruns_the_page_only_once_the_outcome_is_on_screen():
    """The flash of issue 25: a whole-page rerun asked for in the tick that draws a run's outcome drops that drawing,
    and the stale live view comes back for the length of the rerun."""
    from types import SimpleNamespace

    won = SimpleNamespace(id="r1", state="succeeded")
    lost = SimpleNamespace(id="r1", state="failed")
    assert ui.after_live_tick(active=True, was_active=True, watched=won, outcome_shown=None) == (False, False)
    assert ui.after_live_tick(False, True, won, outcome_shown=None) == (False, False)  # this tick draws the outcome
    assert ui.after_live_tick(False, True, won, outcome_shown="r1") == (True, True)  # the next reruns, makes it current
    assert ui.after_live_tick(False, True, lost, outcome_shown="r1") == (True, False)
    assert ui.after_live_tick(False, True, None, outcome_shown=None) == (True, False)  # nothing watched: at once
    assert ui.after_live_tick(False, False, won, outcome_shown="r1") == (False, False)  # the page already knows
