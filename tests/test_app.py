"""The Gradio app, served in-process with a tiny random model and driven through gradio_client."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from captioning.model import Caption, Captioner
from captioning.preprocess import load_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "cat.jpg"


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory, launch_demo):
    """(captioner, client, calls): the demo on a free local port; calls counts model invocations."""
    captioner = Captioner.load(tiny_model_dir)
    calls = []
    caption = captioner.caption
    captioner.caption = lambda *args, **kwargs: calls.append(1) or caption(*args, **kwargs)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("examples"))}):
        demo = app.build_demo(captioner, cache_examples=True)
    demo.queue(max_size=8)
    url = launch_demo(demo)
    try:
        yield captioner, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads"))), calls
    finally:
        demo.close()


def test_caption_returns_text_first_then_per_word_alphas(served):
    captioner, client, _ = served
    text, chips, heatmap, gallery, data = client.predict(handle_file(str(EXAMPLE)), api_name="/caption")
    assert isinstance(text, str) and text
    assert text == captioner.caption(load_image(EXAMPLE), beam_size=3)[0].text  # the slider's default beam size
    alphas = np.asarray(data["alphas"])  # (n_words, 14, 14)
    assert alphas.shape == (len(data["words"]), 14, 14) and data["words"] == text.split()
    np.testing.assert_allclose(alphas.sum(axis=(1, 2)), 1.0, atol=1e-3)
    assert [c["token"] for c in chips] == data["words"]
    assert [c["class_or_confidence"] for c in chips][:2] == [app.CURRENT, app.OTHER]  # word 0 is highlighted
    assert len(gallery) == len(data["words"])
    assert Image.open(heatmap).size == load_image(EXAMPLE).size  # small photo: shown at its own size


def test_beam_size_is_an_optional_input(served):
    captioner, client, _ = served
    text = client.predict(handle_file(str(EXAMPLE)), 1, api_name="/caption")[0]
    assert text == captioner.caption(load_image(EXAMPLE), beam_size=1)[0].text


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
    assert first_chips[0]["class_or_confidence"] == app.CURRENT
    assert last_chips[last]["class_or_confidence"] == app.CURRENT
    assert Image.open(client.predict(99, data, api_name="/step")[0]).size == Image.open(last_image).size  # clamped


def test_step_before_caption_is_a_friendly_error(served):
    _, client, _ = served
    with pytest.raises(AppError, match="Caption an image first"):
        client.predict(0, None, api_name="/step")


def test_unreadable_image_is_a_friendly_error(served, tmp_path):
    _, client, _ = served
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(EXAMPLE.read_bytes()[:600])  # valid header, truncated pixels
    with pytest.raises(AppError, match="Could not read this image"):
        client.predict(handle_file(str(broken)), api_name="/caption")


def test_examples_are_cached_with_captions(served):
    _, client, calls = served
    n_calls = len(calls)
    text, *_, data = client.predict(0, api_name="/load_example")  # example 0, computed at launch
    assert text and np.asarray(data["alphas"]).shape == (len(text.split()), 14, 14)
    assert len(calls) == n_calls


def test_first_example_is_part_of_the_page_not_a_page_load_event(tiny_model_dir, tmp_path):
    """With eager caching the first example's photo, caption and heatmap are the components' initial values: no load
    event that could land late on a busy server and replace a visitor's upload (issue 18)."""
    captioner = Captioner.load(tiny_model_dir)
    with mock.patch.dict(os.environ, {"GRADIO_EXAMPLES_CACHE": str(tmp_path)}):
        config = app.build_demo(captioner, cache_examples=True).get_config_file()
    values = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]}
    first = app.example_paths()[0]
    assert values["caption-text"] == captioner.caption(load_image(first), beam_size=3)[0].text
    assert values["image-input"]["orig_name"] == Path(first).name
    assert values["attention-data"]["words"] == values["caption-text"].split()
    assert not [d for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])]


def test_render_step_is_pure():
    data = {"words": ["a", "cat"], "alphas": np.full((2, 14, 14), 1 / 196).tolist(),
            "image": app.encode_image(Image.new("RGB", (40, 30), "white"))}
    image, chips = app.render_step(data, 1)
    assert image.size == (40, 30) and chips == [("a", app.OTHER), ("cat", app.CURRENT)]


def test_handlers_run_without_a_server(tmp_path):
    """The event handlers are plain functions: caption (beam from the input, else the default), then step / select."""
    beams = []

    class FakeCaptioner:  # records the beam size; a fixed 2-word caption with peaked attention
        def caption(self, image, beam_size):
            beams.append(beam_size)
            alphas = np.zeros((2, 14, 14), dtype=np.float32)  # (n_words, 14, 14)
            alphas[0, 0, 0] = alphas[1, 13, 13] = 1.0
            return [Caption(words=["a", "cat"], alphas=alphas, score=0.0)]

    text, chips, heatmap, gallery, data = app.caption_image(FakeCaptioner(), 4, str(EXAMPLE))
    app.caption_image(FakeCaptioner(), 4, str(EXAMPLE), 2.0)
    assert beams == [4, 2] and text == "a cat" and data["words"] == ["a", "cat"]
    assert chips == [("a", app.CURRENT), ("cat", app.OTHER)] and len(gallery) == 2
    assert Image.open(heatmap).size == load_image(EXAMPLE).size
    assert app.fit_slider(data)["maximum"] == 1 and app.fit_slider(None)["maximum"] == 1
    first, _ = app.step(0, data)
    second, second_chips = app.step(1, data)
    assert first != second and second_chips[1] == ("cat", app.CURRENT)  # another word, another cached heatmap
    *_, index = app.select_word(data, SimpleNamespace(index=1))
    assert index == 1
    with pytest.raises(gr.Error, match="Please upload an image first"):
        app.caption_image(FakeCaptioner(), 3, None)


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    assert app.main(["--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "Traceback" not in err


def test_command_line_defaults_and_auth(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.beam_size, args.max_file_size, args.concurrency) == (
        "127.0.0.1", 7860, 3, "10mb", 2)
    assert Path(args.model) == app.DEFAULT_MODEL and not args.share and args.auth is None
    assert app.parse_args(["--auth", "me:pa:ss"]).auth == ("me", "pa:ss")
    with pytest.raises(SystemExit):
        app.parse_args(["--auth", "nopassword"])
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what Hugging Face Spaces sets
    assert app.parse_args([]).host == "0.0.0.0"


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


def test_a_training_run_given_as_model_points_to_its_best_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"")
    assert app.main(["--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {run} is a training run directory; its best model is {run / 'best'} " \
                          f"(use --model {run / 'best'})"


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


def test_readme_front_matter():
    """README.md starts with Hugging Face Spaces front matter pointing at this app."""
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0].strip() == "---", "README.md must start with a '---' front matter block"
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---"), None)
    assert end, "README.md front matter has no closing '---'"
    fields = dict(line.split(":", 1) for line in lines[1:end] if ":" in line and not line.startswith((" ", "#")))
    fields = {k.strip(): v.strip().strip("'\"") for k, v in fields.items()}
    assert fields.get("sdk") == "gradio"
    assert fields.get("app_file") == "app.py"
    assert fields.get("title")
