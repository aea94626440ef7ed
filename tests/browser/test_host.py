"""Host mode in a real browser: two participants' sessions on one server with a host password and the demo kit.

A participant picks a source from the host's list (no free text), deletes nothing and cancels only the run its own
session launched; a wrong password is refused; the right one makes the session the host. Runs are held at their first
phase (the DOGGOS_TEST_HOLD hook), so a cancel needs no embedding. Screenshots of the participant's and the host's Run
page go to the artifacts folder.
"""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import expect

from doggos.pipeline import demo
from doggos.pipeline.progress import HOLD_ENV
from doggos.runs import access

from .app_server import start_app
from .page_tools import SETTLE_MS, VIEWPORT, full_page_screenshot, page_title, settle, take_errors, watch

pytestmark = pytest.mark.browser

PASSWORD = "workshop-42"
CANCEL_TIMEOUT_MS = 60_000  # a held driver: SIGTERM, then its grace period before SIGKILL


@pytest.fixture(scope="module")
def workshop(tmp_path_factory, artifacts):
    """The app with a host password, the demo kit prepared beside its runs (the default allowed source), runs held."""
    home = tmp_path_factory.mktemp("workshop")
    # The kit (torch saves its model: seconds of CPU) is written while the server starts; the policy looks for it
    # on every rerun.
    kit = threading.Thread(target=demo.make_demo_kit, args=(home / "demo",), kwargs={"per_class": 2})
    kit.start()
    try:
        with pytest.MonkeyPatch.context() as patch:  # the server's environment is copied when it starts
            patch.setenv(access.PASSWORD_ENV, PASSWORD)
            patch.setenv(HOLD_ENV, f"listing={home / 'never'}")
            for name in (access.SOURCES_ENV, access.MODELS_ENV, access.MAX_CONCURRENCY_ENV):
                patch.delenv(name, raising=False)
            server = start_app(home, artifacts / "streamlit.log")
    finally:
        kit.join()
    assert (home / "demo" / demo.DEMO_MODEL_DIR).is_dir()
    try:
        yield server
    finally:
        from doggos.runs.manager import RunManager

        manager = RunManager(server.runs_dir)
        for run in manager.list():
            if run.active:
                manager.cancel(run.id)
        server.stop()


def session(browser, workshop):
    """A browser context of its own: a separate Streamlit session, as a second participant's laptop is."""
    context = browser.new_context(viewport=VIEWPORT, base_url=workshop.url)
    tab = watch(context.new_page())
    tab.goto("/")
    expect(page_title(tab, "Run")).to_be_visible(timeout=SETTLE_MS)
    settle(tab)
    yield tab
    late = take_errors(tab)
    context.close()
    assert not late, "the browser reported errors:\n" + "\n".join(late)


@pytest.fixture(scope="module")
def alice(browser, workshop):
    yield from session(browser, workshop)


@pytest.fixture(scope="module")
def bob(browser, workshop):
    yield from session(browser, workshop)


def badge(tab, text: str):
    return tab.get_by_test_id("stSidebar").get_by_text(re.compile(rf"{text}$"))  # after the icon's name


def test_a_participant_picks_a_source_from_a_list_and_sees_no_delete(alice, artifacts):
    expect(badge(alice, "Participant")).to_be_visible()
    expect(alice.get_by_role("combobox", name="Source")).to_be_visible()
    expect(alice.get_by_role("combobox", name="Source")).to_have_value(re.compile(r"/demo/digits$"))
    expect(alice.get_by_role("textbox", name="Source", exact=True)).to_have_count(0)
    expect(alice.get_by_role("textbox", name="Ray address", exact=True)).to_have_count(0)
    expect(alice.get_by_role("button", name="Prepare demo kit")).to_have_count(0)
    expect(alice.get_by_role("button", name="Delete a run…")).to_have_count(0)
    full_page_screenshot(alice, artifacts / "participant-run-page.png")


def test_a_wrong_host_password_is_refused(bob):
    bob.get_by_role("textbox", name="Host password").fill("guess")
    bob.get_by_role("button", name="Unlock").click()
    expect(bob.get_by_test_id("stSidebar").get_by_text("Wrong host password.")).to_be_visible(timeout=SETTLE_MS)
    settle(bob)
    expect(badge(bob, "Participant")).to_be_visible()


def test_a_participant_cancels_its_own_run_but_not_anothers(alice, bob, artifacts):
    alice.get_by_role("button", name="Launch run").click()
    expect(alice.get_by_role("button", name="Cancel run")).to_be_visible(timeout=SETTLE_MS)
    bob.reload()
    expect(page_title(bob, "Run")).to_be_visible(timeout=SETTLE_MS)
    expect(bob.get_by_text("from another browser session: only it or the host can cancel it")).to_be_visible(
        timeout=SETTLE_MS)
    expect(bob.get_by_role("button", name="Cancel run")).to_have_count(0)
    settle(bob)
    full_page_screenshot(bob, artifacts / "participant-sees-anothers-run.png")


def test_the_host_password_unlocks_full_control(bob, artifacts):
    settle(bob)  # a reload is a new session: a participant again
    bob.get_by_role("textbox", name="Host password").fill(PASSWORD)
    bob.get_by_role("button", name="Unlock").click()
    expect(badge(bob, "Host")).to_be_visible(timeout=SETTLE_MS)
    settle(bob)
    expect(bob.get_by_role("textbox", name="Source", exact=True)).to_be_visible()
    expect(bob.get_by_role("button", name="Cancel run")).to_be_visible(timeout=SETTLE_MS)  # anyone's run
    expect(bob.get_by_role("button", name="Prepare demo kit")).to_be_visible()
    full_page_screenshot(bob, artifacts / "host-run-page.png")


def test_the_participant_cancels_its_run_and_only_the_host_may_delete_it(alice, bob):
    alice.get_by_role("button", name="Cancel run").click()
    expect(alice.get_by_text("was cancelled; nothing was published")).to_be_visible(timeout=CANCEL_TIMEOUT_MS)
    settle(alice)
    expect(alice.get_by_role("button", name="Delete a run…")).to_have_count(0)
    # The host's page reruns once no run is active any more: the cancelled run is now one it may delete.
    expect(bob.get_by_role("button", name="Delete a run…")).to_be_visible(timeout=SETTLE_MS)
