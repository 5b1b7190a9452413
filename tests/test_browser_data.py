"""Your own pictures in a real browser: a zip of class folders uploaded in the sidebar, checked at once,
trained, and its results drawn with its classes (the server, data and helpers of tests/test_browser.py)."""
from __future__ import annotations

import re

from tests.synthetic import class_folder_zip
from tests.test_browser import (RUN_END_MS, accuracy_metric, app_url, assert_no_traceback, browser,  # noqa: F401
                                browser_archive, context, expect, page, pytestmark, runs_dir, screenshots,
                                scroll_to, start_training, train_button, wait_until_idle)

CLASSES = ("cat", "dog", "frog")


def test_a_zip_of_class_folders_uploads_trains_and_its_results_name_its_classes(page, app_url, screenshots, tmp_path):
    upload = class_folder_zip(tmp_path / "pets.zip", per_class=30, class_names=CLASSES, wrapper="pets",
                              extra={"pets/cat/notes.txt": b"not a picture", "__MACOSX/pets/._cat": b"x"})
    wait_until_idle(page, app_url)
    sidebar = page.get_by_test_id("stSidebar")
    page.locator(".st-key-data_source").click()
    page.get_by_role("option", name="Your images").click()
    page.locator(".st-key-dataset_zip input[type=file]").set_input_files(upload)
    found = sidebar.get_by_text("pets.zip: 3 classes: cat, dog, frog; 90 pictures; 1 file skipped: not pictures.")
    expect(found).to_be_visible(timeout=60_000)
    scroll_to(found)
    page.screenshot(path=screenshots / "data-01-zip-checked.png")

    expect(train_button(page)).to_be_enabled()
    start_training(page)
    expect(accuracy_metric(page)).to_be_visible(timeout=RUN_END_MS)
    assert_no_traceback(page)
    expect(page.get_by_text(re.compile(r"on your images"))).not_to_have_count(0)
    matrix = page.locator('[role="tabpanel"]:visible .js-plotly-plot').nth(2)  # after the loss and accuracy curves
    scroll_to(matrix)
    ticks = matrix.evaluate("plot => plot._fullLayout.xaxis.categoryarray || plot._fullData[0].x")
    assert sorted(set(ticks)) == list(CLASSES)
    page.screenshot(path=screenshots / "data-02-zip-results.png")

    page.get_by_role("tab", name="Test images").click()
    panel = page.locator('[role="tabpanel"]:visible')
    expect(panel.get_by_text(re.compile(r"^18 matching test images"))).to_be_visible(timeout=30_000)
    tiles = panel.get_by_text(re.compile(r"^[✓✗] (cat|dog|frog)$"))
    expect(tiles.first).to_be_visible()
    page.screenshot(path=screenshots / "data-03-zip-gallery.png")
    assert_no_traceback(page)
