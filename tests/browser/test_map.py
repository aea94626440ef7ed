"""The Map in a real Chromium: hover shows the stored thumbnail, zooming in turns points into images, a click opens the
image dialog and closing it keeps the view, lasso and box select, the legend hides labels, and tiny or damaged runs
still draw. Runs are written straight to the app's runs folder (no Ray): the browser, the routes and the component
are what is tested here."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import expect

from _dashboard_fixtures import damage_thumbnails, precompute_map, precompute_quality, write_fake_run
from doggos.base import store

from .page_tools import SETTLE_MS, draw_lasso, settle

pytestmark = pytest.mark.browser

BIG = "20250103-000000-0003"  # the newest: the app opens it
PAIR = "20250102-000000-0002"
SOLO = "20250101-000000-0001"
LABELS = {f"breed {n}": 300 for n in range(4)}  # 1,200 points: dots until zoomed in (≤ 300 in view: images)


@pytest.fixture(scope="module")
def runs(app):
    solo = write_fake_run(app.runs_dir, SOLO, labels={"solo": 1}, failures=[])
    pair = write_fake_run(app.runs_dir, PAIR, labels={"pair": 2}, failures=[], files=1)
    damage_thumbnails(pair, {0: b"not a jpeg", 1: None})
    big = write_fake_run(app.runs_dir, BIG, labels=LABELS, files=3, failures=[])
    for run in (solo, pair, big):
        precompute_map(run)
    precompute_quality(big)
    return {"solo": solo, "pair": pair, "big": big}


@pytest.fixture(scope="module")
def map_page(browser, app, runs):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=app.url)
    tab = context.new_page()
    from .page_tools import watch

    watch(tab)
    tab.goto("/map")
    yield tab
    context.close()


def chart(page):
    return page.get_by_test_id("doggos-map")


def ready(page) -> None:
    expect(chart(page)).to_have_attribute("data-state", "ready", timeout=SETTLE_MS)
    settle(page)
    page.get_by_test_id("doggos-map-canvas").scroll_into_view_if_needed()


def screen_of(page, row: int) -> dict:
    return chart(page).evaluate("(el, row) => el.doggosMap.screenOf(row)", row)


def view(page) -> dict:
    return chart(page).evaluate("el => el.doggosMap.view()")


def hover(page, row: int):
    """Hover a point the way a person does (the pointer travels there), and return the card once its image shows."""
    spot = screen_of(page, row)
    page.mouse.move(spot["x"] - 40, spot["y"] - 40)
    page.mouse.move(spot["x"], spot["y"], steps=4)
    card = page.get_by_test_id("doggos-map-card")
    image = card.locator("img")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return card


def shown_bytes(page, image) -> bytes:
    """The bytes behind an <img> as the page got them (the browser's cache answers: no second request is made)."""
    data = image.evaluate("""async img => Array.from(new Uint8Array(await (await fetch(img.src)).arrayBuffer()))""")
    return bytes(data)


def select_run(page, run_id: str, points: int) -> None:
    """Make `run_id` the current run, and wait for its map (the old run's map may still be on screen a moment)."""
    box = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Current run")
    box.click()
    page.get_by_role("option").filter(has_text=re.compile(r"dogs · ")).nth(
        [BIG, PAIR, SOLO].index(run_id)).click()  # the picker lists runs newest first
    # For a moment both maps are on the page: the new one loading, the old one about to go.
    expect(page.locator(f'[data-testid="doggos-map"][data-points="{points}"]')).to_be_visible(timeout=SETTLE_MS)
    expect(chart(page)).to_have_count(1, timeout=SETTLE_MS)
    ready(page)


def test_hover_shows_the_points_stored_thumbnail_label_and_file(map_page, runs):
    ready(map_page)
    assert chart(map_page).get_attribute("data-points") == "1200"
    assert chart(map_page).get_attribute("data-images") == "0"  # 1,200 in view: dots
    card = hover(map_page, 123)
    image = card.locator("img")
    row = int(image.get_attribute("data-row"))  # the point under the pointer (a neighbour may be drawn on top)
    index = store.load_index(runs["big"])
    expect(card).to_contain_text(index.name[row])
    assert image.get_attribute("alt") == index.label[row]
    stored = store.load_thumbnails(runs["big"], [row])[0]
    assert hashlib.sha256(shown_bytes(map_page, image)).hexdigest() == hashlib.sha256(stored).hexdigest()


def test_zooming_in_turns_points_into_their_images_and_out_again(map_page, runs, artifacts):
    ready(map_page)
    spot = screen_of(map_page, 10)  # inside the first label's cluster
    map_page.mouse.move(spot["x"], spot["y"])
    for _ in range(40):
        if int(chart(map_page).get_attribute("data-images")) > 0:
            break
        map_page.mouse.wheel(0, -240)
        map_page.wait_for_timeout(50)  # one animation frame per wheel step, as a person's scrolling is paced
    images = chart(map_page).locator("img.dg-thumb")
    count = int(chart(map_page).get_attribute("data-images"))
    assert 0 < count <= 300 and images.count() == count
    assert int(chart(map_page).get_attribute("data-in-view")) == count
    index = store.load_index(runs["big"])
    first = images.first
    row = int(first.get_attribute("data-row"))
    expect(first).to_have_attribute("src", re.compile(rf"/doggos/runs/{BIG}/thumbnails/{row}\.jpg"))
    assert first.get_attribute("alt") == index.label[row]
    map_page.wait_for_function("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)",
                               arg=images.element_handles())
    map_page.screenshot(path=artifacts / "map-zoomed-to-images.png")
    chart(map_page).get_by_role("button", name="Reset view").click()
    expect(chart(map_page)).to_have_attribute("data-images", "0")
    expect(images).to_have_count(0)


def test_a_click_opens_the_image_dialog_and_closing_it_keeps_the_view(map_page, runs):
    ready(map_page)
    spot = screen_of(map_page, 700)
    map_page.mouse.move(spot["x"], spot["y"])
    for _ in range(6):
        map_page.mouse.wheel(0, -240)
        map_page.wait_for_timeout(50)
    before = view(map_page)
    spot = screen_of(map_page, 700)
    row = chart(map_page).evaluate("(el, s) => el.doggosMap.rowAt(s.x, s.y)", spot)
    map_page.mouse.click(spot["x"], spot["y"])  # in Pan, the mode the map opens in
    dialog = map_page.get_by_role("dialog")
    expect(dialog.get_by_test_id("stCode")).to_have_text(store.load_index(runs["big"]).path[row], timeout=SETTLE_MS)
    expect(dialog.get_by_text(re.compile(r"^Nearest neighbours"))).to_be_visible()
    expect(dialog.get_by_role("button", name="More like this")).to_be_visible()
    settle(map_page)
    map_page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    settle(map_page)
    assert view(map_page) == before


def test_lasso_and_box_select_grey_the_rest_and_list_the_selection(map_page):
    ready(map_page)
    chart(map_page).get_by_role("button", name="Reset view").click()
    chart(map_page).get_by_role("button", name="Lasso", exact=True).click()
    draw_lasso(map_page, map_page.get_by_test_id("doggos-map-canvas"), fill=0.9)
    heading = map_page.get_by_role("heading", name=re.compile(r"^[\d,]+ selected images?$"))
    expect(heading).to_be_visible(timeout=SETTLE_MS)
    settle(map_page)
    selected = int(heading.inner_text().split()[0].replace(",", ""))
    assert 0 < selected <= 1200
    expect(chart(map_page)).to_have_attribute("data-selected", str(selected))
    expect(map_page.get_by_role("button", name="Download CSV")).to_be_visible()

    chart(map_page).get_by_role("button", name="Box", exact=True).click()
    box = map_page.get_by_test_id("doggos-map-canvas").bounding_box()
    map_page.mouse.move(box["x"] + 3, box["y"] + 3)
    map_page.mouse.down()
    map_page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] - 3, steps=8)
    map_page.mouse.up()
    expect(heading).to_have_text("1,200 selected images", timeout=SETTLE_MS)  # the whole map: every point
    settle(map_page)
    expect(chart(map_page)).to_have_attribute("data-selected", "1200")

    map_page.get_by_role("button", name="Clear selection").click()
    expect(heading).to_be_hidden(timeout=SETTLE_MS)
    expect(chart(map_page)).to_have_attribute("data-selected", "0")
    settle(map_page)
    chart(map_page).get_by_role("button", name="Pan", exact=True).click()


