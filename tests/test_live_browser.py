"""Live camera in a real browser: headless Chromium with a fake camera playing a clip made from photos
(bench.live_camera.camera_clip). The live caption follows the scene, a word's heat is drawn over the live picture,
Freeze hands the frame and its caption to the viewer without a model call, Stop releases the camera, two pages
streaming at once get their own captions, and where there is no camera the Live button says why in one line."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from unittest import mock

import pytest
from conftest import CHROMIUM_ARGS, make_hard_model, open_demo_page

from bench.live_camera import FAKE_CAMERA_ARGS, camera_clip
from captioning import handlers
from captioning.cli import app
from captioning.model import Captioner
from captioning.shipped import EXAMPLES_DIR

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium")
SCENE_A, SCENE_B = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"
HEAT_JS = """() => {
  const canvas = document.querySelector('#live-view canvas'), d = canvas.dataset;
  const alpha = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0, levels = new Set();
  for (let i = 3; i < alpha.length; i += 4) { if (alpha[i] > 0) lit++; levels.add(alpha[i]); }
  return {word: d.word, caption: d.caption, version: Number(d.version), lit, levels: levels.size,
          pixels: canvas.toDataURL(), width: canvas.width, height: canvas.height};
}"""
SEEN_JS = """n => {  // true once the live caption has shown n different captions since the page's counter started
  const caption = document.querySelector('#live-caption').dataset.caption;
  window.liveSeen = window.liveSeen || new Set();
  if (caption !== undefined) window.liveSeen.add(caption);
  return window.liveSeen.size >= n;
}"""


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory, serve_demo):
    """The demo with the tiny model and a hard-attention one; --concurrency 2 (the default)."""
    hard = make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("hard") / "model_hard")
    models = {"model": Captioner.load(tiny_model_dir), "model_hard": Captioner.load(hard)}
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("examples"))}):
        demo = app.build_demo(models, cache_examples=False)
    with serve_demo(demo) as local_url:
        yield local_url


@contextlib.contextmanager
def camera_browsers(*clips: Path):
    """One headless Chromium per clip, whose camera plays it (in a loop), camera permission granted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = [
            playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={clip}"],
            )
            for clip in clips
        ]
        try:
            yield browsers
        finally:
            for browser in browsers:
                browser.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Fake camera clips: "cut" shows scene A for 2 s then scene B for 2 s; "a" and "b" one scene each."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "cut": camera_clip([SCENE_A, SCENE_B], folder / "cut.y4m"),
        "a": camera_clip([SCENE_A], folder / "a.y4m", seconds_each=1.0),
        "b": camera_clip([SCENE_B], folder / "b.y4m", seconds_each=1.0),
    }


def live_page(browser, url: str):
    """A demo page in `browser`, live captioning started and its first caption drawn."""
    opened = open_demo_page(browser, url, timeout_ms=60_000)
    page = opened.__enter__()
    page.wait_for_function("() => !!(window.satDemo && window.satDemo.state.live.root)")
    page.click("#live-start")
    page.wait_for_function("() => Number(document.querySelector('#live-view').dataset.shown || 0) >= 1")
    return opened, page


def shown(page) -> int:
    return page.evaluate("() => Number(document.querySelector('#live-view').dataset.shown || 0)")


def test_the_live_caption_follows_the_scene_and_its_words_heat_is_drawn_over_the_picture(url, clips):
    with camera_browsers(clips["cut"]) as (browser,):
        opened, page = live_page(browser, url)
        try:
            assert page.locator("#live-view video").evaluate("v => !!v.srcObject && v.videoWidth > 0")
            page.wait_for_function(SEEN_JS, arg=2)  # the clip cut from one photo to the other
            first = page.evaluate(HEAT_JS)
            assert first["lit"] > 0 and first["levels"] > 2  # soft attention: a graded heat over the picture
            assert max(first["width"], first["height"]) == 448  # a modest frame: 640x480 scaled to 448 px
            # no word chosen: each word in turn, about a second each
            page.wait_for_function(
                f"() => document.querySelector('#live-view canvas').dataset.word !== '{first['word']}'"
            )
            chips = page.locator("#live-caption [data-index]")
            assert chips.count() >= 2
            chips.nth(1).click()  # a chosen word stays, over every new caption
            page.wait_for_function("() => document.querySelector('#live-view canvas').dataset.word === '1'")
            drawn = {}
            for word in (0, 1, 0):  # the same caption's words 0 and 1: each its own heat
                page.keyboard.press("ArrowRight" if word else "ArrowLeft")
                page.wait_for_function(f"() => document.querySelector('#live-view canvas').dataset.word === '{word}'")
                heat = page.evaluate(HEAT_JS)
                drawn.setdefault(heat["caption"], {})[word] = heat["pixels"]
            assert any(len(words) == 2 and words[0] != words[1] for words in drawn.values())
            assert page.locator("#live-caption .current").count() == 1

            page.locator("#model-choice").get_by_label("model_hard", exact=True).check()  # hard: the cell read
            page.wait_for_function(
                "() => window.satDemo.state.live.data && window.satDemo.state.live.data.model === 'model_hard'"
            )
            page.wait_for_function("() => document.querySelector('#live-view canvas').dataset.word !== ''")
            hard = page.evaluate(HEAT_JS)
            cell = (hard["width"] / 14 + 1) * (hard["height"] / 14 + 1)
            assert 0 < hard["lit"] <= cell and hard["levels"] == 2  # one cell, one opacity
        finally:
            opened.__exit__(None, None, None)


