"""Encoder precision when captioning photos: the saved bf16 autocast where the CPU runs it natively, fp32 where it
would be emulated (10x slower), with a one-line note; scoring against cached features keeps the saved precision."""

from __future__ import annotations

import pytest
import torch

from captioning import precision
from captioning.cli import caption as caption_cli
from captioning.model import Captioner


@pytest.fixture(scope="module")
def bf16_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model saved as made from bf16 features (as the shipped models are)."""
    import dataclasses

    captioner = Captioner.load(tiny_model_dir)
    spec = dataclasses.replace(captioner.config.encoder, bf16=True)
    captioner.config = dataclasses.replace(captioner.config, encoder=spec)
    return captioner.save(tmp_path_factory.mktemp("bf16") / "model", fp16=True)


@pytest.mark.parametrize(
    "saved, native, device, expected",
    [
        (True, True, "cpu", True),
        (True, False, "cpu", False),
        (False, True, "cpu", False),
        (False, False, "cpu", False),
        (True, False, "cuda", True),
    ],
)
def test_inference_encoder_bf16(monkeypatch, saved, native, device, expected):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    assert precision.inference_encoder_bf16(saved, device) is expected


@pytest.mark.parametrize("native", [True, False])
def test_fastest_encoder_is_fp32_only_where_bf16_is_emulated(monkeypatch, bf16_model_dir, native):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    captioner = Captioner.load(bf16_model_dir)
    assert captioner.config.encoder.bf16 and captioner.encoder_bf16  # as saved until asked
    note = captioner.use_fastest_encoder()
    assert captioner.encoder_bf16 is native and captioner.config.encoder.bf16  # the saved config is untouched
    assert (note is None) is native
    if not native:
        assert "fp32" in note and "\n" not in note


def test_fp32_encoder_really_runs_fp32(monkeypatch, bf16_model_dir):
    """The switch reaches the encoder: fp32 features differ from the bf16-autocast ones, and are what a plain fp32
    forward of the trunk gives."""
    captioner = Captioner.load(bf16_model_dir)
    images = torch.randn(1, 3, 64, 64)  # (1, 3, 64, 64): small, as emulated bf16 is slow
    with torch.no_grad():
        bf16 = captioner.encode(images)  # (1, 196, 1280)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    captioner.use_fastest_encoder()
    with torch.no_grad():
        fp32 = captioner.encode(images)  # (1, 196, 1280)
        plain = captioner.encoder(images)  # (1, 196, 1280)
    assert torch.equal(fp32, plain)
    assert not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, atol=0.1 * fp32.abs().max().item())


def test_caption_cli_notes_the_fp32_encoder_on_stderr(monkeypatch, bf16_model_dir, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (90, 140, 30)).save(path)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    assert caption_cli.main([str(path), "--model", str(bf16_model_dir)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ") and "encoder runs in fp32" in err
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert caption_cli.main([str(path), "--model", str(bf16_model_dir)]) == 0
    assert "fp32" not in capsys.readouterr().err
