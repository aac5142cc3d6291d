"""The demo in a real browser: upload, caption, then click a word and move the slider (headless Chromium).

SAVE_SCREENSHOT=page.png also saves the final page there (BROWSER_TEST_PHOTO picks the upload);
BROWSER_TEST_MODEL=assets/model serves a real model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

import app
from captioning.model import Captioner

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(os.environ.get("BROWSER_TEST_PHOTO", ROOT / "assets" / "examples" / "coffee.jpg"))
PHOTO = ROOT / "assets" / "examples" / "astronaut.jpg"  # not an example: a fresh upload
CURRENT_WORD_JS = """() => [...document.querySelectorAll('#words .token')]
    .findIndex(t => t.style.backgroundColor.replace(/ /g, '').startsWith('rgba(249,115,22'))"""  # app's #f97316



@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory, launch_demo):
    """The demo on a free local port: the tiny random model, or BROWSER_TEST_MODEL (e.g. for a README screenshot)."""
    model_dir = os.environ.get("BROWSER_TEST_MODEL") or tiny_model_dir
    captioner = Captioner.load(model_dir)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("examples"))}):
        demo = app.build_demo(captioner, cache_examples="lazy")
    demo.queue(max_size=8)
    local_url = launch_demo(demo)
    try:
        yield local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(url, chromium):
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(20_000)
    page.goto(url)
    page.wait_for_selector("#image-input input[type=file]", state="attached")
    try:
        yield page
    finally:
        page.close()


def wait_for_current_word(page, index: int) -> None:
    page.wait_for_function(f"i => ({CURRENT_WORD_JS})() === i", arg=index)


def heatmap_src(page) -> str:
    return page.locator("#heatmap img").get_attribute("src")


def wait_for_new_heatmap(page, old_src: str) -> str:
    page.wait_for_function("old => { const img = document.querySelector('#heatmap img');"
                           " return img && img.src !== old && img.complete && img.naturalWidth > 0; }", arg=old_src)
    return heatmap_src(page)


def test_upload_caption_then_step_through_words(page, tmp_path):
    page.locator("#image-input input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#image-input img")
    page.click("#caption-button")
    page.wait_for_function("() => document.querySelector('#caption-text textarea')?.value.trim().length > 0")
    caption = page.locator("#caption-text textarea").input_value()
    chips = page.locator("#words .token")
    assert chips.count() == len(caption.split()) >= 3
    first = wait_for_new_heatmap(page, "")
    wait_for_current_word(page, 0)

    chips.nth(2).click()  # a word chip: heatmap, highlighted chip and slider follow, no model call
    second = wait_for_new_heatmap(page, first)
    wait_for_current_word(page, 2)
    assert page.locator("#word-slider input[type=number]").input_value() == "2"

    number = page.locator("#word-slider input[type=number]")  # the slider's number box
    number.fill("1")
    number.press("Enter")
    third = wait_for_new_heatmap(page, second)
    wait_for_current_word(page, 1)

    page.locator("#word-slider input[type=range]").press("ArrowRight")  # keyboard on the slider itself
    wait_for_new_heatmap(page, third)
    wait_for_current_word(page, 2)
    assert page.locator("#gallery img").count() == len(caption.split())

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOT"):
        Path(os.environ["SAVE_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["SAVE_SCREENSHOT"])


def test_clicking_an_example_captions_it(page):
    before = heatmap_src(page) or ""
    page.locator("#examples").get_by_text("cat", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#image-input img')?.src || '').includes('cat')")
    wait_for_new_heatmap(page, before)
    assert page.locator("#caption-text textarea").input_value().strip()
    wait_for_current_word(page, 0)


def test_non_image_upload_shows_a_friendly_error_then_a_photo_still_works(page, tmp_path):
    notes = tmp_path / "notes.jpg"  # named like a photo, so the page's image-only file filter lets it through
    notes.write_text("this is a shopping list, not a photo\n" * 20)
    page.locator("#image-input input[type=file]").set_input_files(str(notes))
    page.click("#caption-button")
    toast = page.get_by_text("Could not read this image: the file is not a JPEG, PNG, GIF, WebP, BMP or TIFF image")
    toast.first.wait_for()  # gr.Error: a toast with the message, not a stack trace
    assert "Traceback" not in page.content()

    before = page.evaluate("() => document.querySelector('#heatmap img')?.src || ''")  # none if run alone
    page.get_by_role("button", name="Remove Image").click()  # what a user does: drop the bad file, pick a photo
    page.locator("#image-input input[type=file]").set_input_files(str(PHOTO))
    page.wait_for_selector("#image-input img")
    page.click("#caption-button")
    wait_for_new_heatmap(page, before)  # the same page captions a real photo afterwards
    assert page.locator("#caption-text textarea").input_value().strip()
    wait_for_current_word(page, 0)
