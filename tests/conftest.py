"""Shared fixtures: generated images, a tiny random CLIP saved with save_pretrained, one Ray per session."""

from __future__ import annotations

import os
import time

import pytest
from imagegen import write_image_tree

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub; this makes a miss fail at once
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# A served app would keep a warm Ray per runs root (doggos.runs.warm) that outlives each test; tests/test_warm_ray.py
# turns it on where it is the subject.
os.environ.setdefault("DOGGOS_WARM_RAY", "0")
os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # a Ray call without ray_session (or a run's Ray) fails, never starts one


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A randomly initialized CLIP (and its image processor) saved with save_pretrained, as a local folder."""
    from doggos.pipeline.demo import save_random_clip

    return str(save_random_clip(tmp_path_factory.mktemp("models") / "tiny-clip", preset="tiny"))


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_image_tree(root)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray costs seconds, so tests share it."""
    import ray
    import ray.data

    if not ray.is_initialized():
        # address="local": a private Ray, even while another (a test cluster, a user's) runs on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """An empty runs root that the app and RunManager() use by default (DOGGOS_RUNS_DIR)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("DOGGOS_RUNS_DIR", str(root))
    return root


def wait_for(condition, timeout_s: float = 60.0, poll_s: float = 0.1):
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {getattr(condition, '__name__', condition)}")
        time.sleep(poll_s)


@pytest.fixture
def every_run_goes_through_app_py(monkeypatch):
    """Make every AppTest run go through app.py, as the real server does.

    AppTest resets Streamlit's "app has a pages/ folder" flag before every run, so each run after a switch_page
    executes the page file alone, without app.py (the real server does that only for its very first request, which
    frame.start_page covers: see test_a_deep_link_opened_first_still_gets_the_frame). AppTest offers no public switch
    for this; the one seam is the function that runs a pages/-folder app.
    """
    import runpy

    from streamlit.runtime.scriptrunner import script_runner

    # As __main__, as the server runs it (app.py draws only then: see its end).
    monkeypatch.setattr(script_runner, "_mpa_v1",
                        lambda main_script_path: runpy.run_path(main_script_path, run_name="__main__"))
