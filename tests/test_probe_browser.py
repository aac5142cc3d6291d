"""Your own caption and the model comparison in a real browser (headless Chromium): type a sentence, see each word's
probability, rank and <unk> mark with the total beside the model's own caption's, step through its words with no
request, go back to the model's caption; compare mode shows every model's caption and its reading of the sentence,
one row per model, word-aligned; bad text gets a message and leaves the page as it was.

PROBE_TEST_MODELS=assets/model,assets/model_hard serves those models instead of the tiny ones, and
PROBE_TEST_SENTENCE types another sentence (with a word outside the vocabulary) for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_hard_model, open_demo_page
from gradio_client import Client, handle_file
from test_browser import caption_photo, current_chip, drawn, wait_for_word

from captioning.cli import app
from captioning.model import Captioner
from captioning.shipped import EXAMPLES_DIR
from captioning.text import tokenize

pytestmark = pytest.mark.slow

DOGS, CAT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"
# words of the tiny models, one outside their vocabulary (PROBE_TEST_SENTENCE: another, with one such word too)
SENTENCE = os.environ.get("PROBE_TEST_SENTENCE", "A dog sits on the zzyzx mat.")
WORDS = tokenize(SENTENCE)
PROBE_BOX = "#probe-text textarea, #probe-text input"
# The moment Enter is pressed in the probe box and the moment the summary line shows, in page time (ms).
TIME_PROBE_JS = """() => { window.probeTimes = {};
    document.querySelector('#probe-text').addEventListener('keydown', e => {
        if (e.key === 'Enter') window.probeTimes.asked = performance.now(); }, true);
    new MutationObserver(() => { const box = document.querySelector('#probe-summary');
        if (box && !box.hidden && !window.probeTimes.shown) window.probeTimes.shown = performance.now(); })
        .observe(document.querySelector('#probe-summary'), {attributes: true, childList: true}); }"""
PROBS_JS = (
    "() => [...document.querySelectorAll('#words .sat-prob')]"
    ".map(p => [Number(p.dataset.prob), Number(p.dataset.rank)])"
)


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory, serve_demo):
    """The demo on a free local port: the tiny model and a hard-attention variant, or PROBE_TEST_MODELS."""
    if os.environ.get("PROBE_TEST_MODELS"):
        directories = [Path(d) for d in os.environ["PROBE_TEST_MODELS"].split(",")]
        models = {d.name: Captioner.load(d) for d in directories}
        for captioner in models.values():
            captioner.use_fastest_encoder()  # as app.py serves them
    else:
        hard = make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("hard") / "model_hard")
        models = {"model": Captioner.load(tiny_model_dir), "model_hard": Captioner.load(hard)}
    demo = app.build_demo(models, examples=[], cache_examples=False)
    with serve_demo(demo) as local_url:
        yield local_url


@pytest.fixture(scope="module")
def client(url, tmp_path_factory) -> Client:
    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture
def page(url, chromium):
    with open_demo_page(chromium, url, timeout_ms=30_000) as page:
        yield page


def probe_sentence(page, text: str) -> None:
    """Type `text` in the probe box and press Enter; wait until the viewer shows it."""
    box = page.locator(PROBE_BOX).first
    box.fill(text)
    box.press("Enter")
    page.wait_for_function("text => window.satDemo.state.probe?.text === text", arg=text)


def compare_rows(page) -> list[dict]:
    """The compare view's rows: model name, score, and each tile's word label and left edge (px)."""
    return page.evaluate("""() => [...document.querySelectorAll('#compare-rows .sat-compare-head')].map(head => {
        const tiles = [...document.querySelectorAll(`#compare-rows .sat-tile[data-model="${head.dataset.model}"]`)];
        return {model: head.dataset.model, score: Number(head.querySelector('.sat-compare-score').dataset.score),
                words: tiles.map(t => t.querySelector('.sat-tile-word').textContent.replace(/^\\d+: /, '')),
                left: tiles.map(t => Math.round(t.getBoundingClientRect().left)),
                probs: tiles.map(t => t.querySelector('.sat-prob')?.dataset.prob ?? null)}; })""")


def test_a_typed_sentence_shows_each_words_probability_and_steps_without_a_request(page, client):
    caption_photo(page, DOGS)
    own = page.evaluate("() => window.satDemo.state.data.score")  # the model's own caption's log-probability
    page.evaluate(TIME_PROBE_JS)
    probe_sentence(page, SENTENCE)
    times = page.evaluate("() => window.probeTimes")
    print(f"\nprobe: Enter to words on screen {times['shown'] - times['asked']:.0f} ms")
    expected = client.predict(handle_file(str(DOGS)), SENTENCE, api_name="/probe")  # the same model and photo

    chips = page.locator("#words [role=button]")
    assert page.locator("#words [role=button] .sat-word-text").all_inner_texts() == expected["words"] == WORDS
    shown = np.asarray(page.evaluate(PROBS_JS))  # (n_words, 2): probability, rank
    np.testing.assert_allclose(shown[:, 0], np.exp(expected["log_probs"]), rtol=1e-6)
    np.testing.assert_allclose(shown[:, 0], expected["probs"], atol=1e-4)
    assert shown[:, 1].tolist() == expected["ranks"]
    marked = page.locator("#words .sat-word.unknown .sat-word-text").all_inner_texts()
    assert marked == [word for word, unknown in zip(WORDS, expected["unknown"]) if unknown]
    assert marked and page.locator("#words .sat-word.unknown .sat-unk").first.inner_text() == "<unk>"
    total = page.locator("#probe-summary .sat-probe-total")
    assert float(total.get_attribute("data-total")) == expected["total_log_prob"]
    assert float(page.locator("#probe-summary .sat-probe-own").get_attribute("data-score")) == own
    assert f"log p = {expected['total_log_prob']:.2f}" in total.inner_text()
    items, sentence = page.locator("#alternatives [role=button]"), page.locator("#probe-sentence")  # apart
    assert sentence.locator(".sat-alt-text").inner_text() == expected["caption"]
    assert expected["caption"] not in page.locator("#alternatives").inner_text()

    requests = []
    page.on("request", lambda request: requests.append(request.url))
    state = drawn(page)
    chips.nth(3).click()
    state = wait_for_word(page, 3, state)
    page.keyboard.press("ArrowRight")
    state = wait_for_word(page, 4, state)
    page.locator("#word-slider input[type=number]").fill("6")
    state = wait_for_word(page, 6, state)
    page.locator("#gallery [role=button]").nth(1).click()
    state = wait_for_word(page, 1, state)
    assert current_chip(page) == 1 and page.locator("#gallery canvas").count() == len(WORDS)
    items.nth(0).click()  # the model's own caption, from the beam's list
    state = wait_for_word(page, 0, state)
    assert page.locator("#words .sat-prob").count() == 0 and page.locator("#probe-summary").is_visible()
    sentence.click()  # and back to the sentence
    state = wait_for_word(page, 0, state)
    assert page.locator("#words .sat-prob").count() == len(WORDS)
    assert requests == [], f"stepping through the sentence made requests: {requests}"

    page.click("#probe-back")  # the model's caption alone again
    page.wait_for_function("() => !window.satDemo.state.probe")
    assert page.locator("#probe-summary").is_hidden() and page.locator("#words .sat-prob").count() == 0
    assert (
        page.locator("#words [role=button] .sat-word-text").all_inner_texts()
        == page.locator("#caption-text textarea").input_value().split()
    )


def test_compare_mode_shows_every_model_one_under_the_other_word_aligned(page, client):
    caption_photo(page, DOGS)
    page.locator("#compare input[type=checkbox]").check()
    page.wait_for_function(
        "() => document.querySelector('#compare-view .sat-compare')?.dataset.kind === 'caption'"
        " && !document.querySelector('#compare-view .sat-compare').hidden"
    )
    expected = client.predict(handle_file(str(DOGS)), 3, True, api_name="/compare")["rows"]
    rows = compare_rows(page)
    assert [r["model"] for r in rows] == [e["model"] for e in expected] == ["model", "model_hard"]
    for row, caption in zip(rows, expected):
        assert row["words"] == caption["words"] and row["score"] == caption["score"]
    assert expected[0]["caption"] != expected[1]["caption"]  # two models, two captions

    probe_sentence(page, SENTENCE)
    page.wait_for_function("() => document.querySelector('#compare-view .sat-compare')?.dataset.kind === 'probe'")
    rows = compare_rows(page)
    assert [r["words"] for r in rows] == [WORDS, WORDS]
    assert rows[0]["left"] == rows[1]["left"]  # the same word in the same column
    assert rows[0]["probs"] != rows[1]["probs"] and None not in rows[0]["probs"] + rows[1]["probs"]
    for row in rows:
        reading = client.predict(handle_file(str(DOGS)), SENTENCE, row["model"], api_name="/probe")
        assert row["score"] == reading["total_log_prob"]
    state = drawn(page)
    page.locator('#compare-rows .sat-tile[data-model="model_hard"][data-index="5"]').click()
    wait_for_word(page, 5, state)  # the word shown above too
    assert page.locator("#compare-rows .sat-tile.current").count() == 2  # its column, in both rows

    caption_photo(page, CAT)  # another photo while comparing: every model captions it
    page.wait_for_function(
        "() => { const c = window.satDemo.state.compare.data;"
        " return c && c.kind === 'caption' && c.image === window.satDemo.state.data.image; }"
    )
    cat = client.predict(handle_file(str(CAT)), 3, True, api_name="/compare")["rows"]
    page.wait_for_function(
        "n => document.querySelectorAll('#compare-rows .sat-tile').length === n", arg=sum(len(r["words"]) for r in cat)
    )
    assert [r["words"] for r in compare_rows(page)] == [r["words"] for r in cat]
    page.locator("#compare input[type=checkbox]").uncheck()
    page.wait_for_function("() => document.querySelector('#compare-view .sat-compare').hidden")


def test_bad_text_gets_a_message_and_leaves_the_page_as_it_was(page):
    caption_photo(page, DOGS)
    words = page.locator("#words [role=button] .sat-word-text").all_inner_texts()
    box = page.locator(PROBE_BOX).first
    box.fill("?!...")
    page.click("#probe-button")  # the button works as Enter does
    page.wait_for_selector("text=only punctuation or symbols")
    box.fill("собака смотрит в окно")  # non-Latin: read as unknown words, with a note
    box.press("Enter")
    page.wait_for_function("() => window.satDemo.state.probe?.words?.length === 4")
    page.wait_for_selector("text=it knows English words only")
    assert page.locator("#words .sat-word.unknown").count() == 4
    page.click("#probe-back")
    page.wait_for_function("() => !window.satDemo.state.probe")
    assert page.locator("#words [role=button] .sat-word-text").all_inner_texts() == words
