"""Browser tier fixtures: the app served by `streamlit run`, Debian's Chromium driven by Playwright, screenshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from .app_server import start_app
from .page_tools import CHROMIUM, LAUNCH_FLAGS, VIEWPORT, full_page_screenshot, take_errors, watch

# Screenshots and the server's log; CI or a person may point it elsewhere.
ARTIFACTS = Path(os.environ.get("DOGGOS_BROWSER_ARTIFACTS") or Path(__file__).parent / "artifacts")
_failed_dirs: set[Path] = set()  # artifact folders to point at in the summary


@pytest.fixture(scope="module")
def artifacts(request) -> Path:
    """A fresh folder per test module for its screenshots and the server's log."""
    folder = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory, artifacts):
    """The dashboard served by `streamlit run app.py`, runs in a temp folder; active runs are cancelled after."""
    server = start_app(tmp_path_factory.mktemp("browser-app"), artifacts / "streamlit.log")
    try:
        yield server
    finally:
        from doggos.runs.manager import RunManager

        manager = RunManager(server.runs_dir)
        for run in manager.list():
            if run.active:  # a run left behind by a failed step: its detached driver would outlive the tests
                manager.cancel(run.id)
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium (never a downloaded one) under Playwright's sync API.

    Without /usr/bin/chromium the tier is skipped on a developer's machine and fails in CI (`.ci/run` installs it).
    The playwright package itself comes with requirements.txt: without it, collecting the tier fails loudly.
    """
    if not Path(CHROMIUM).exists():
        missing = f"browser tier: {CHROMIUM} is missing (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary user-data dir and deletes it on close.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, app):
    """One tab for the whole walk (state carries from step to step, as for a person), its errors watched."""
    context = browser.new_context(viewport=VIEWPORT, base_url=app.url)
    tab = watch(context.new_page())
    yield tab
    late = take_errors(tab)  # each step's settle() checks; this catches what came after the last one
    context.close()
    assert not late, "the browser reported errors after the last step:\n" + "\n".join(late)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """After each step, a full-page screenshot of the walk's tab; on failure, where the screenshots are."""
    report = yield
    folder = item.funcargs.get("artifacts")
    if report.when != "call" or folder is None or item.get_closest_marker("browser") is None:
        return report
    # The walk's tab (or the Map module's); a first-visit test screenshots its own tab itself.
    tab = item.funcargs.get("page") or item.funcargs.get("map_page")
    if tab is not None:
        steps = [other for other in item.session.items if other.parent is item.parent]
        name = f"{steps.index(item) + 1:02d}-{item.name}{'-FAILED' if report.failed else ''}.png"
        if full_page_screenshot(tab, folder / name) is None:
            report.sections.append(("browser artifacts", f"the screenshot {name} could not be taken"))
    if report.failed:
        _failed_dirs.add(folder)
        report.sections.append(("browser artifacts", f"screenshots of every step and the server's log: {folder}"))
        _add_run_logs(report, item.funcargs.get("app"))
    return report


def _add_run_logs(report, server) -> None:
    """The tails of every run's log and output: CI's printed report may be all a reader of a red build gets."""
    if server is None:
        return
    from doggos.runs.manager import RunManager

    manager = RunManager(server.runs_dir)
    for run in manager.list():
        for output in (False, True):
            name = "output.txt" if output else "log.txt"
            text = manager.log_tail(run.id, lines=25, output=output) or "(empty)"
            report.sections.append((f"run {run.id} ({run.state}): {name}", text))


def pytest_terminal_summary(terminalreporter):
    for folder in sorted(_failed_dirs):
        terminalreporter.write_line(f"browser tier failed: screenshots and the server's log are in {folder}", red=True)