def test_freeze_puts_the_frame_and_its_caption_in_the_viewer_without_a_model_call(url, clips):
    with camera_browsers(clips["a"]) as (browser,):
        opened, page = live_page(browser, url)
        try:
            with (
                mock.patch.object(handlers, "encoded_photo", side_effect=AssertionError("a model call")) as encode,
            ):
                page.keyboard.press("Space")  # Freeze
                page.wait_for_function("() => !window.satDemo.state.live.running")
                frozen = page.evaluate("() => window.satDemo.state.live.data")
                page.wait_for_function(
                    "id => document.querySelector('#heatmap canvas')?.dataset.caption === id", arg=frozen["id"]
                )
                assert encode.call_count == 0
            assert page.locator("#caption-text textarea").input_value() == frozen["caption"]
            assert page.evaluate("() => window.satDemo.state.data.image") == frozen["image"]
            assert "camera-" in page.locator("#image-input img").get_attribute("src")
            assert page.locator("#words [role=button]").count() == len(frozen["words"])
            # the frame is the page's photo now: a typed sentence is scored on it
            page.locator("#probe-text textarea, #probe-text input").first.fill("a dog on the mat")
            page.click("#probe-button")
            page.wait_for_selector("#probe-summary:not([hidden])")
        finally:
            opened.__exit__(None, None, None)


def test_stop_releases_the_camera(url, clips):
    with camera_browsers(clips["a"]) as (browser,):
        opened, page = live_page(browser, url)
        try:
            page.evaluate("() => { window.liveTracks = window.satDemo.state.live.stream.getTracks(); }")
            page.click("#live-stop")
            assert page.evaluate("() => window.liveTracks.length > 0")
            assert page.evaluate("() => window.liveTracks.every(track => track.readyState === 'ended')")
            assert page.evaluate("() => document.querySelector('#live-view video').srcObject === null")
            assert page.locator("#live-start").is_enabled() and page.locator("#live-stop").is_disabled()
            count = shown(page)
            page.wait_for_timeout(1500)
            assert shown(page) == count  # no caption after Stop
        finally:
            opened.__exit__(None, None, None)


def test_two_pages_streaming_at_once_each_get_their_own_captions(url, clips):
    with camera_browsers(clips["a"], clips["b"]) as (browser_a, browser_b):
        opened_a, page_a = live_page(browser_a, url)
        opened_b, page_b = live_page(browser_b, url)
        try:
            start_a, start_b = shown(page_a), shown(page_b)
            for page, start in ((page_a, start_a), (page_b, start_b)):  # both keep getting captions, side by side
                page.wait_for_function(
                    "n => Number(document.querySelector('#live-view').dataset.shown || 0) >= n", arg=start + 2
                )
            caption_a = page_a.evaluate("() => window.satDemo.state.live.data.caption")
            caption_b = page_b.evaluate("() => window.satDemo.state.live.data.caption")
            assert caption_a != caption_b  # each page its own scene's caption
            running_image = "() => window.satDemo.state.live.running && window.satDemo.state.live.data.image"
            assert page_a.evaluate(running_image) != page_b.evaluate("() => window.satDemo.state.live.data.image")
        finally:
            opened_a.__exit__(None, None, None)
            opened_b.__exit__(None, None, None)


def test_without_a_camera_the_live_button_says_why_and_the_page_still_works(url, chromium):
    with open_demo_page(chromium, url, timeout_ms=60_000) as page:  # no fake camera: none, or no permission
        page.wait_for_function("() => !!(window.satDemo && window.satDemo.state.live.root)")
        page.click("#live-start")
        page.wait_for_function("() => document.querySelector('#live-message').textContent !== ''")
        line = page.locator("#live-message").inner_text()
        assert "\n" not in line and "press Live camera again" in line
        assert page.locator("#live-view").is_hidden() and page.locator("#live-start").is_enabled()
        page.locator("#image-input input[type=file]").set_input_files(str(SCENE_A))
        page.wait_for_selector(f"#image-input img[src*='{SCENE_A.stem}']")
        page.click("#caption-button")
        page.wait_for_function("() => document.querySelector('#caption-text textarea').value !== ''")
    context = chromium.new_context()
    context.add_init_script("Object.defineProperty(navigator, 'mediaDevices', {value: undefined})")
    try:  # a page over plain HTTP from another machine has no navigator.mediaDevices
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("() => !!(window.satDemo && window.satDemo.state.live.root)")
        page.click("#live-start")
        line = page.locator("#live-message").inner_text()
        assert "--share" in line and "localhost" in line and "\n" not in line
    finally:
        context.close()
