"""A run of 100 classes in a real browser, on a projector and on a phone: the most common mistakes
as a list, each opening its pictures, beside the classes' table worst first, without sideways
scrolling. The server and browser fixtures are tests/test_browser.py's; its `browser_archive`
is overridden here with a CIFAR-100 copy in the official format, which the seeded run trains on."""
from __future__ import annotations

import json

import pytest

from cifar.results import TOP_CONFUSIONS, top_confusions
from tests.test_app_classes import hundred_class_archive
from tests.test_browser import (DESKTOP, PHONE, SEEDED_RUN, accuracy_metric, app_url, assert_no_traceback,  # noqa: F401
                                browser, expect, open_app, pytestmark, runs_dir, screenshots)


@pytest.fixture(scope="module")
def browser_archive(tmp_path_factory):
    archive = hundred_class_archive(tmp_path_factory.mktemp("browser_cifar100"))
    with pytest.MonkeyPatch.context() as patch:  # the run's test images are CIFAR-100's, found as the app finds them
        patch.setenv("CIFAR100_DATA", str(archive))
        yield archive


def test_a_run_of_100_classes_lists_its_mistakes_and_each_opens_its_pictures(browser, app_url, runs_dir, screenshots):  # noqa: F811
    metrics = json.loads((runs_dir / SEEDED_RUN / "metrics.json").read_text())
    assert len(metrics["class_names"]) == 100
    expected = top_confusions(metrics["confusion_matrix"], metrics["class_names"])
    assert len(expected) >= 2, "a tiny network of 100 classes makes mistakes"
    for name, viewport in (("projector", DESKTOP), ("phone", PHONE)):
        visitor = browser.new_context(viewport=viewport, is_mobile=name == "phone", has_touch=name == "phone")
        try:
            page = visitor.new_page()
            open_app(page, f"{app_url}/?run={SEEDED_RUN}")
            expect(accuracy_metric(page)).to_be_visible(timeout=60_000)
            listed = page.locator('.st-key-top_confusions [class*="st-key-confusion_"] button')
            expect(listed.first).to_be_visible(timeout=60_000)
            assert listed.count() == min(TOP_CONFUSIONS, len(expected))
            assert listed.nth(1).inner_text() == f"2. {expected[1].in_words()}"
            table = page.locator('[role="tabpanel"]:visible [data-testid="stDataFrame"]')
            expect(table).to_be_visible()
            listed.first.scroll_into_view_if_needed()
            page.screenshot(path=screenshots / f"20-hundred-classes-mistakes-{name}.png")
            listed.nth(1).click()  # the second mistake's pictures, the network's surest first
            second = expected[1]
            tiles = page.locator(f".st-key-cell_tiles_{second.true_index}_{second.predicted_index}")
            expect(tiles).to_be_visible(timeout=60_000)
            expect(tiles.get_by_role("button", name="Inspect")).to_have_count(min(second.count, 24))
            heading = f"True {second.true_class}, predicted {second.predicted_class}: {second.count:,} test images"
            expect(page.get_by_text(heading)).to_be_visible()
            tiles.scroll_into_view_if_needed()
            page.screenshot(path=screenshots / f"21-hundred-classes-cell-{name}.png")
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 2
            assert_no_traceback(page)
        finally:
            visitor.close()
