"""The Map in Chromium after label decisions: excluded points are left out (not drawn, hovered or selected) until
Show excluded is on; the legend names the effective labels."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from _dashboard_fixtures import precompute_map, write_fake_run
from doggos.base import decisions, store

from .page_tools import SETTLE_MS, settle

pytestmark = pytest.mark.browser
RUN = "20250101-000000-0001"


@pytest.fixture(scope="module")
def decided(app):
    run = write_fake_run(app.runs_dir, RUN, labels={"beagle": 20, "husky": 20}, failures=[])
    precompute_map(run)
    index = store.folder_index(run)
    decisions.record(run, "exclude", [decisions.Image(r, index.path[r], index.label[r]) for r in range(5)], source="cli")
    decisions.record(run, "relabel", [decisions.Image(30, index.path[30], "husky")], "wolf", source="cli")
    return run


def test_excluded_points_are_left_out_until_shown(browser, app, decided):
    """5 of 40 images excluded: 35 points drawn, the legend in effective labels; Show excluded draws all 40."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=app.url)
    page = context.new_page()
    page.goto("/map")
    chart = page.get_by_test_id("doggos-map")
    expect(chart).to_have_attribute("data-state", "ready", timeout=SETTLE_MS)
    settle(page)
    assert chart.get_attribute("data-points") == "40" and chart.get_attribute("data-in-view") == "35"
    legend = chart.locator(".dg-legend-label").all_text_contents()
    assert legend == ["beagle", "husky", "wolf"]
    page.get_by_text("Show excluded").first.click()
    expect(chart).to_have_attribute("data-in-view", "40", timeout=SETTLE_MS)
    context.close()


def test_the_components_javascript_reads_the_left_out_points(browser):
    """map.js reads the LEFT_OUT column map_payload.pack writes (after the agreement columns, or without them), and
    its hover and click index holds no left-out point."""
    import base64
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from doggos.explore import map_payload

    rng = np.random.default_rng(3)
    points = pd.DataFrame({"row": np.arange(500), "x": rng.normal(size=500), "y": rng.normal(size=500),
                           "label": rng.choice(["b", "a", "c"], 500)})
    left_out = np.zeros(500, bool)
    left_out[[3, 99, 250]] = True
    agreement = pd.DataFrame({"row": np.arange(0, 500, 2), "agreement": rng.random(250), "suggested": "a"})
    for extra in (None, agreement):
        buffer, _ = map_payload.pack(points, extra, left_out)
        expected = map_payload.unpack(buffer)
        source = (Path(__file__).resolve().parents[2] / "dashboard" / "map_component" / "map.js").read_bytes()
        context = browser.new_context()
        tab = context.new_page()
        got = tab.evaluate("""async ([source, data]) => {
            const js = await import("data:text/javascript;base64," + source);
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const p = js.parsePoints(bytes.buffer);
            return {n: p.n, label: Array.from(p.label), leftOut: Array.from(p.leftOut),
                    indexed: Array.from(p.grid.order).sort((a, b) => a - b),
                    suspect: p.suspect ? Array.from(p.suspect) : null};
        }""", [base64.b64encode(source).decode(), base64.b64encode(buffer).decode()])
        context.close()
        assert got["n"] == 500 and got["leftOut"] == left_out.astype(int).tolist()
        assert got["label"] == expected["label"].tolist()
        assert got["indexed"] == [i for i in range(500) if not left_out[i]]
        if extra is not None:
            assert got["suspect"] == expected["suspect"].astype(int).tolist()
