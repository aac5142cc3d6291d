"""The demo in a real browser (headless Chromium): upload and caption, then step through the words by click, hover,
arrow keys, slider and gallery with no network request (the page draws every heatmap itself); the gates and the
beam's alternatives as /caption returns them; the figure download; a hard model's crisp cell; examples; a friendly
error for a non-image.

SAVE_SCREENSHOT=page.png also saves the page after the first test there (BROWSER_TEST_PHOTO picks the upload);
BROWSER_TEST_MODEL=assets/model serves a real model (alone) instead of the tiny scripted ones.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import make_hard_model, open_demo_page
from gradio_client import Client, handle_file
from PIL import Image

from captioning import payload
from captioning.cli import app
from captioning.model import Caption, Captioner

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(os.environ.get("BROWSER_TEST_PHOTO", ROOT / "assets" / "examples" / "dogs.jpg"))
PHOTO = ROOT / "assets" / "examples" / "astronaut.jpg"  # a fresh upload for the error test
DRAWN_JS = "() => ({...(document.querySelector('#heatmap canvas')?.dataset || {})})"
PIXELS_JS = "() => document.querySelector('#heatmap canvas').toDataURL()"


class ThreeCaptions:
    """The tiny model, whose captions never end, scripted into a beam with k different captions: the tiny model's
    own (its real grids and gates), then that caption rotated by 1, 2, ... words (grids and gates rotated along),
    each a little less likely. The server, the JSON and the page are the real ones."""

    def __init__(self, captioner: Captioner):
        self.captioner, self.config = captioner, captioner.config

    def __getattr__(self, name):  # everything else (word map, decoder: a typed sentence's probe) is the tiny model's
        return getattr(self.captioner, name)

    def image_batch(self, images):
        return self.captioner.image_batch(images)

    def encode(self, images):
        return self.captioner.encode(images)

    def caption_pools(self, features, beam_size: int = 3) -> list[list[Caption]]:
        pools = self.captioner.caption_pools(features, beam_size)
        return [[self.rotated(pool[0], i) for i in range(beam_size)] for pool in pools]

    @staticmethod
    def rotated(caption: Caption, i: int) -> Caption:
        words = caption.words[i:] + [f"w{i}"] * i  # a different caption of the same length
        return Caption(words, np.roll(caption.alphas, -i, axis=0), caption.score - i, gates=np.roll(caption.gates, -i))


def page_test_url(variable: str, tiny_model_dir, tmp_path_factory, serve_demo):
    """The demo on a free local port, the examples captioned on first use: the models named in $variable
    (comma-separated directories), else the scripted tiny model and a hard-attention one. A generator: a
    module fixture yields from it."""
    if os.environ.get(variable):
        models = {Path(d).name: Captioner.load(d) for d in os.environ[variable].split(",")}
    else:
        hard = make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("hard") / "model_hard")
        models = {"model": ThreeCaptions(Captioner.load(tiny_model_dir)), "model_hard": Captioner.load(hard)}
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("examples"))}):
        demo = app.build_demo(models, cache_examples="lazy")
    with serve_demo(demo) as local_url:
        yield local_url


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory, serve_demo):
    """The demo: the scripted tiny model and a hard-attention one, or BROWSER_TEST_MODEL."""
    yield from page_test_url("BROWSER_TEST_MODEL", tiny_model_dir, tmp_path_factory, serve_demo)


@pytest.fixture(scope="module")
def page(url, chromium):
    with open_demo_page(chromium, url, accept_downloads=True) as page:
        yield page


def drawn(page) -> dict:
    """What the heatmap canvas shows: word, caption id, alternative, attention mode, draw counter (version),
    captions shown (shown)."""
    return page.evaluate(DRAWN_JS)


def wait_for_word(page, word: int, after: dict | None = None) -> dict:
    """Wait until the heatmap shows word `word`, drawn after `after` (a drawn() state), and return the state."""
    page.wait_for_function(
        "([word, version]) => { const d = document.querySelector('#heatmap canvas')?.dataset;"
        " return d && d.word === String(word) && Number(d.version) > version; }",
        arg=[word, int((after or {}).get("version", 0))],
    )
    return drawn(page)


def caption_photo(page, photo: Path, model: str | None = None) -> dict:
    """Upload `photo`, pick `model` (if given), press Caption; wait for the caption and its first heatmap."""
    before = drawn(page)
    page.locator("#image-input input[type=file]").set_input_files(str(photo))
    page.wait_for_selector(f"#image-input img[src*='{photo.stem}']")
    if model:
        page.locator("#model-choice").get_by_label(model, exact=True).check()
    page.click("#caption-button")
    page.wait_for_function(
        "shown => { const d = document.querySelector('#heatmap canvas')?.dataset;"
        " return d && Number(d.shown || 0) > shown && d.word === '0'; }",
        arg=int(before.get("shown", 0)),
    )
    return drawn(page)


def current_chip(page) -> int:
    return page.evaluate(
        "() => [...document.querySelectorAll('#words [role=button]')]"
        ".findIndex(c => c.getAttribute('aria-pressed') === 'true')"
    )


def page_data(page) -> dict:
    """The per-word data the page is drawing from."""
    return page.evaluate("() => window.satDemo.state.data")


def test_words_step_by_click_keys_slider_and_gallery_without_a_request(page, tmp_path):
    state = caption_photo(page, EXAMPLE)
    caption = page.locator("#caption-text textarea").input_value()
    chips = page.locator("#words [role=button]")
    n_words = chips.count()
    assert n_words == len(caption.split()) >= 4 and current_chip(page) == 0
    assert page.locator("#gallery canvas").count() == n_words
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    pictures = {0: page.evaluate(PIXELS_JS)}

    chips.nth(2).click()  # a word chip
    state = wait_for_word(page, 2, state)
    pictures[2] = page.evaluate(PIXELS_JS)
    assert current_chip(page) == 2 and page.locator("#word-slider input[type=number]").input_value() == "2"
    page.keyboard.press("ArrowRight")  # keys step the words
    state = wait_for_word(page, 3, state)
    pictures[3] = page.evaluate(PIXELS_JS)
    page.keyboard.press("ArrowLeft")
    state = wait_for_word(page, 2, state)
    assert page.evaluate(PIXELS_JS) == pictures[2]  # the same word, the same picture
    number = page.locator("#word-slider input[type=number]")  # the slider's number box
    number.fill("1")
    state = wait_for_word(page, 1, state)
    page.locator("#word-slider input[type=range]").press("ArrowRight")  # the slider itself
    state = wait_for_word(page, 2, state)
    assert current_chip(page) == 2
    chips.nth(0).hover()  # hovering previews a word, leaving shows the selected one again
    state = wait_for_word(page, 0, state)
    page.mouse.move(5, 5)
    state = wait_for_word(page, 2, state)
    page.locator("#gallery [role=button]").nth(3).click()  # a gallery tile
    state = wait_for_word(page, 3, state)
    assert current_chip(page) == 3 and len(set(pictures.values())) == 3  # each word its own heatmap
    page.locator("#gallery [role=button]").nth(2).click()
    state = wait_for_word(page, 2, state)
    assert requests == [], f"stepping through the words made requests: {requests}"

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOT"):
        Path(os.environ["SAVE_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["SAVE_SCREENSHOT"])


def test_gates_and_alternatives_match_the_caption_api(page, url, tmp_path):
    caption_photo(page, EXAMPLE)
    text, data = Client(url, verbose=False, download_files=str(tmp_path)).predict(
        handle_file(str(EXAMPLE)), 3, api_name="/caption"
    )  # the same photo, model and beam as the page
    assert page.locator("#caption-text textarea").input_value() == text
    gates = page.evaluate(
        "() => [...document.querySelectorAll('#words [role=button] .sat-gate')].map(g => Number(g.dataset.gate))"
    )
    np.testing.assert_allclose(gates, data["gates"], atol=1e-9)
    assert all(0 < g < 1 for g in gates)
    captions = [data, *data["alternatives"]]
    items = page.locator("#alternatives [role=button]")
    assert items.count() == len(captions) >= (1 if os.environ.get("BROWSER_TEST_MODEL") else 3)
    for i, caption in enumerate(captions):
        assert items.nth(i).locator(".sat-alt-text").inner_text() == f"{i + 1}. {caption['caption']}"
        assert float(items.nth(i).locator(".sat-alt-score").get_attribute("data-score")) == caption["score"]
    if len(captions) < 2:
        return
    before = drawn(page)
    items.nth(1).click()  # another caption of the beam: its own words, gates and attention
    after = wait_for_word(page, 0, before)
    assert after["alternative"] == "1" and items.nth(1).get_attribute("aria-pressed") == "true"
    assert page.locator("#words [role=button] .sat-word-text").all_inner_texts() == captions[1]["words"]
    np.testing.assert_allclose(
        page.evaluate("() => [...document.querySelectorAll('#words .sat-gate')].map(g => Number(g.dataset.gate))"),
        captions[1]["gates"],
    )
    assert page.locator("#gallery canvas").count() == len(captions[1]["words"])
    items.nth(0).click()
    assert wait_for_word(page, 0, after)["alternative"] == "0"


def test_the_figure_download_is_a_png_with_one_panel_per_word(page, tmp_path):
    caption_photo(page, EXAMPLE)
    data = page_data(page)
    with page.expect_download() as download:
        page.click("#download-figure")
    path = tmp_path / "figure.png"
    download.value.save_as(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and download.value.suggested_filename.endswith(".png")
    shown = payload.decode_image(data["image"])
    layout = page.evaluate(
        "([n, aspect]) => window.satDemo.figureLayout(n, aspect)", [len(data["words"]), shown.height / shown.width]
    )
    figure = np.asarray(Image.open(path).convert("RGB")).astype(int)  # (H, W, 3)
    assert figure.shape[:2] == (layout["height"], layout["width"])
    assert len(layout["panels"]) == len(data["words"]) + 1  # the photo, then one panel per word
    panels = [figure[b["y"] : b["y"] + b["h"], b["x"] : b["x"] + b["w"]] for b in layout["panels"]]
    photo = np.asarray(shown.resize((panels[0].shape[1], panels[0].shape[0]), Image.BILINEAR)).astype(int)
    assert np.abs(panels[0] - photo).mean() < 12  # panel 0 is the photo itself
    assert all(np.abs(panel - photo).mean() > 1 for panel in panels[1:])  # every word's panel is tinted
    gaps = figure[:, layout["panels"][0]["x"] + layout["panels"][0]["w"] + 2]  # the column between two panels
    assert (gaps > 240).all()  # white space between the panels


@pytest.mark.skipif(bool(os.environ.get("BROWSER_TEST_MODEL")), reason="serves BROWSER_TEST_MODEL alone")
def test_a_hard_model_shows_its_chosen_cell_as_a_crisp_square(page):
    state = caption_photo(page, EXAMPLE, model="model_hard")
    data = page_data(page)
    assert state["attention"] == "hard" and data["model"] == "model_hard" and data["attention"] == "hard"
    changed = page.evaluate("""() => {
        const canvas = document.querySelector('#heatmap canvas'), w = canvas.width, h = canvas.height;
        const plain = document.createElement('canvas'); plain.width = w; plain.height = h;
        const p = plain.getContext('2d'); p.imageSmoothingQuality = 'high';
        p.drawImage(window.satDemo.state.photo, 0, 0, w, h);
        const a = canvas.getContext('2d').getImageData(0, 0, w, h).data, b = p.getImageData(0, 0, w, h).data;
        let x0 = w, y0 = h, x1 = -1, y1 = -1;
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
            const i = 4 * (y * w + x);
            if (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]) > 6) {
                x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
        }
        return {x0, y0, x1, y1, w, h};
    }""")
    assert "alphas" not in data  # the page's copy: packed grids only
    row, col = np.unravel_index(int(np.argmax(payload.unpack_grids(data)[0])), (14, 14))
    cell_w, cell_h = changed["w"] / 14, changed["h"] / 14
    assert abs(changed["x0"] - col * cell_w) <= 1.5 and abs(changed["x1"] + 1 - (col + 1) * cell_w) <= 1.5
    assert abs(changed["y0"] - row * cell_h) <= 1.5 and abs(changed["y1"] + 1 - (row + 1) * cell_h) <= 1.5
    page.locator("#model-choice").get_by_label("model", exact=True).check()  # back to the soft model


def test_clicking_an_example_captions_it(page):
    before = drawn(page)
    page.locator("#examples").get_by_text("cat", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#image-input img')?.src || '').includes('cat')")
    wait_for_word(page, 0, before)
    assert page.locator("#caption-text textarea").input_value().strip()
    assert page_data(page)["words"] == page.locator("#caption-text textarea").input_value().split()


def test_non_image_upload_shows_a_friendly_error_then_a_photo_still_works(page, tmp_path):
    notes = tmp_path / "notes.jpg"  # named like a photo, so the page's image-only file filter lets it through
    notes.write_text("this is a shopping list, not a photo\n" * 20)
    page.locator("#image-input input[type=file]").set_input_files(str(notes))
    page.click("#caption-button")
    toast = page.get_by_text("Could not read this image: the file is not a JPEG, PNG, GIF, WebP, BMP or TIFF image")
    toast.first.wait_for()  # gr.Error: a toast with the message, not a stack trace
    assert "Traceback" not in page.content()

    page.get_by_role("button", name="Remove Image").click()  # what a user does: drop the bad file, pick a photo
    caption_photo(page, PHOTO)  # the same page captions a real photo afterwards
    assert page.locator("#caption-text textarea").input_value().strip()
    assert current_chip(page) == 0


def test_the_page_draws_what_step_renders_for_api_clients(page, url, tmp_path):
    """The browser's heatmap and /step's server-rendered one put the heat in the same place."""
    caption_photo(page, EXAMPLE)
    client = Client(url, verbose=False, download_files=str(tmp_path))
    _, data = client.predict(handle_file(str(EXAMPLE)), 3, api_name="/caption")  # as the page's, with `alphas`
    assert data["id"] == page_data(page)["id"]  # the same caption of the same photo
    server = np.asarray(Image.open(client.predict(1, data, api_name="/step")[0]).convert("L")).astype(float)
    page.locator("#words [role=button]").nth(1).click()
    page.wait_for_function("() => document.querySelector('#heatmap canvas').dataset.word === '1'")
    png = page.evaluate(PIXELS_JS).split(",", 1)[1]
    browser = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L")).astype(float)
    photo = np.asarray(payload.decode_image(data["image"]).convert("L")).astype(float)
    assert browser.shape == server.shape == photo.shape
    heat_browser, heat_server = np.abs(browser - photo), np.abs(server - photo)  # (H, W) where it is tinted
    assert np.corrcoef(heat_browser.ravel(), heat_server.ravel())[0, 1] > 0.8


COUNT_JS = """() => { window.showCalls = 0; const show = window.satDemo.show;
    window.satDemo.show = data => { window.showCalls += 1; return show(data); }; }"""
# the events the Caption button's click runs that write a caption (their fn_index), from the page's Gradio config
CAPTION_FNS_JS = """() => { const config = window.gradio_config;
    const id = name => config.components.find(c => c.props.elem_id === name).id;
    const button = id('caption-button'), text = id('caption-text');
    return config.dependencies.filter(d => d.outputs.includes(text)
        && d.targets.some(([target, event]) => target === button && event === 'click')).map(d => d.id); }"""


def test_each_caption_click_is_one_request_and_one_drawing(page):
    """One caption request per Caption click, one hand-over to the page per caption and one drawing of it; the
    same photo uploaded again is a new photo (its upload took the caption off the page), drawn once again."""
    page.evaluate(COUNT_JS)
    caption_photo(page, EXAMPLE)
    page.wait_for_timeout(500)  # a second hand-over would be here by now
    assert page.evaluate("() => window.showCalls") == 1
    caption_fns = page.evaluate(CAPTION_FNS_JS)
    assert len(caption_fns) == 1
    joins = []  # fn_index of every queued call the page makes
    page.on(
        "request",
        lambda r: (
            joins.append(r.post_data_json.get("fn_index")) if "/queue/join" in r.url and r.method == "POST" else None
        ),
    )
    for clicks, (photo, drawings) in enumerate([(PHOTO, 1), (EXAMPLE, 1), (EXAMPLE, 1)], start=1):
        before = drawn(page)
        caption_photo(page, photo)
        page.wait_for_timeout(500)  # a second request, hand-over or drawing would be here by now
        after = drawn(page)
        assert int(after["shown"]) == int(before["shown"]) + 1, (before, after)
        assert int(after["version"]) == int(before["version"]) + drawings, (before, after)
        assert page.evaluate("() => window.showCalls") == clicks + 1
        assert [fn for fn in joins if fn in caption_fns] == caption_fns * clicks, joins
