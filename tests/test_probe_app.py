"""The probe's front ends on tiny models: /probe and /compare through gradio_client, bad input, the feature cache
that spares the encoder, the page's probe and compare data, and `python -m captioning.cli.caption --probe`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import make_hard_model
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from captioning import handlers
from captioning.cli import app
from captioning.cli.caption import main as caption_main
from captioning.model import Captioner
from captioning.probe import probe
from captioning.shipped import EXAMPLES_DIR

DOGS, CAT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"
SENTENCE = "a dog sits on the mat"


def count_encodes(captioner: Captioner) -> list[int]:
    """Record every encoder run of this captioner (one entry per call)."""
    calls, encode = [], captioner.encode
    captioner.encode = lambda *args, **kwargs: calls.append(1) or encode(*args, **kwargs)
    return calls


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tmp_path_factory) -> dict[str, Captioner]:
    """The tiny soft model and a hard-attention variant of it, by page name."""
    hard = make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("hard") / "tiny_hard")
    return {"tiny": Captioner.load(tiny_model_dir), "tiny_hard": Captioner.load(hard)}


@pytest.fixture(scope="module")
def served(two_models, tmp_path_factory, launch_demo):
    """(client, encodes): the demo serving both models; encodes[name] counts that model's encoder runs."""
    encodes = {name: count_encodes(captioner) for name, captioner in two_models.items()}
    demo = app.build_demo(two_models, examples=[], cache_examples=False)
    demo.queue(max_size=8)
    url = launch_demo(demo)
    try:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads"))), encodes
    finally:
        demo.close()


def test_probe_returns_the_library_probe_per_word(served, two_models):
    client, _ = served
    data = client.predict(handle_file(str(DOGS)), SENTENCE, api_name="/probe")  # the first model by default
    expected = probe(two_models["tiny"], DOGS, SENTENCE)[0]
    assert (data["model"], data["attention"]) == ("tiny", "soft")
    assert data["words"] == SENTENCE.split() and data["caption"] == SENTENCE
    assert data["unknown"] == [False] * 6 and data["ranks"] == expected.ranks.tolist()
    np.testing.assert_allclose(data["probs"], expected.probs, atol=1e-5)
    np.testing.assert_allclose(data["log_probs"], expected.log_probs, atol=1e-3)
    np.testing.assert_allclose(data["gates"], expected.gates, atol=1e-4)
    assert np.asarray(data["alphas"]).shape == (6, 14, 14) and data["grid"] == [14, 14]
    np.testing.assert_allclose(data["alphas"], expected.alphas, atol=1e-4)
    assert data["total_log_prob"] == pytest.approx(expected.total_log_prob, abs=1e-3) == data["score"]
    assert all(0 < p < 1 for p in data["probs"]) and all(r >= 1 for r in data["ranks"])

    hard = client.predict(handle_file(str(DOGS)), SENTENCE, "tiny_hard", api_name="/probe")
    assert (hard["model"], hard["attention"]) == ("tiny_hard", "hard") and hard["words"] == data["words"]
    assert hard["probs"] != data["probs"]  # another model, other probabilities
    assert {float(v) for v in np.unique(hard["alphas"])} == {0.0, 1.0}  # the one cell a hard model reads


def test_probing_a_captioned_photo_does_not_run_the_encoder_again(served):
    client, encodes = served
    client.predict(handle_file(str(CAT)), 3, "tiny", api_name="/caption")
    before = len(encodes["tiny"])
    for text in ("a cat sits on the mat", "a red cup of coffee", "a man on the sky"):
        client.predict(handle_file(str(CAT)), text, "tiny", api_name="/probe")  # uploaded again: same bytes
    assert len(encodes["tiny"]) == before  # the caption's features were reused
    hard_before = len(encodes["tiny_hard"])
    client.predict(handle_file(str(CAT)), "a cat", "tiny_hard", api_name="/probe")  # features are per model
    client.predict(handle_file(str(CAT)), "a dog", "tiny_hard", api_name="/probe")
    client.predict(handle_file(str(CAT)), 3, "tiny_hard", api_name="/caption")  # a caption after a probe too
    assert len(encodes["tiny_hard"]) == hard_before + 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the text is empty"),
        ("   ", "the text is empty"),
        ("?! ... --", "no words to score, only punctuation"),
        ("🐶🐶", "no words to score"),
    ],
)
def test_text_without_words_is_a_friendly_error(served, text, message):
    client, _ = served
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(DOGS)), text, api_name="/probe")


def test_probe_without_a_photo_is_a_friendly_error(served):
    client, _ = served
    with pytest.raises(AppError, match="upload a photo first"):
        client.predict(None, SENTENCE, api_name="/probe")
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio checks the model's name
        client.predict(handle_file(str(DOGS)), SENTENCE, "nope", api_name="/probe")


def test_long_and_non_latin_text_are_scored_with_a_note(served, two_models):
    client, _ = served
    longest = two_models["tiny"].config.max_caption_len  # 10 for the tiny model
    long = client.predict(handle_file(str(DOGS)), "a dog sits on the mat " * 84, api_name="/probe")  # 504 words
    assert long["truncated"] is True and len(long["words"]) == len(long["probs"]) == longest
    foreign = client.predict(handle_file(str(DOGS)), "собака сидит на коврике", api_name="/probe")
    assert foreign["words"] == ["собака", "сидит", "на", "коврике"] and all(foreign["unknown"])
    assert all(p is not None and 0 < p < 1 for p in foreign["probs"])
    assert foreign["total_log_prob"] < 0


