"""The Gradio app (captioning.cli.app and its pieces in cli/page.py): served in-process with tiny random models and
driven through gradio_client, its page's components, its command line and its start-up."""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from pathlib import Path
from unittest import mock

import gradio as gr
import numpy as np
import pytest
from conftest import make_hard_model
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from captioning import handlers, payload, serving, shipped
from captioning.cli import app, page
from captioning.model import Captioner
from captioning.model_thread import ModelThread
from captioning.preprocess import load_image
from captioning.probe import probe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "cat.jpg"
DOGS = shipped.EXAMPLES_DIR / "dogs.jpg"
SENTENCE = "a dog sits on the mat"


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory, serve_demo):
    """(captioner, client, calls): the demo on a free local port; calls counts model invocations (searches)."""
    captioner = Captioner.load(tiny_model_dir)
    calls = []
    search = captioner.caption_pools
    captioner.caption_pools = lambda *args, **kwargs: calls.append(1) or search(*args, **kwargs)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("examples"))}):
        demo = app.build_demo(captioner, cache_examples=True)
    with serve_demo(demo) as url:
        yield captioner, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads"))), calls


def test_caption_returns_text_first_then_per_word_data(served):
    captioner, client, _ = served
    text, data = client.predict(handle_file(str(EXAMPLE)), api_name="/caption")
    assert isinstance(text, str) and text
    best = captioner.caption(load_image(EXAMPLE), beam_size=3)[0]  # the slider's default beam size
    assert text == best.text
    alphas = np.asarray(data["alphas"])  # (n_words, 14, 14)
    assert alphas.shape == (len(data["words"]), 14, 14) and data["words"] == text.split()
    np.testing.assert_allclose(alphas.sum(axis=(1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(data["gates"], best.gates, atol=1e-4)  # each word's gate beta, in (0, 1)
    assert len(data["gates"]) == len(data["words"]) and all(0 < g < 1 for g in data["gates"])
    assert (data["model"], data["attention"], data["beam"]) == ("model", "soft", 3)
    assert data["score"] == pytest.approx(best.score, abs=1e-3)
    assert payload.decode_image(data["image"]).size == load_image(EXAMPLE).size  # small photo: shown at its own size
    np.testing.assert_allclose(payload.unpack_grids(data), alphas / alphas.max(axis=(1, 2), keepdims=True), atol=1e-4)
    for other in data["alternatives"]:  # the beam's other captions, next best first, each with its own data
        assert payload.unpack_grids(other).shape == (len(other["words"]), 14, 14) and "alphas" not in other
        assert len(other["gates"]) == len(other["words"]) and other["caption"] == " ".join(other["words"])
    scores = [data["score"]] + [other["score"] for other in data["alternatives"]]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 3


def test_beam_size_is_an_optional_input(served):
    captioner, client, _ = served
    text, data = client.predict(handle_file(str(EXAMPLE)), 1, api_name="/caption")
    assert text == captioner.caption(load_image(EXAMPLE), beam_size=1)[0].text
    assert data["beam"] == 1 and data["alternatives"] == []  # greedy: one caption


def test_step_renders_each_word_without_running_the_model(served):
    _, client, calls = served
    data = client.predict(handle_file(str(EXAMPLE)), api_name="/caption")[-1]
    n_calls, last = len(calls), len(data["words"]) - 1
    first_image, first_chips = client.predict(0, data, api_name="/step")
    last_image, last_chips = client.predict(last, data, api_name="/step")
    assert len(calls) == n_calls  # stepping reuses the hidden JSON
    first, final = np.asarray(Image.open(first_image)), np.asarray(Image.open(last_image))  # (H, W, 3)
    assert first.shape == final.shape
    assert np.abs(first.astype(int) - final.astype(int)).mean() > 1.0  # a different word, a different heatmap
    assert first_chips[0]["class_or_confidence"] == handlers.CURRENT
    assert last_chips[last]["class_or_confidence"] == handlers.CURRENT
    assert Image.open(client.predict(99, data, api_name="/step")[0]).size == Image.open(last_image).size  # clamped


def test_a_visitors_mistake_is_one_log_line_and_a_server_fault_a_traceback(served, tmp_path, capfd, caplog):
    _, client, _ = served
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(EXAMPLE.read_bytes()[:600])  # valid header, truncated pixels
    mistakes = {
        "Please upload": lambda: client.predict(None, api_name="/caption"),
        "Could not read this image": lambda: client.predict(handle_file(str(broken)), api_name="/caption"),
        "Type a sentence to score": lambda: client.predict(handle_file(str(EXAMPLE)), " ", api_name="/probe"),
        "Caption an image first": lambda: client.predict(0, None, api_name="/step"),
        "damaged or incomplete": lambda: client.predict(0, {"words": ["a"], "image": "x"}, api_name="/step"),
    }
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="app"):
        for message, call in mistakes.items():
            with pytest.raises(AppError, match=message):
                call()
    lines = [record.getMessage() for record in caplog.records if record.name == "app"]
    assert len(lines) == len(mistakes) and all(m in line for m, line in zip(mistakes, lines)), lines
    assert "truncated" in lines[1].lower()  # the cause is in the line: what the server operator needs
    assert "Traceback" not in capfd.readouterr().err

    data = client.predict(handle_file(str(EXAMPLE)), api_name="/caption")[-1]
    with mock.patch.object(handlers, "word_overlay", side_effect=RuntimeError("a fault of the server")):
        with pytest.raises(AppError):
            client.predict(0, data, api_name="/step")
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: a fault of the server" in err  # its own faults keep their traceback


def test_the_api_page_shows_a_short_step_example_that_works(served):
    _, client, _ = served
    step = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/step"]
    assert len(json.dumps(step)) < 3000, len(json.dumps(step))  # not a whole caption's data
    (data,) = [p for p in step["parameters"] if p["parameter_name"] == "data"]
    heatmap, chips = client.predict(1, data["example_input"], api_name="/step")  # the example is a valid request
    assert Image.open(heatmap).size and [c["token"] for c in chips] == data["example_input"]["words"]


def test_examples_are_cached_with_captions(served):
    _, client, calls = served
    n_calls = len(calls)
    text, *_, data = client.predict(0, api_name="/load_example")  # example 0, computed at launch
    assert text and np.asarray(data["alphas"]).shape == (len(text.split()), 14, 14)
    assert len(calls) == n_calls


def test_first_example_is_part_of_the_page_not_a_page_load_event(tiny_model_dir, tmp_path):
    """With eager caching the first example's photo, caption and heatmap are the components' initial values: no load
    event that could land late on a busy server and replace a visitor's upload."""
    captioner = Captioner.load(tiny_model_dir)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path)}):
        config = app.build_demo(captioner, cache_examples=True).get_config_file()
    values = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]}
    first = shipped.example_photos()[0]
    assert values["caption-text"] == captioner.caption(load_image(first), beam_size=3)[0].text
    assert values["image-input"]["orig_name"] == Path(first).name
    assert values["attention-data"]["words"] == values["caption-text"].split()
    assert not [d for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])]


