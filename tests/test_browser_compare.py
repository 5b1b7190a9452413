"""The dropout experiment in a real browser: one click queues both runs and opens a comparison that
fills in as they train (the server, data and helpers of tests/test_browser.py)."""
from __future__ import annotations

import pytest

from tests.test_browser import (DESKTOP, PHONE, RUN_END_MS, app_url, assert_no_traceback, browser,  # noqa: F401
                                browser_archive, context, expect, keyed_button, page, pytestmark, runs_dir,
                                screenshots, stop_button, sync_api, wait_until_idle)

# Per run in the visible tab's compare accuracy chart: how many epochs its training trace has drawn,
# keyed by the run's colour. The figure as sent (`data`): Plotly leaves empty traces out of `_fullData`.
RUNS_DRAWN_JS = """() => {
    const plot = Array.from(document.querySelectorAll('[role="tabpanel"]:not([hidden]) .js-plotly-plot'))
        .find(plot => plot.layout && plot.layout.title && String(plot.layout.title.text).startsWith('Accuracy'));
    if (!(plot && plot.data)) return {};
    const drawn = {};
    for (const trace of plot.data)
        if (trace.line && trace.line.dash === 'solid') drawn[trace.line.color] = trace.y ? trace.y.length : 0;
    return drawn;
}"""


def runs_drawn(page) -> dict:
    return page.evaluate(RUNS_DRAWN_JS)


def scroll_to(part) -> None:
    """Bring a part into view for a screenshot; a part the live page is drawing again just then is waited for."""
    try:
        expect(part).to_be_visible(timeout=30_000)
        part.scroll_into_view_if_needed(timeout=10_000)
    except (AssertionError, sync_api.TimeoutError):
        pass  # only a screenshot's framing depends on it


def test_the_dropout_experiment_opens_a_comparison_of_its_two_runs(page, app_url, screenshots):
    wait_until_idle(page, app_url)
    page.get_by_role("tab", name="Compare runs").click()
    button = keyed_button(page, "dropout_experiment")
    expect(button).to_be_visible(timeout=30_000)
    button.click()
    panel = page.locator('[role="tabpanel"]:visible')
    expect(panel.get_by_text("Comparing conv dropout 0.0, dense dropout 0.0 vs conv dropout 0.2, dense dropout 0.5"))\
        .to_be_visible(timeout=60_000)
    page.screenshot(path=screenshots / "12-compare-just-pressed.png")  # what a projector shows, unscrolled
    # The first run's curve fills in live; the second waits for it, so the test stops the first
    # after two epochs, then the second once its first epoch shows.
    try:
        page.wait_for_function(f"Object.values(({RUNS_DRAWN_JS})()).some(count => count >= 2)", timeout=RUN_END_MS,
                               polling=500)
    except sync_api.TimeoutError:
        page.screenshot(path=screenshots / "12-compare-stuck.png", full_page=True)
        pytest.fail(f"the comparison drew {runs_drawn(page)} epochs per run; screenshot in {screenshots}")
    assert len(runs_drawn(page)) == 2, runs_drawn(page)  # both runs in the legend, each its colour, from the start
    stop_button(page).click()
    page.wait_for_function(f"Object.values(({RUNS_DRAWN_JS})()).filter(count => count >= 1).length >= 2",
                           timeout=RUN_END_MS, polling=500)
    scroll_to(panel.get_by_text("Comparing conv dropout"))
    page.screenshot(path=screenshots / "12-compare-desktop.png")
    scroll_to(panel.locator('[data-testid="stTable"]'))  # the page scrolls inside its main section
    page.screenshot(path=screenshots / "12-compare-desktop-table.png")
    assert_no_traceback(page)
    page.set_viewport_size(PHONE)  # the same session, on a phone's width: the charts stack
    page.wait_for_timeout(1500)
    scroll_to(panel.get_by_text("Comparing conv dropout"))
    page.screenshot(path=screenshots / "13-compare-phone.png")
    scroll_to(panel.locator(".js-plotly-plot").nth(1))
    page.screenshot(path=screenshots / "13-compare-phone-accuracy.png")
    scroll_to(panel.locator('[data-testid="stTable"]'))
    page.screenshot(path=screenshots / "13-compare-phone-table.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 2
    page.set_viewport_size(DESKTOP)
    try:
        stop_button(page).click(timeout=5_000)  # leave the training slot free for the next test
    except sync_api.TimeoutError:
        pass  # the second run ended on its own while the phone looked
    expect(stop_button(page)).to_be_disabled(timeout=RUN_END_MS)
    assert_no_traceback(page)

