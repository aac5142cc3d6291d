"""The attention check in a real browser (headless Chromium): switch "Check attention" on, each word chip gets its
line (p as is, hidden here, hidden elsewhere) with /check's numbers, the panel draws the attention, the gradient
map or the hidden photo, and stepping words makes no request."""

from __future__ import annotations

import pytest
from conftest import open_demo_page
from gradio_client import Client, handle_file
from test_browser import caption_photo, drawn, wait_for_word

from captioning.cli import app
from captioning.model import Captioner
from captioning.shipped import EXAMPLES_DIR

pytestmark = pytest.mark.slow

DOGS = EXAMPLES_DIR / "dogs.jpg"
LINES_JS = (
    "() => [...document.querySelectorAll('#words .sat-check-line')]"
    ".map(l => [Number(l.dataset.prob), Number(l.dataset.here), Number(l.dataset.elsewhere)])"
)


@pytest.fixture(scope="module")
def url(tiny_model_dir, serve_demo):
    demo = app.build_demo({"model": Captioner.load(tiny_model_dir)}, examples=[], cache_examples=False)
    with serve_demo(demo) as local_url:
        yield local_url


def panel(page) -> dict:
    return page.evaluate("() => ({...document.querySelector('#check-panel canvas').dataset})")


def wait_for_panel(page, word: int, mode: str, after: dict) -> dict:
    page.wait_for_function(
        "([word, mode, version]) => { const d = document.querySelector('#check-panel canvas').dataset;"
        " return d.word === String(word) && d.mode === mode && Number(d.version) > version; }",
        arg=[word, mode, int(after.get("version", 0))],
    )
    return panel(page)


def test_the_check_labels_each_word_and_steps_without_a_request(url, chromium, tmp_path):
    client = Client(url, verbose=False, download_files=str(tmp_path))
    with open_demo_page(chromium, url, timeout_ms=120_000) as page:
        caption_photo(page, DOGS)
        words = page.locator("#words [role=button] .sat-word-text").all_inner_texts()
        page.locator("#check input[type=checkbox]").check()
        page.wait_for_function("n => document.querySelectorAll('#words .sat-check-line').length === n", arg=len(words))
        expected = client.predict(handle_file(str(DOGS)), " ".join(words), "model", api_name="/check")
        assert expected["words"] == words
        shown = page.evaluate(LINES_JS)
        assert [s[0] for s in shown] == expected["probs"]
        assert [s[1] for s in shown] == expected["probs_hidden_here"]
        assert [s[2] for s in shown] == expected["probs_hidden_elsewhere"]
        first = page.locator("#words .sat-check-line").first.inner_text()
        assert first.startswith(f"p {expected['probs'][0]:.2f} -> ") and "hidden here, -> " in first
        assert page.locator("#check-panel").is_visible() and "hidden" in page.locator("#check-panel").inner_text()

        requests = []
        page.on("request", lambda request: requests.append(request.url))
        state, seen = drawn(page), panel(page)
        page.locator("#words [role=button]").nth(2).click()
        state = wait_for_word(page, 2, state)
        seen = wait_for_panel(page, 2, "gradient", seen)
        for mode in ("hidden", "attention", "gradient"):
            page.locator(f"#check-panel [data-mode={mode}]").click()
            seen = wait_for_panel(page, 2, mode, seen)
        page.keyboard.press("ArrowRight")
        wait_for_word(page, 3, state)
        wait_for_panel(page, 3, "gradient", seen)
        assert page.locator("#words .sat-check-line").count() == len(words)
        assert requests == [], f"stepping through the checked words made requests: {requests}"

        page.locator("#check input[type=checkbox]").uncheck()
        page.wait_for_function("() => document.querySelector('#check-panel').hidden")
        assert page.locator("#words .sat-check-line").count() == 0