def test_a_handler_answers_through_gradio(caplog):
    """page.answered: a RequestError is the gr.Error the visitor reads (one log line with its cause), a Noted
    answer's notes are warnings (outside a request: Python warnings), a None output leaves that output alone."""

    def refuse(path):
        raise handlers.RequestError(handlers.NO_PHOTO) from ValueError("no file")

    with caplog.at_level(logging.INFO, logger="app"), pytest.raises(gr.Error, match=handlers.NO_PHOTO):
        page.answered(refuse)(None)
    assert [r.getMessage() for r in caplog.records] == [f"refused a request: {handlers.NO_PHOTO} (ValueError: no file)"]
    noted = page.answered(lambda text: handlers.Noted((text, None), ["a note", "another"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert noted("x") == ("x", gr.skip())
    assert [str(w.message) for w in caught] == ["a note", "another"]
    assert page.answered(lambda: {})() == {}


def test_command_line_defaults_and_auth(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.beam_size, args.max_file_size, args.concurrency) == (
        "127.0.0.1",
        7860,
        3,
        "10mb",
        2,
    )
    assert args.model is None and not args.share and args.auth is None
    assert serving.default_model_dirs()[0][0] == shipped.DEFAULT_MODEL  # then assets/model_hard, once there
    with pytest.raises(SystemExit):
        app.parse_args(["--auth", "nopassword"])


def test_every_help_line_says_what_its_default_and_its_values():
    for action in app.build_parser()._actions:
        if action.dest == "help":
            continue
        assert action.help and "default: " in action.help, f"{action.option_strings} help names no default"
        if action.choices:  # allowed values are named (a range by its ends)
            choices = [str(c) for c in action.choices]
            named = choices if len(choices) < 5 else [choices[0], choices[-1]]
            assert all(c in action.help for c in named), f"{action.option_strings} help lists no values"
    with pytest.raises(SystemExit):
        app.parse_args(["--port", "70000"])


@pytest.mark.parametrize("stage", ["loading the model", "starting the server"])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(stage, tiny_model_dir, monkeypatch, capsys, local_port):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = (Captioner, "load") if stage == "loading the model" else (gr.Blocks, "launch")
    monkeypatch.setattr(*target, interrupt)
    code = app.main(["--model", str(tiny_model_dir), "--port", str(local_port), "--cache-examples", "off"])
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == "interrupted during start-up; nothing is being served"


def test_start_up_log_names_the_share_flag(tiny_model_dir, monkeypatch, capsys, local_port, tmp_path):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda demo: None)  # started: return instead of serving forever
    assert app.main(["--model", str(tiny_model_dir), "--port", str(local_port), "--cache-examples", "off"]) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{local_port}" in out and "rerun with --share" in out and "share=True" not in out


# ----------------------------------------------------------------------------------------------------------------
# several models: a soft and a hard one, picked by name on the page and in the API


def count_encodes(captioner: Captioner) -> list[int]:
    """Record every encoder run of this captioner (one entry per call)."""
    calls, encode = [], captioner.encode
    captioner.encode = lambda *args, **kwargs: calls.append(1) or encode(*args, **kwargs)
    return calls


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tmp_path_factory, serve_demo):
    """(soft, hard, client, encodes): a demo serving the tiny soft model ("tiny") and a hard-attention variant of it
    ("tiny_hard"); encodes[name] counts that model's encoder runs."""
    soft = Captioner.load(tiny_model_dir)
    hard = Captioner.load(make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-hard") / "tiny_hard"))
    encodes = {"tiny": count_encodes(soft), "tiny_hard": count_encodes(hard)}
    demo = app.build_demo({"tiny": soft, "tiny_hard": hard}, examples=[], cache_examples=False)
    with serve_demo(demo) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
        yield soft, hard, client, encodes


def test_caption_picks_the_model_by_name(two_models):
    soft, hard, client, _ = two_models
    image = load_image(EXAMPLE)
    soft_text, hard_text = soft.caption(image, beam_size=3)[0].text, hard.caption(image, beam_size=3)[0].text
    assert soft_text != hard_text  # the test can tell the models apart
    default_text, default_data = client.predict(handle_file(str(EXAMPLE)), api_name="/caption")  # the first
    assert (default_text, default_data["model"], default_data["attention"]) == (soft_text, "tiny", "soft")
    text, data = client.predict(handle_file(str(EXAMPLE)), 3, "tiny_hard", api_name="/caption")
    assert (text, data["model"], data["attention"]) == (hard_text, "tiny_hard", "hard")
    assert client.predict(handle_file(str(EXAMPLE)), 3, "tiny", api_name="/caption")[0] == soft_text
    with pytest.raises(AppError, match="'nope' .* is not in the list of choices: \\['tiny', 'tiny_hard'\\]"):  # gradio
        client.predict(handle_file(str(EXAMPLE)), 3, "nope", api_name="/caption")


def test_the_page_offers_each_model_by_its_directory_name_and_compares_them(two_models):
    def components(models) -> dict:
        config = app.build_demo(models, examples=[], cache_examples=False).get_config_file()
        return {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["props"].get("elem_id")}

    both = components({"model": two_models[0], "model_hard": two_models[1]})
    assert [c[0] for c in both["model-choice"]["choices"]] == ["model", "model_hard"]
    assert both["model-choice"]["visible"] and both["compare"]["visible"] and both["probe-text"]["visible"]
    assert {"probe-text", "probe-button", "compare", "compare-view", "probe-data", "compare-data"} <= set(both)
    assert "showProbe" in page.page_head() and "probe-summary" in page.viewer_html()
    alone = components({"tiny": two_models[0]})
    assert alone["compare"]["visible"] is False and alone["model-choice"]["visible"] is False  # nothing to choose


def test_a_hard_models_step_heatmap_is_its_chosen_cell(two_models):
    _, _, client, _ = two_models
    text, data = client.predict(handle_file(str(EXAMPLE)), 3, "tiny_hard", api_name="/caption")
    heatmap, _ = client.predict(0, data, api_name="/step")
    shown = np.asarray(payload.decode_image(data["image"])).astype(int)  # (H, W, 3)
    changed = np.abs(np.asarray(Image.open(heatmap)).astype(int) - shown).max(axis=2) > 40  # (H, W) JPEG noise aside
    rows, cols = np.nonzero(changed)
    row, col = np.unravel_index(int(np.argmax(data["alphas"][0])), (14, 14))
    height, width = changed.shape
    assert rows.min() >= row * height / 14 - 2 and rows.max() <= (row + 1) * height / 14 + 2  # one crisp cell
    assert cols.min() >= col * width / 14 - 2 and cols.max() <= (col + 1) * width / 14 + 2


def test_serving_the_default_models(tiny_model_dir, monkeypatch, capsys, local_port, tmp_path):
    """No --model: assets/model, plus assets/model_hard when it is there; without it, one line says so."""
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    monkeypatch.setitem(shipped.SHIPPED_MODELS, "model", tiny_model_dir)
    monkeypatch.setitem(shipped.SHIPPED_MODELS, "model_hard", tmp_path / "model_hard")
    served = []

    def on_serve(demo):
        served.append(Client(demo.local_url, verbose=False).view_api(return_format="dict", print_info=False))

    monkeypatch.setattr(gr.Blocks, "block_thread", on_serve)
    assert app.main(["--port", str(local_port), "--cache-examples", "off"]) == 0
    out = capsys.readouterr().out
    missing = f"note: {tmp_path / 'model_hard'} (the hard-attention model) is not there: serving {tiny_model_dir} only"
    assert missing in out  # shipped paths are named from the repository root: these are elsewhere
    make_hard_model(tiny_model_dir, tmp_path / "model_hard")
    assert serving.default_model_dirs() == ([tiny_model_dir, tmp_path / "model_hard"], None)
    assert app.main(["--port", str(local_port), "--cache-examples", "off"]) == 0
    assert "not there" not in capsys.readouterr().out
    model_parameter = [p for p in served[-1]["named_endpoints"]["/caption"]["parameters"] if p["label"] == "Model"]
    assert model_parameter and model_parameter[0]["parameter_default"] == tiny_model_dir.name


def test_a_missing_model_given_twice_is_still_one_line(tiny_model_dir, tmp_path, capsys):
    assert app.main(["--model", str(tiny_model_dir), "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot load the model from {tmp_path / 'nowhere'}") and "\n" not in err


def test_probe_returns_the_library_probe_per_word(two_models):
    soft, _, client, _ = two_models
    data = client.predict(handle_file(str(DOGS)), SENTENCE, api_name="/probe")  # the first model by default
    expected = probe(soft, DOGS, SENTENCE)[0]
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


def test_probing_a_captioned_photo_does_not_run_the_encoder_again(two_models):
    _, _, client, encodes = two_models
    photo = handle_file(str(shipped.EXAMPLES_DIR / "meadow.jpg"))  # a photo no other test here sends
    client.predict(photo, 3, "tiny", api_name="/caption")
    before = len(encodes["tiny"])
    for text in ("a cat sits on the mat", "a red cup of coffee", "a man on the sky"):
        client.predict(photo, text, "tiny", api_name="/probe")  # uploaded again: same bytes
    assert len(encodes["tiny"]) == before  # the caption's features were reused
    hard_before = len(encodes["tiny_hard"])
    client.predict(photo, "a cat", "tiny_hard", api_name="/probe")  # features are per model
    client.predict(photo, "a dog", "tiny_hard", api_name="/probe")
    client.predict(photo, 3, "tiny_hard", api_name="/caption")  # a caption after a probe too
    assert len(encodes["tiny_hard"]) == hard_before + 1


def test_every_endpoint_runs_the_model_on_the_demos_model_thread(tiny_model_dir, serve_demo):
    model_thread, captioner, threads = ModelThread(), Captioner.load(tiny_model_dir), []
    for module in captioner.modules():  # the thread of every layer call: encoder, search and probe alike
        module.register_forward_pre_hook(lambda *_: threads.append(threading.get_ident()))
    demo = app.build_demo(captioner, cache_examples=False, model_thread=model_thread)
    frame = payload.encode_image(Image.open(EXAMPLE).convert("RGB"), quality=85)  # a camera frame, as the page sends
    with serve_demo(demo) as url:
        client = Client(url, verbose=False)
        for api_name, args in (
            ("/caption", (handle_file(str(DOGS)), 3)),
            ("/compare", (handle_file(str(EXAMPLE)), 3, True)),
            ("/probe", (handle_file(str(DOGS)), "a dog")),
            ("/live", (frame, "")),
            ("/check", (handle_file(str(EXAMPLE)), "")),
        ):
            calls = len(threads)
            assert client.predict(*args, api_name=api_name)
            assert len(threads) > calls, f"{api_name} ran no model"
    assert set(threads) == {model_thread.ident}


def test_readme_documents_the_probe_endpoint():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'api_name="/probe"' in readme and "--probe" in readme and "docs/probe.png" in readme
