"""The page's heatmaps are the Python ones: the real demo.css/demo.js and viewer markup in headless Chromium, mounted
with the per-word JSON /caption sends (the shipped soft and hard models on an example photo), one word selected,
and the canvas pixels compared with captioning.heatmap's rendering of the same word on the same display image.

The display image travels as PNG here (the page accepts any image data URL), so both sides tint identical photo
pixels and any difference is the heatmap's own.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning.cli.page import viewer_html
from captioning.heatmap import HEATMAP, word_overlay
from captioning.model import Captioner
from captioning.payload import caption_data
from captioning.preprocess import load_image
from captioning.shipped import EXAMPLES_DIR, SHIPPED_MODELS, WEB_DIR
from captioning.visualize import display_image, figure_layout

CHROMIUM = Path("/usr/lib/chromium/chromium")  # Debian's chromium (never `playwright install`)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
# Canvas vs Python's rendering. Both compute in float64 with the same steps, so a pixel can differ only where float
# rounding (another engine's Math.exp or Math.pow) lands on the other side of a heat level or of a half, which is
# rare: measured identical. TOLERANCE bounds the mean absolute difference per channel (0-255); MAX_PIXEL_DIFFERENCE any
# channel of any pixel (a heat level off by one moves the colour by at most 5, the largest step of the inferno table);
# MAX_DIFFERING_SHARE the share of pixels that differ at all. A real change to the drawing breaks at least one: a blur
# radius of 2 sigma or an opacity gamma of 1.4 changes 15-45% of the pixels, a cubic parameter of -0.75 moves
# thousands by up to 19, hard cell edges rounded down or a tint of 0.5 move dozens by 12 to 96.
TOLERANCE = 0.5
MAX_PIXEL_DIFFERENCE = 6
MAX_DIFFERING_SHARE = 0.001

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}")]

READ_CANVAS_JS = """() => {
    const canvas = document.querySelector('#heatmap canvas');
    const rgba = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let text = '';
    for (let i = 0; i < rgba.length; i += 0x8000) text += String.fromCharCode.apply(null, rgba.subarray(i, i + 0x8000));
    return {width: canvas.width, height: canvas.height, word: canvas.dataset.word, rgba: btoa(text)};
}"""


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def page_grids(data: dict) -> np.ndarray:
    """The grids (n_words, rows, cols) exactly as the page decodes them from data["grids"] (uint16 / 65535)."""
    packed = np.frombuffer(base64.b64decode(data["grids"]), dtype="<u2").astype(np.float64) / 65535
    return packed.reshape(len(data["words"]), *data["grid"])  # (n_words, 14, 14)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_image(EXAMPLES_DIR / "dogs.jpg")


@pytest.fixture(scope="module", params=["model", "model_hard"])
def payload(request, photo) -> dict:
    """/caption's per-word JSON for the dogs photo from a shipped model, its display image as PNG."""
    captioner = Captioner.load(SHIPPED_MODELS[request.param])
    captions = captioner.caption_alternatives(photo, beam_size=3)[0]  # best first
    shown = display_image(photo)
    data = caption_data(captions, shown, request.param, captioner.config.decoder.attention, 3)
    assert data["attention"] == ("hard" if request.param == "model_hard" else "soft")
    return {**data, "image": png_data_url(shown)}


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    css = (WEB_DIR / "demo.css").read_text(encoding="utf-8")
    script = (WEB_DIR / "demo.js").read_text(encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.set_default_timeout(20_000)
            page.set_content(
                f"<html><head><style>{css}</style><script>{script}</script></head><body>"
                f"<div id='viewer'>{viewer_html()}</div></body></html>"
            )
            page.evaluate("() => window.satDemo.mount(document.querySelector('#viewer'), '')")
            yield page
        finally:
            browser.close()


def show(page, data: dict, word: int) -> dict:
    """Show a caption on the page, select one word, and return the heatmap canvas (size, word, RGBA base64)."""
    page.evaluate("data => window.satDemo.show(data)", data)
    page.wait_for_function("id => document.querySelector('#heatmap canvas').dataset.caption === id", arg=data["id"])
    page.evaluate("i => window.satDemo.select(i)", word)
    page.wait_for_function("i => document.querySelector('#heatmap canvas').dataset.word === String(i)", arg=word)
    return page.evaluate(READ_CANVAS_JS)


def test_the_page_reads_the_spec_python_draws_by(page):
    spec = page.evaluate("() => { const {lut, ...served} = window.satDemo.state.spec; return served; }")
    assert spec == json.loads(json.dumps(HEATMAP.to_page()))
    layouts = page.evaluate(
        "() => [[1, 0.75], [6, 0.75], [9, 1.5], [12, 0.5625]].map("
        "([n, aspect]) => window.satDemo.figureLayout(n, aspect))"
    )
    assert layouts == [figure_layout(n, aspect) for n, aspect in [(1, 0.75), (6, 0.75), (9, 1.5), (12, 0.5625)]]


def test_the_canvas_shows_what_python_renders_for_the_same_word(page, payload):
    word = min(1, len(payload["words"]) - 1)
    canvas = show(page, payload, word)
    browser = np.frombuffer(base64.b64decode(canvas["rgba"]), dtype=np.uint8)
    browser = browser.reshape(canvas["height"], canvas["width"], 4)  # (H, W, 4)
    shown = Image.open(io.BytesIO(base64.b64decode(payload["image"].split(",", 1)[1]))).convert("RGB")
    assert (canvas["width"], canvas["height"]) == shown.size and canvas["word"] == str(word)
    assert (browser[:, :, 3] == 255).all()

    python = np.asarray(word_overlay(shown, page_grids(payload)[word], payload["attention"])).astype(int)  # (H, W, 3)
    difference = np.abs(browser[:, :, :3].astype(int) - python)  # (H, W, 3)
    mean = difference.mean(axis=(0, 1))  # (3,) per channel
    assert (mean < TOLERANCE).all(), f"mean |canvas - python| per channel {mean} (tolerance {TOLERANCE})"
    assert difference.max() <= MAX_PIXEL_DIFFERENCE, f"{(difference.max(axis=2) > MAX_PIXEL_DIFFERENCE).sum()} pixels"
    assert (difference.max(axis=2) > 0).mean() <= MAX_DIFFERING_SHARE
    tinted = np.abs(python - np.asarray(shown).astype(int)).max(axis=2) > 8  # (H, W) where the word's heat shows
    assert 0.001 < tinted.mean() < 0.9  # the comparison covers a real heatmap, not the bare photo
