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
DEMO_LIMIT = 60  # images: a limit samples evenly across the labels, so 6 of each of the kit's 10 digits
DEMO_LABELS = 10
RUN_TIMEOUT_MS = 300_000  # the demo run: Ray start, model load, 60 images, the default UMAP; ~45 s when idle
CANCEL_TIMEOUT_MS = 120_000  # SIGTERM, Ray shutdown, and the driver's grace period before SIGKILL

RUN_OUTCOME = re.compile(r"^Run .+ (finished: |failed: |was cancelled)")  # how the Run page says a run ended
LAYOUT = """() => {
    // The page's layout without its contents: the main column's blocks, down to the launch form, and its height.
    const main = document.querySelector('[data-testid="stMain"]');
    const column = main.querySelector('[data-testid="stVerticalBlock"]');
    const blocks = [];
    for (const child of column.children) {
        const box = child.getBoundingClientRect();
        blocks.push([child.dataset.testid || child.tagName, Math.round(box.x), Math.round(box.y + main.scrollTop),
                     Math.round(box.width), Math.round(box.height)]);
        if (child.querySelector('[data-testid="stForm"]')) break;
    }
    // The column's own height, not the main element's: a full-page screenshot stretches that to its viewport.
    return {height: Math.round(column.getBoundingClientRect().height), blocks: blocks,
            live: main.querySelectorAll('[data-testid="stProgress"], [data-testid="stMetric"]').length};
}"""
IMAGES_LOADED = "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(img => img.complete)"
WATCH_FINISH = """(layout) => {
    // From the first animation frame that shows the success banner on, the layout of every frame for 2.5 s: a
    // flash lasts ~0.8 s, too short for a poll from the test to be sure to catch.
    const measure = eval(layout);
    window.doggosFrames = [];
    const tick = () => {
        const banner = [...document.querySelectorAll('[data-testid="stAlertContentSuccess"]')]
            .some(alert => / finished: /.test(alert.innerText));
        if (banner && window.doggosBannerAt === undefined) window.doggosBannerAt = performance.now();
        if (window.doggosBannerAt !== undefined) {
            const since = performance.now() - window.doggosBannerAt;
            if (since > 2500) return;
            window.doggosFrames.push({ms: Math.round(since), ...measure()});
        }
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""
walk: dict[str, bool] = {}  # what earlier steps achieved, for the steps that build on them


def layout(page) -> dict:
    """Where the Run page's main blocks are (down to the form), how tall it is, how many live figures it shows."""
    return page.evaluate(LAYOUT)


def same_layout(a: dict, b: dict, slack_px: int = 100) -> bool:
    """The same blocks in the same places, no live figure left over; the height may differ by what comes below the
    form (the History and the menus update with the whole-page rerun that follows a run's end)."""
    return a["blocks"] == b["blocks"] and a["live"] == b["live"] == 0 and abs(a["height"] - b["height"]) <= slack_px


def flashed(frame: dict, settled: dict, slack_px: int = 100) -> bool:
    """A frame after the banner that shows what the settled page does not: a live figure left over, or a page taller
    than the settled one (the stale live view below the banner). The outcome being drawn (its links a frame after
    the banner: the page a little shorter for ~40 ms) is no flash."""
    return frame["live"] > 0 or frame["height"] > settled["height"] + slack_px


def images_loaded(page) -> None:
    """Wait until every image on the page has loaded."""
    page.wait_for_function(IMAGES_LOADED, timeout=SETTLE_MS)


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


