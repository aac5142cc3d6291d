"""The page as a visitor meets it, in headless Chromium at a desktop size (1400x1000) and a phone size (390x844): a
new or removed photo takes the old results off the page at once; the compare rows show up where the visitor looks
and fit the width; a typed sentence is shown apart from the beam's captions; the score button looks like a button
and the placeholder fits; an example's caption comes with the beam it used on the slider; the gallery is a grid
that fills the width and the heatmap sits right under the words.

SAVE_SCREENSHOTS=DIR also saves each size's window after a caption (DIR/page_WIDTHxHEIGHT.png);
PAGE_TEST_MODELS=assets/model,assets/model_hard serves those models instead of the tiny scripted ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import open_demo_page
from test_browser import caption_photo, drawn, page_data, page_test_url, wait_for_word
from test_probe_browser import probe_sentence

from captioning.shipped import EXAMPLES_DIR

pytestmark = pytest.mark.slow

DOGS, ASTRONAUT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "astronaut.jpg"
SENTENCE = "a dog sits on the mat"
SIZES = {"desktop": (1400, 1000), "phone": (390, 844)}
WAIT_MS = 5_000  # what the page shows at once (no request) is there well within this
# What the page shows of a caption: the caption text, the viewer's words, alternatives and note, the heatmap's
# visibility, the gallery's tiles and the compare rows' visibility.
RESULTS_JS = """() => {
    const visible = el => !!el && el.getClientRects().length > 0;
    const note = document.querySelector('#viewer-note');
    return {text: document.querySelector('#caption-text textarea').value,
            words: document.querySelectorAll('#words [role=button]').length,
            alternatives: document.querySelectorAll('#alternatives [role=button]').length,
            gallery: document.querySelectorAll('#gallery [role=button]').length,
            heatmap: visible(document.querySelector('#heatmap canvas')),
            compare: visible(document.querySelector('#compare-view .sat-compare')),
            note: visible(note) ? note.textContent : null}; }"""
# Every tile of the compare rows lies within the rows' box and the page's width, and the rows do not scroll sideways.
COMPARE_FITS_JS = """() => {
    const rows = document.querySelector('#compare-rows'), box = rows.getBoundingClientRect();
    const page = document.documentElement.clientWidth;
    const tiles = [...rows.querySelectorAll('.sat-tile')].map(t => t.getBoundingClientRect());
    return {tiles: tiles.length, overflow: rows.scrollWidth - rows.clientWidth, page, box_right: box.right,
            right: Math.max(...tiles.map(t => t.right)), left: Math.min(...tiles.map(t => t.left))}; }"""
FIRST_TILE_IN_VIEW_JS = """() => { const tile = document.querySelector('#compare-rows .sat-tile');
    if (!tile) return false;
    const r = tile.getBoundingClientRect();
    return r.top >= 0 && r.bottom <= window.innerHeight; }"""
# The score button: its colours and those of what is behind it; the probe box's placeholder width and its room.
LOOKS_JS = """() => {
    const button = document.querySelector('#probe-button'), style = getComputedStyle(button);
    let behind = button.parentElement;
    while (behind && getComputedStyle(behind).backgroundColor.replace(/ /g, '').endsWith(',0)'))
        behind = behind.parentElement;
    const input = document.querySelector('#probe-text textarea, #probe-text input'), box = getComputedStyle(input);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = `${box.fontStyle} ${box.fontWeight} ${box.fontSize} ${box.fontFamily}`;
    return {fill: style.backgroundColor, border: style.borderTopColor, border_width: parseFloat(style.borderTopWidth),
            text: style.color, behind: behind ? getComputedStyle(behind).backgroundColor : 'rgb(255, 255, 255)',
            placeholder: input.placeholder, placeholder_width: ctx.measureText(input.placeholder).width,
            room: input.clientWidth - parseFloat(box.paddingLeft) - parseFloat(box.paddingRight)}; }"""
# Where the gallery's tiles, the words, the heatmap and the beam's captions are on the page.
LAYOUT_JS = """() => {
    const rect = el => { const r = el.getBoundingClientRect();
        return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right}; };
    return {gallery: rect(document.querySelector('#gallery')),
            tiles: [...document.querySelectorAll('#gallery .sat-tile')].map(rect),
            words: rect(document.querySelector('#words')), heatmap: rect(document.querySelector('#heatmap canvas')),
            alternatives: rect(document.querySelector('#alternatives'))}; }"""


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory, serve_demo):
    """The demo: the tiny model scripted into a beam of k captions for beam k and a hard-attention one (or
    PAGE_TEST_MODELS), with the example photos captioned on first use."""
    yield from page_test_url("PAGE_TEST_MODELS", tiny_model_dir, tmp_path_factory, serve_demo)


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def page(request, url, chromium):
    with open_demo_page(chromium, url, timeout_ms=30_000, size=SIZES[request.param]) as page:
        yield page


def results(page) -> dict:
    return page.evaluate(RESULTS_JS)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours (alpha ignored: both are opaque here)."""

    def luminance(colour: str) -> float:
        channels = [float(v) / 255 for v in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_a_new_or_removed_photo_takes_the_old_results_off_the_page_at_once(page):
    caption_photo(page, DOGS)
    shown = results(page)
    assert shown["text"] and shown["words"] and shown["alternatives"] and shown["heatmap"] and shown["note"] is None

    page.locator("#image-input input[type=file]").set_input_files(str(ASTRONAUT))  # no Caption pressed
    page.wait_for_function("() => !document.querySelectorAll('#words [role=button]').length", timeout=WAIT_MS)
    page.wait_for_function("() => !document.querySelectorAll('#gallery [role=button]').length", timeout=WAIT_MS)
    cleared = results(page)
    assert cleared == {
        "text": "",
        "words": 0,
        "alternatives": 0,
        "gallery": 0,
        "heatmap": False,
        "compare": False,
        "note": "Press Caption to caption this photo.",
    }

    page.get_by_role("button", name="Remove Image").click()
    removed = "Upload a photo or click an example, then press Caption."
    page.wait_for_function("note => document.querySelector('#viewer-note').textContent === note", arg=removed)
    page.click("#caption-button")  # no photo: a message saying what to do, and the page stays as it is
    page.get_by_text("Please upload an image first.").first.wait_for()
    assert results(page) == {**cleared, "note": removed}


def test_compare_rows_show_up_where_the_visitor_looks_and_fit_the_width(page):
    caption_photo(page, DOGS)
    page.locator("#compare input[type=checkbox]").check()
    page.wait_for_function("() => !document.querySelector('#compare-view .sat-compare').hidden")
    page.wait_for_function(FIRST_TILE_IN_VIEW_JS, timeout=WAIT_MS)  # scrolled to, not 1,300 px below the switch
    fit = page.evaluate(COMPARE_FITS_JS)
    assert fit["tiles"] >= 10 and fit["overflow"] <= 0, fit  # both models' words, no sideways scrolling
    assert fit["left"] >= 0 and fit["right"] <= min(fit["box_right"], fit["page"]) + 0.5, fit
    page.locator("#compare input[type=checkbox]").uncheck()
    page.wait_for_function("() => document.querySelector('#compare-view .sat-compare').hidden")


def test_a_typed_sentence_is_shown_as_the_visitors_apart_from_the_beams_captions(page):
    caption_photo(page, DOGS)
    beam = page.locator("#alternatives .sat-alt-text").all_inner_texts()
    probe_sentence(page, SENTENCE)
    assert page.locator("#alternatives .sat-alt-text").all_inner_texts() == beam  # the beam's list, as it was
    sentence = page.locator("#probe-sentence")
    assert sentence.locator(".sat-alt-text").inner_text() == SENTENCE
    assert sentence.get_attribute("aria-pressed") == "true" and sentence.is_visible()
    before = drawn(page)
    page.locator("#alternatives [role=button]").nth(1).click()  # a caption of the beam, then the sentence again
    wait_for_word(page, 0, before)
    assert sentence.get_attribute("aria-pressed") == "false" and page.locator("#words .sat-prob").count() == 0
    before = drawn(page)
    sentence.click()
    wait_for_word(page, 0, before)
    assert page.locator("#words .sat-prob").count() == len(SENTENCE.split())
    page.click("#probe-back")
    page.wait_for_function("() => !window.satDemo.state.probe")


def test_the_score_button_looks_like_a_button_and_the_placeholder_fits(page):
    looks = page.evaluate(LOOKS_JS)
    edge = max(contrast(looks["fill"], looks["behind"]), contrast(looks["border"], looks["behind"]))
    assert edge >= 3, looks  # its outline stands out from what is behind it (WCAG's 3:1 for controls)
    assert contrast(looks["text"], looks["fill"]) >= 4.5, looks  # and its label is readable
    assert page.locator("#probe-button").is_enabled()
    assert looks["placeholder"] and looks["placeholder_width"] <= looks["room"], looks  # not cut off


def test_an_example_comes_with_the_beam_it_used_on_the_slider(page):
    slider = page.locator("#beam-size input[type=number]")
    slider.fill("5")
    slider.press("Enter")
    page.wait_for_function("() => document.querySelector('#beam-size input[type=range]').value === '5'")
    before = drawn(page)
    page.locator("#examples").get_by_text("cat", exact=True).click()
    wait_for_word(page, 0, before)
    page.wait_for_function("() => window.satDemo.state.data?.image && window.satDemo.state.data.beam")
    data = page_data(page)
    shown_beam = int(slider.input_value())
    assert data["beam"] == shown_beam  # the slider says the beam the caption used
    if not os.environ.get("PAGE_TEST_MODELS"):  # the scripted beam finds one caption per beam slot
        assert page.locator("#alternatives [role=button]").count() == shown_beam


def test_the_gallery_is_a_grid_that_fills_the_width_and_the_heatmap_is_under_the_words(page):
    caption_photo(page, DOGS)
    n_words = page.locator("#words [role=button]").count()
    page.wait_for_function("n => document.querySelectorAll('#gallery .sat-tile').length === n", arg=n_words)
    layout = page.evaluate(LAYOUT_JS)
    gallery, tiles = layout["gallery"], layout["tiles"]
    first_row = [t for t in tiles if abs(t["top"] - tiles[0]["top"]) < 1]
    assert len(first_row) >= 2 and len(first_row) < n_words, layout  # a grid, not one column or one long line
    assert first_row[-1]["right"] >= gallery["right"] - 1 and first_row[0]["left"] <= gallery["left"] + 1, layout
    assert 0 <= layout["heatmap"]["top"] - layout["words"]["bottom"] <= 80, layout  # only the word slider between
    if page.viewport_size["width"] <= 640:  # the phone: the beam's other captions after the heatmap
        assert layout["alternatives"]["top"] > layout["heatmap"]["bottom"], layout
    if os.environ.get("SAVE_SCREENSHOTS"):  # desktop: the page's top; phone: from the caption down
        width, height = page.viewport_size["width"], page.viewport_size["height"]
        page.evaluate(
            "top => top ? scrollTo(0, 0) : document.querySelector('#caption-text').scrollIntoView()", width > 640
        )
        Path(os.environ["SAVE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(os.environ["SAVE_SCREENSHOTS"]) / f"page_{width}x{height}.png"))
