"""Label decisions in a real Chromium: the Quality page's review queue walked by its keyboard shortcuts (accept,
exclude, undo), the log checked after each step, and screenshots of the queue for people to look at."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from _dashboard_fixtures import misfile, precompute_map, precompute_quality, write_fake_run
from doggos.base import decisions

from .page_tools import SETTLE_MS, settle

pytestmark = pytest.mark.browser

RUN = "20250104-000000-0004"  # newer than any other module's runs: the app opens it


@pytest.fixture(scope="module")
def planted(app):
    run = write_fake_run(app.runs_dir, RUN, failures=[])
    misfile(run)  # two beagles filed as border collies, a near copy
    precompute_map(run)
    precompute_quality(run)
    return run


@pytest.fixture(scope="module")
def quality_page(browser, app, planted):
    from .page_tools import take_errors, watch

    context = browser.new_context(viewport={"width": 1400, "height": 1100}, base_url=app.url)
    tab = watch(context.new_page())
    tab.goto("/quality")
    expect(tab.get_by_role("heading", name="Review queue")).to_be_visible(timeout=SETTLE_MS)
    settle(tab)
    yield tab
    late = take_errors(tab)
    context.close()
    assert not late, "\n".join(late)


def reviewed(page, text: str) -> None:
    expect(page.get_by_text(text, exact=False).first).to_be_visible(timeout=SETTLE_MS)
    settle(page)


def shoot(page, artifacts, name: str) -> None:
    settle(page)
    page.get_by_role("heading", name="Review queue").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / name))


def test_the_queue_accepts_excludes_and_undoes_by_keyboard(quality_page, planted, artifacts):
    from doggos.explore import label_review
    from doggos.explore.quality import DEFAULT_PARAMS

    first, second = label_review.load(planted, DEFAULT_PARAMS)[0].likely_mislabeled()["row"]  # the queue's order
    page = quality_page
    reviewed(page, "0 of 2 reviewed")
    expect(page.get_by_role("button", name="Accept suggestion (→ beagle)")).to_be_visible()
    shoot(page, artifacts, "queue-1-first-suspect.png")

    page.locator("body").press("a")  # Accept suggestion
    reviewed(page, "1 of 2 reviewed")
    effects = decisions.state(planted).effects
    assert [(e.row, e.label, e.decision) for e in effects.values()] == [(first, "beagle", "relabel")]
    expect(page.get_by_text("Image 2 of 2 in the queue", exact=False)).to_be_visible()
    shoot(page, artifacts, "queue-2-after-accept.png")

    page.locator("body").press("x")  # Exclude
    reviewed(page, "2 of 2 reviewed")
    assert sorted((e.row, e.decision) for e in decisions.state(planted).effects.values()) == \
        sorted([(first, "relabel"), (second, "exclude")])
    shoot(page, artifacts, "queue-3-after-exclude.png")

    page.get_by_role("button", name="Previous").click()  # back to the excluded one (the queue wraps round)
    expect(page.get_by_text("Excluded from the dataset")).to_be_visible(timeout=SETTLE_MS)
    settle(page)
    page.locator("body").press("u")  # Undo its decision
    reviewed(page, "1 of 2 reviewed")
    assert [(e.row, e.decision) for e in decisions.state(planted).effects.values()] == [(first, "relabel")]
    assert [d.decision for d in decisions.read_log(planted)] == ["relabel", "exclude", "undo"]
    shoot(page, artifacts, "queue-4-after-undo.png")