def test_a_demo_run_shows_live_progress_then_succeeds(page, artifacts):
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
    page.evaluate(WATCH_FINISH, LAYOUT)
    full_page_screenshot(page, artifacts / "live-start.png")  # a start-up phase: its time so far
    # The live view mid-run: embedding, with Ray Data's operator cards (60 images on 2 cores: ~10 s of embedding,
    # refreshed each second).
    embedding = progress.filter(has_text=re.compile(r"embedding · [1-9]"))
    expect(embedding).to_be_visible(timeout=RUN_TIMEOUT_MS)
    full_page_screenshot(page, artifacts / "live-mid-run.png")
    expect(outcome).to_be_visible(timeout=RUN_TIMEOUT_MS)
    # No flash as the run ends: from the banner on, the page keeps its settled layout (the issue: the old live view,
    # greyed and squeezed into narrow columns, the page 6,000 px tall, for ~0.8 s).
    shots = [layout(page)]
    full_page_screenshot(page, artifacts / "finish-0ms.png")
    page.wait_for_timeout(200)
    shots.append(layout(page))
    full_page_screenshot(page, artifacts / "finish-200ms.png")
    expect(outcome).to_contain_text(re.compile(rf"finished: {DEMO_LIMIT} images, \d+ labels"))  # else it says why
    settle(page)
    expect(progress).to_have_count(0)
    settled = layout(page)
    full_page_screenshot(page, artifacts / "finish-settled.png")
    assert same_layout(shots[0], shots[1]), shots
    page.wait_for_function("() => performance.now() - window.doggosBannerAt > 2500")
    frames = page.evaluate("() => window.doggosFrames")
    assert len(frames) > 10, frames  # the browser drew frames all along
    flashes = [frame for frame in frames if flashed(frame, settled)]
    assert not flashes, (f"{len(flashes)} of {len(frames)} frames from {flashes[0]['ms']} to {flashes[-1]['ms']} ms "
                         f"after the banner show the old live view; the first: {flashes[0]} vs settled {settled}")
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
    expect(caption).to_contain_text(f"of {DEMO_LIMIT} from {DEMO_LABELS} labels")

    images_loaded(page)  # a rerun drops the last run's images: one still loading would 404
    page.get_by_role("combobox", name="Labels").click()
    for digit in ("one", "two", "three", "four", "five"):
        page.get_by_role("option", name=f"{digit} (6)").click()
    page.keyboard.press("Escape")  # close the open list, as a person would by clicking away
    expect(caption).to_contain_text("Images 1–30 of 30 from 5 labels ")
    settle(page)
    images_loaded(page)
    page.get_by_role("combobox", name="Per page").click()
    page.get_by_role("option", name="24", exact=True).click()
    expect(caption).to_contain_text("Images 1–24 of 30")
    settle(page)
    images_loaded(page)
    page.get_by_role("navigation", name="Pagination").get_by_role("button", name="Page 2").click()
    expect(caption).to_contain_text("Images 25–30 of 30")
    settle(page)

    page.get_by_role("button", name="View").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Full path")).to_be_visible(timeout=SETTLE_MS)
    expect(dialog.get_by_test_id("stCode")).to_contain_text(re.compile(r"/demo/digits/(one|two|three|four|five)/digit-\d+\.png"))
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
    warnings = []
    listen = lambda message: warnings.append(message.text) if message.type == "warning" else None  # noqa: E731
    page.on("console", listen)
    open_from_sidebar(page, "Run summary")
    for label, value in [("Images embedded", str(DEMO_LIMIT)), ("Labels", str(DEMO_LABELS)), ("Failed files", "0")]:
        named = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
        metric = page.get_by_test_id("stMetric").filter(has=named)
        expect(metric.get_by_test_id("stMetricValue")).to_have_text(value)
    values = page.get_by_test_id("stMetricValue")
    expect(values.first).to_be_visible()
    assert all(text.strip() for text in values.all_inner_texts()), values.all_inner_texts()  # every metric has a value
    expect(page.get_by_text("Operators over time")).to_be_visible()
    page.get_by_role("tab", name="Rows done").click()  # the hidden tab's chart draws too
    settle(page)
    page.remove_listener("console", listen)
    assert not [text for text in warnings if "Infinite extent" in text], warnings  # a chart of nothing: a note instead


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