def test_the_notes_are_gradio_warnings(two_models):
    """Outside a request gr.Warning is a Python warning: the same text the page shows in a toast."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.probe_sentence(two_models, str(DOGS), "a dog on zzyzx " * 10)
    notes = [str(w.message) for w in caught]
    assert any("Only the first 10 words were scored" in note for note in notes)
    assert any("scored as the unknown word: zzyzx" in note for note in notes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.probe_sentence(two_models, str(DOGS), "一只狗")
    assert [str(w.message) for w in caught] == [
        "Not in the model's vocabulary (it knows English words only), scored as the unknown word: 一只狗."
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.probe_sentence(two_models, str(DOGS), SENTENCE)
    assert not caught


def test_compare_captions_the_photo_with_every_model(served, two_models):
    client, _ = served
    data = client.predict(handle_file(str(DOGS)), 3, True, api_name="/compare")
    assert data["kind"] == "caption" and [row["model"] for row in data["rows"]] == ["tiny", "tiny_hard"]
    for row in data["rows"]:
        expected = two_models[row["model"]].caption(DOGS, beam_size=3)[0]
        assert row["caption"] == expected.text and row["words"] == expected.words
        assert row["score"] == pytest.approx(expected.score, abs=1e-3) and len(row["gates"]) == len(row["words"])
        assert row["attention"] == two_models[row["model"]].config.decoder.attention and "alphas" not in row
    assert data["image"].startswith("data:image/jpeg;base64,")
    assert client.predict(handle_file(str(DOGS)), 3, False, api_name="/compare") == {}  # switched off


def test_the_pages_probe_has_every_models_reading_in_compare_mode(two_models):
    cache = handlers.FeatureCache()
    chosen, compare = app.page_probe(two_models, str(DOGS), SENTENCE, "tiny_hard", True, cache=cache)
    assert chosen["model"] == "tiny_hard" and chosen["text"] == SENTENCE and "alphas" not in chosen
    assert chosen["image"].startswith("data:image/jpeg;base64,") and chosen["image"] == compare["image"]
    assert compare["kind"] == "probe" and [row["model"] for row in compare["rows"]] == ["tiny", "tiny_hard"]
    assert all(row["words"] == SENTENCE.split() for row in compare["rows"])  # word-aligned
    assert compare["rows"][1]["probs"] == chosen["probs"]
    alone, untouched = app.page_probe(two_models, str(DOGS), SENTENCE, "tiny", False, cache=cache)
    assert alone["probs"] == compare["rows"][0]["probs"] and untouched == gr.skip()
    assert len(cache.entries) == 2  # one encoded photo per model


def test_the_feature_cache_keeps_the_most_recent_photos():
    cache = handlers.FeatureCache(size=2)
    photos = {name: handlers.EncodedPhoto(np.zeros(1), name) for name in "abc"}
    cache.put(("m", "a"), photos["a"])
    cache.put(("m", "b"), photos["b"])
    assert cache.get(("m", "a")) is photos["a"]  # now the most recent
    cache.put(("m", "c"), photos["c"])
    assert cache.get(("m", "b")) is None and cache.get(("m", "a")) is photos["a"] and len(cache.entries) == 2


def test_the_page_has_the_probe_box_and_the_compare_switch(two_models):
    def components(models) -> dict:
        config = app.build_demo(models, examples=[], cache_examples=False).get_config_file()
        return {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["props"].get("elem_id")}

    both = components(two_models)
    assert {"probe-text", "probe-button", "compare", "compare-view", "probe-data", "compare-data"} <= set(both)
    assert both["compare"]["visible"] is True and both["probe-text"]["visible"] is True
    assert "showProbe" in app.page_head() and "probe-summary" in app.viewer_html()
    assert components({"tiny": two_models["tiny"]})["compare"]["visible"] is False  # one model: nothing to compare


def test_the_command_line_prints_each_words_probability_and_rank(tiny_model_dir, capsys):
    model = str(tiny_model_dir)
    assert caption_main([str(DOGS), "--model", model, "--probe", "A dog, on zzyzx!"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = probe(Captioner.load(tiny_model_dir), DOGS, "A dog, on zzyzx!")[0]
    assert lines[1].startswith(f'{DOGS}: probe "a dog on zzyzx": log p = {expected.total_log_prob:.2f} (the caption: ')
    assert [line.split()[0] for line in lines[2:]] == ["a", "dog", "on", "zzyzx", "<end>"]
    assert lines[2].split()[1:] == [f"p={expected.probs[0]:.4f}", "rank", str(expected.ranks[0])]
    assert lines[5].endswith("<unk>: not in the vocabulary")

    assert caption_main([str(DOGS), "--model", model, "--probe", "a dog on the mat", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["probe"]["text"] == "a dog on the mat" and record["probe"]["words"] == "a dog on the mat".split()
    assert len(record["probe"]["probs"]) == len(record["probe"]["ranks"]) == 5
    assert (
        abs(sum(record["probe"]["log_probs"]) + record["probe"]["end_log_prob"] - record["probe"]["total_log_prob"])
        < 1e-3
    )

    assert caption_main([str(DOGS), "--model", model, "--probe", "?!"]) == 2
    assert "error: --probe: That text has no words" in capsys.readouterr().err


def test_readme_documents_the_probe_endpoint():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert 'api_name="/probe"' in readme and "--probe" in readme and "docs/probe.png" in readme