def test_the_legend_hides_a_label_and_shows_one_alone(map_page):
    ready(map_page)
    chart(map_page).get_by_role("button", name="Reset view").click()
    legend = chart(map_page).locator(".dg-legend")
    legend.get_by_role("button", name=re.compile(r"^breed 0")).click()
    expect(chart(map_page)).to_have_attribute("data-in-view", "900")
    legend.get_by_role("button", name=re.compile(r"^breed 2")).dblclick()
    expect(chart(map_page)).to_have_attribute("data-in-view", "300")
    legend.get_by_role("button", name=re.compile(r"^breed 2")).dblclick()  # alone already: everything back
    expect(chart(map_page)).to_have_attribute("data-in-view", "1200")


def test_label_agreement_colours_and_the_hover_verdict(map_page):
    ready(map_page)
    colour_by = map_page.get_by_test_id("stButtonGroup").filter(has_text="Label agreement")
    colour_by.get_by_text("Label agreement", exact=True).click()
    expect(chart(map_page).get_by_text("Neighbour agreement")).to_be_visible(timeout=SETTLE_MS)
    ready(map_page)
    expect(hover(map_page, 5)).to_contain_text(re.compile(r"agreement \d+ %"))
    colour_by.get_by_text("Label", exact=True).click()
    expect(chart(map_page).get_by_text("Neighbour agreement")).to_be_hidden(timeout=SETTLE_MS)
    settle(map_page)


