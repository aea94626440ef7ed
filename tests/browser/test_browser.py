"""The app in a real browser: pages, deep links, a live demo run, filters, the dialog, a lasso, errors, cancel.

One server and one tab walk through the app in order, as a person would; each step is a test, so a failure names
its step. What AppTest cannot do is the point: follow a URL, draw with the mouse, see what the browser shows.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from .page_tools import (SETTLE_MS, VIEWPORT, assert_healthy, draw_lasso, full_page_screenshot, open_from_sidebar,
                         page_title, settle, sidebar_link, watch)

pytestmark = pytest.mark.browser

PAGES = ["Run", "Browse", "Map", "Run summary"]  # sidebar titles the walk relies on (the sidebar may hold more)
DEEP_LINKS = {"map": "Map", "browse": "Browse", "summary": "Run summary"}  # url path → the page's title
DEMO_LIMIT = 60  # images: the first 60 by path are 30 "eight" and 30 "five" (the kit writes 30 per digit)
RUN_TIMEOUT_MS = 300_000  # the demo run: Ray start, model load, 60 images, the default UMAP; ~45 s when idle
CANCEL_TIMEOUT_MS = 120_000  # SIGTERM, Ray shutdown, and the driver's grace period before SIGKILL

RUN_OUTCOME = re.compile(r"^Run .+ (finished: |failed: |was cancelled)")  # how the Run page says a run ended
walk: dict[str, bool] = {}  # what earlier steps achieved, for the steps that build on them


def needs(step: str) -> None:
    if not walk.get(step):
        pytest.skip(f"needs the step '{step}', which did not complete")


def test_every_page_in_the_sidebar_opens_on_a_fresh_app(page):
    page.goto("/")
    expect(page_title(page, "Run")).to_be_visible(timeout=SETTLE_MS)
    settle(page)
    navigation = page.get_by_role("navigation", name="App pages").aria_snapshot()
    titles = re.findall(r'link "([^"]+)"', navigation)  # accessible names: the icons' ligature text is left out
    assert set(PAGES) <= set(titles), titles
    for title in titles:  # each page's title is its sidebar entry
        open_from_sidebar(page, title)
    open_from_sidebar(page, "Run")


@contextmanager
def first_visit(browser, app, artifacts, path: str, shot: str):
    """Open `/path` as a new visitor's first URL (no session, no history), check the page and its frame, yield it.

    Its screenshot is taken on the way out, whatever happened, into `artifacts/<shot>.png`.
    """
    context = browser.new_context(viewport=VIEWPORT, base_url=app.url)
    tab = watch(context.new_page())
    try:
        tab.goto(f"/{path}")
        expect(page_title(tab, DEEP_LINKS[path])).to_be_visible(timeout=SETTLE_MS)
        settle(tab)
        expect(tab).to_have_url(re.compile(rf"/{path}$"))  # still at the link: not sent back to the Run page
        for title in PAGES:  # the frame app.py draws: the navigation and the sidebar below it
            expect(sidebar_link(tab, title)).to_be_visible()
        expect(tab.get_by_test_id("stSidebar").get_by_text("Runs folder:")).to_be_visible()
        yield tab
        settle(tab)
    finally:
        full_page_screenshot(tab, artifacts / f"{shot}.png")
        context.close()


@pytest.mark.parametrize("path", DEEP_LINKS)
def test_a_deep_link_opened_first_shows_the_page_in_its_frame(browser, app, artifacts, path):
    with first_visit(browser, app, artifacts, path, f"deep-link-fresh-{path}") as tab:
        expect(tab.get_by_text("No finished run yet. Start one on the Run page (the demo")).to_be_visible()


def test_a_demo_run_shows_live_progress_then_succeeds(page):
    open_from_sidebar(page, "Run")
    page.get_by_role("button", name="Prepare demo kit").click()
    expect(page.get_by_text("Demo kit ready")).to_be_visible(timeout=SETTLE_MS)
    settle(page)
    expect(page.get_by_role("textbox", name="Source", exact=True)).to_have_value(re.compile(r"/demo/digits$"))
    expect(page.get_by_role("textbox", name="Model", exact=True)).to_have_value(
        re.compile(r"/demo/clip-random-weights-tiny$"))
    page.get_by_role("textbox", name="Image limit", exact=True).fill(str(DEMO_LIMIT))
    page.get_by_role("button", name="Launch run").click()

    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text(f"/{DEMO_LIMIT} images embedded", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    assert_healthy(page)
    outcome = page.get_by_text(RUN_OUTCOME)
    expect(outcome).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(outcome).to_contain_text(f"finished: {DEMO_LIMIT} images, 2 labels")  # else it shows why it failed
    settle(page)
    expect(progress).to_have_count(0)
    expect(page.get_by_test_id("stSidebar").get_by_role("combobox", name="Current run")).to_be_visible()
    walk["run"] = True


DEEP_LINK_CONTENT = {  # url path → the test id of what the page draws for a finished run
    "map": "doggos-map", "browse": "stImage", "summary": "stMetric"}


@pytest.mark.parametrize("path", DEEP_LINKS)
def test_a_deep_link_opens_the_current_run(browser, app, artifacts, path):
    needs("run")
    with first_visit(browser, app, artifacts, path, f"deep-link-with-run-{path}") as tab:
        expect(tab.get_by_test_id(DEEP_LINK_CONTENT[path]).first).to_be_visible(timeout=SETTLE_MS)
        expect(tab.get_by_test_id("stSidebar").get_by_role("combobox", name="Current run")).to_be_visible()


def test_browse_filters_pages_and_views_an_image(page):
    needs("run")
    open_from_sidebar(page, "Browse")
    caption = page.get_by_role("paragraph").filter(has_text="press View")
    expect(caption).to_contain_text(f"of {DEMO_LIMIT} from 2 labels")

    page.get_by_role("combobox", name="Labels").click()
    page.get_by_role("option", name="five (30)").click()
    page.keyboard.press("Escape")  # close the open list, as a person would by clicking away
    expect(caption).to_contain_text("Images 1–30 of 30 from 1 label ")
    settle(page)
    page.get_by_role("combobox", name="Per page").click()
    page.get_by_role("option", name="24", exact=True).click()
    expect(caption).to_contain_text("Images 1–24 of 30")
    settle(page)
    page.get_by_role("navigation", name="Pagination").get_by_role("button", name="Page 2").click()
    expect(caption).to_contain_text("Images 25–30 of 30")
    settle(page)

    page.get_by_role("button", name="View").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Full path")).to_be_visible(timeout=SETTLE_MS)
    expect(dialog.get_by_test_id("stCode")).to_contain_text(re.compile(r"/demo/digits/five/digit-\d+\.png"))
    settle(page)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_a_lasso_on_the_map_lists_the_selected_images(page):
    needs("run")
    open_from_sidebar(page, "Map")
    chart = page.get_by_test_id("doggos-map")
    # The run computed the default map: no waiting for UMAP here.
    expect(chart).to_have_attribute("data-state", "ready", timeout=SETTLE_MS)
    expect(page.get_by_text(f"{DEMO_LIMIT} points")).to_be_visible()
    chart.get_by_role("button", name="Lasso", exact=True).click()
    draw_lasso(page, page.get_by_test_id("doggos-map-canvas"))

    heading = page.get_by_role("heading", name=re.compile(r"^\d+ selected images?$"))
    expect(heading).to_be_visible(timeout=SETTLE_MS)
    settle(page)
    selected = int(heading.inner_text().split()[0])
    assert 0 < selected <= DEMO_LIMIT
    expect(page.get_by_role("button", name="Clear selection")).to_be_visible()
    # The page's one warning is by design (the demo model has random weights); any other is Streamlit's complaint.
    warnings = page.get_by_test_id("stAlertContentWarning").all_inner_texts()
    assert all("random weights" in text for text in warnings), warnings


def test_the_run_summary_shows_its_metrics(page):
    needs("run")
    open_from_sidebar(page, "Run summary")
    for label, value in [("Images embedded", str(DEMO_LIMIT)), ("Labels", "2"), ("Failed files", "0")]:
        named = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
        metric = page.get_by_test_id("stMetric").filter(has=named)
        expect(metric.get_by_test_id("stMetricValue")).to_have_text(value)
    values = page.get_by_test_id("stMetricValue")
    expect(values.first).to_be_visible()
    assert all(text.strip() for text in values.all_inner_texts()), values.all_inner_texts()  # every metric has a value


def test_a_bad_launch_shows_every_field_error_at_once(page):
    needs("run")  # the demo kit filled the form's source and model
    open_from_sidebar(page, "Run")
    page.get_by_role("textbox", name="Batch size", exact=True).fill("0")
    page.get_by_role("textbox", name="Concurrency", exact=True).fill("abc")
    page.get_by_role("button", name="Launch run").click()
    form_errors = page.get_by_test_id("stForm").get_by_test_id("stAlertContentError")
    expect(form_errors.filter(has_text="batch_size")).to_be_visible(timeout=SETTLE_MS)
    settle(page)
    expect(form_errors.filter(has_text="concurrency")).to_be_visible()
    expect(page.get_by_test_id("stProgress")).to_have_count(0)  # nothing started


def test_cancel_stops_a_running_run(page):
    needs("run")
    open_from_sidebar(page, "Run")
    for field in ["Batch size", "Concurrency", "Image limit"]:  # back to the defaults: the whole kit, 300 images
        page.get_by_role("textbox", name=field, exact=True).fill("")
    page.get_by_role("button", name="Launch run").click()
    # Cancel once the driver has listed the files and started Ray: a run that is really running, workers and all.
    expect(page.get_by_test_id("stProgress")).to_contain_text(
        re.compile(r"(starting ray|loading model|embedding) · \d+/\d+ images embedded"), timeout=RUN_TIMEOUT_MS)
    page.get_by_role("button", name="Cancel run").click()

    outcome = page.get_by_text(RUN_OUTCOME)
    expect(outcome).to_be_visible(timeout=CANCEL_TIMEOUT_MS)
    expect(outcome).to_contain_text("was cancelled; nothing was published")
    settle(page)
    history = page.get_by_test_id("stDataFrame")
    # The grid draws on a canvas; its accessible table (visually hidden) carries the cells' text.
    states = history.get_by_role("gridcell", include_hidden=True)
    expect(states.filter(has_text=re.compile(r"cancelled$"))).to_have_count(1, timeout=SETTLE_MS)
    expect(states.filter(has_text=re.compile(r"succeeded$"))).to_have_count(1)