def test_a_map_of_two_points_with_damaged_thumbnails_draws_placeholders(map_page):
    select_run(map_page, PAIR, points=2)
    assert chart(map_page).get_attribute("data-images") == "2"  # few enough: drawn as images at once
    image = hover(map_page, 0).locator("img")
    assert shown_bytes(map_page, image) == store.placeholder()


def test_a_map_of_one_point_draws(map_page, artifacts):
    select_run(map_page, SOLO, points=1)
    hover(map_page, 0)
    map_page.screenshot(path=artifacts / "map-one-point.png")


def test_the_components_javascript_reads_the_buffer_python_packs(browser):
    """map.js's own functions, run in Chromium on a buffer made by map_payload.pack: the format agrees on both
    sides, the grid index holds every point once in its cell, and the lasso's point-in-polygon test is right."""
    import base64
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from doggos.explore import map_payload

    rng = np.random.default_rng(3)
    points = pd.DataFrame({"row": np.arange(500), "x": rng.normal(size=500), "y": rng.normal(size=500) * 3,
                           "label": rng.choice(["b", "a", "c"], 500)})
    agreement = pd.DataFrame({"row": np.arange(0, 500, 2), "agreement": rng.random(250), "suggested": "a"})
    buffer, names = map_payload.pack(points, agreement)
    expected = map_payload.unpack(buffer)
    source = (Path(__file__).resolve().parents[2] / "dashboard" / "map_component" / "map.js").read_bytes()
    context = browser.new_context()
    tab = context.new_page()
    got = tab.evaluate("""async ([source, data]) => {
        const js = await import("data:text/javascript;base64," + source);
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const p = js.parsePoints(bytes.buffer);
        const cells = [];
        for (let c = 0; c + 1 < p.grid.start.length; c++)
            for (let j = p.grid.start[c]; j < p.grid.start[c + 1]; j++) cells.push([p.grid.order[j], c]);
        const square = [[0, 0], [10, 0], [10, 10], [0, 10]];
        return {n: p.n, x: Array.from(p.x), y: Array.from(p.y), label: Array.from(p.label),
                agreement: Array.from(p.agreement), suspect: Array.from(p.suspect), cells,
                inside: [js.pointInPolygon(5, 5, square), js.pointInPolygon(11, 5, square),
                         js.pointInPolygon(5, -1, square)]};
    }""", [base64.b64encode(source).decode(), base64.b64encode(buffer).decode()])
    context.close()
    assert got["n"] == 500 and names == ["a", "b", "c"]
    assert got["x"] == expected["x"].tolist() and got["y"] == expected["y"].tolist()
    assert got["label"] == expected["label"].tolist()
    assert got["suspect"] == expected["suspect"].astype(int).tolist()
    share = np.array(got["agreement"], float)
    assert np.allclose(np.where(share == 255, np.nan, share / 200), expected["agreement"], equal_nan=True)
    cell_of = {row: cell for row, cell in got["cells"]}
    assert sorted(cell_of) == list(range(500))  # every point in the index, once
    assert all(cell_of[i] == (expected["x"][i] >> 8) + (expected["y"][i] >> 8) * 256 for i in range(500))
    assert got["inside"] == [True, False, False]
