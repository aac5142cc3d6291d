"""Fine-tuning the trunk's last stages from a prefix cache: the tail on a cached prefix gives the whole trunk's
features, a cache made with other settings is refused, a tiny run (lite0, synthetic shapes) trains only the tail
(once per image per step), saves only the tail beside the decoder, resumes exactly, and reloads to caption with
BatchNorm folded exactly as without folding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TorchThreads, cli_args, data_flags, make_train_config, read_log

from captioning.cli import features as features_cli
from captioning.cli import train as train_cli
from captioning.config import EncoderSpec
from captioning.encoder import preprocessing_for
from captioning.features import load_cached_features
from captioning.model import Captioner, create_encoder, pixels_to_features, pixels_to_prefix, prefix_to_features
from captioning.preprocess import to_model_input

LITE0 = dict(backbone="tf_efficientnet_lite0", encoder_weights="lite-wheel", input_size=64, encoder_bf16=False)  # fast
ENCODER_FLAGS = ["--backbone", "tf_efficientnet_lite0", "--encoder-weights", "lite-wheel", "--input-size", "64"]
ENCODER_FLAGS += ["--no-encoder-bf16"]  # fp32 on every CPU
FP16_TOLERANCE = 2e-3  # max |tail(fp16 prefix) - trunk(image)|, relative to the largest feature (fp16: 2^-11 steps)


def make_prefix_cache(shapes_data: dict, cache_dir, stages: int) -> None:
    """Both splits' prefix caches through captioning-features, as a user makes them."""
    for split in ("TRAIN", "VAL"):
        flags = ["--split", split, "--cache-dir", str(cache_dir), "--finetune-stages", str(stages), *ENCODER_FLAGS]
        with TorchThreads(1):
            assert features_cli.main(flags + data_flags(shapes_data["data_dir"], shapes_data["data_name"])) == 0


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_tail_on_an_fp16_prefix_gives_the_whole_trunks_features(stages):
    torch.manual_seed(0)
    encoder = create_encoder(EncoderSpec("tf_efficientnet_lite0", "lite-wheel", 128, bf16=False)).eval()
    prep = preprocessing_for(encoder, 96)
    pixels = torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8)  # (3, 3, S, S)
    with TorchThreads(1), torch.no_grad():
        whole = pixels_to_features(encoder, pixels, prep, bf16=False)  # (3, 196, 1280)
        prefix = pixels_to_prefix(encoder, pixels, prep, bf16=False, stages=stages).half()  # as the cache stores it
        encoder.finetune(True, stages)
        encoder.eval()
        tail = prefix_to_features(encoder, prefix, bf16=False)  # (3, 196, 1280)
    assert tail.shape == whole.shape
    assert float((tail - whole).abs().max()) <= FP16_TOLERANCE * float(whole.abs().max())
    assert not torch.equal(whole[0], whole[1])  # different images: the comparison says something


def test_prefix_cache_holds_the_map_at_the_first_finetuned_stages_input(shapes_data, tmp_path):
    make_prefix_cache(shapes_data, tmp_path / "cache", stages=1)
    spec = EncoderSpec("tf_efficientnet_lite0", "lite-wheel", 64, bf16=False)
    prefixes, names = load_cached_features(tmp_path / "cache", "VAL", shapes_data["data_name"], prefix_stages=1)
    assert prefixes.dtype == np.float16 and isinstance(prefixes, np.memmap)
    encoder = create_encoder(spec)
    assert prefixes.shape[1:] == (encoder.trunk.blocks[6][0].conv_pw.in_channels, 2, 2)  # blocks[6]'s input
    assert len(prefixes) == len(names) > 0
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == sorted(
        f"{s}_PREFIX_{shapes_data['data_name']}.{x}" for s in ("TRAIN", "VAL") for x in ("json", "npy")
    )


def test_a_prefix_cache_made_with_other_settings_is_refused_in_one_line(shapes_data, tmp_path, capsys):
    make_prefix_cache(shapes_data, tmp_path / "cache", stages=1)
    capsys.readouterr()
    data = data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    again = ["--split", "VAL", "--cache-dir", str(tmp_path / "cache"), "--finetune-stages", "2"]
    with TorchThreads(1):
        assert features_cli.main(again + ENCODER_FLAGS + data) == 2  # the writer keeps the cache it has
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "other settings" in error and "prefix_stages: cache 1 vs now 2" in error
    config = make_train_config(shapes_data, tmp_path / "run", cache_dir=str(tmp_path / "cache"), **LITE0)
    wider = config.encoder.with_changes(input_size=96)
    for changes, expected in (
        (dict(finetune_stages=2), "prefix_stages: cache 1 vs model 2"),
        (dict(finetune_stages=1, encoder=wider), "input_size: cache 64 vs model 96"),
    ):
        args = cli_args(dataclasses.replace(config, finetune_encoder=True, **changes))
        with TorchThreads():
            assert train_cli.main(args) == 2  # the reader refuses it too
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "other encoder settings" in error and expected in error, error
    missing = dataclasses.replace(config, cache_dir=str(tmp_path / "none"), finetune_encoder=True)
    with TorchThreads():
        assert train_cli.main(cli_args(missing)) == 2
    assert "captioning.cli.features --finetune-stages 3" in capsys.readouterr().err  # none there: how to make it


@pytest.fixture(scope="module")
def finetuned_runs(shapes_data, tmp_path_factory):
    """From one prefix cache (1 stage), through train.py: 2 epochs; records the batch sizes the tail ran on."""
    root = tmp_path_factory.mktemp("finetune")
    make_prefix_cache(shapes_data, root / "cache", stages=1)
    straight = make_train_config(
        shapes_data,
        root / "straight",
        cache_dir=str(root / "cache"),
        finetune_encoder=True,
        finetune_stages=1,
        finetune_norm_statistics=False,
        encoder_lr=1e-3,
        epochs=2,
        max_steps_per_epoch=3,
        **LITE0,
    )
    tail_batches = []
    original = Captioner.features_from_prefix

    def recording(self, prefix):
        tail_batches.append((len(prefix), torch.is_grad_enabled()))
        return original(self, prefix)

    with pytest.MonkeyPatch.context() as patch, TorchThreads():
        patch.setattr(Captioner, "features_from_prefix", recording)
        assert train_cli.main(cli_args(straight)) == 0
    return {"root": root, "straight": root / "straight", "tail_batches": tail_batches}


@pytest.mark.slow
def test_finetuning_from_a_prefix_cache_runs_the_tail_once_per_image(finetuned_runs):
    images_per_step = 10 // 5  # batch_size captions, 5 captions per image
    trained = [size for size, grad in finetuned_runs["tail_batches"] if grad]
    assert trained and all(size == images_per_step for size in trained)  # not once per caption
    assert len(read_log(finetuned_runs["straight"])) == 2


@pytest.mark.slow
def test_finetuning_trains_and_saves_only_the_tail_beside_the_decoder(finetuned_runs):
    from safetensors.torch import load_file

    saved = load_file(str(finetuned_runs["straight"] / "last" / "model.safetensors"))
    encoder_keys = {k for k in saved if k.startswith("encoder.")}
    tail = ("encoder.trunk.blocks.6.", "encoder.trunk.conv_head.", "encoder.trunk.bn2.")
    assert encoder_keys and all(k.startswith(tail) for k in encoder_keys)  # the last stage and the head only
    assert {k for k in saved if not k.startswith("encoder.")} == {k for k in saved if k.startswith("decoder.")}
    model = Captioner.load(finetuned_runs["straight"] / "last")
    assert model.config.encoder_finetuned and model.config.encoder_finetuned_stages == 1
    source = create_encoder(model.config.encoder).trunk.state_dict()  # the weights fine-tuning started from
    trunk = model.encoder.trunk.state_dict()
    weights = [k[len("encoder.trunk.") :] for k in encoder_keys if k.endswith("weight")]
    assert any(not torch.equal(trunk[k], source[k]) for k in weights)  # the tail trained
    frozen = [k for k in source if k.startswith("blocks.5.")]
    assert all(torch.equal(trunk[k], source[k]) for k in frozen)  # the stage before it did not
    statistics = [k for k in encoder_keys if k.endswith("running_mean")]
    assert statistics and all(torch.equal(saved[k], source[k[len("encoder.trunk.") :]]) for k in statistics)


@pytest.mark.slow
def test_a_finetuned_model_captions_with_batchnorm_folded_as_without(finetuned_runs):
    model = Captioner.load(finetuned_runs["straight"] / "best")
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with TorchThreads(1), torch.no_grad():
        folded_trunk = model.encoder.inference_trunk()
        assert folded_trunk is not model.encoder.trunk  # folded although the tail was fine-tuned
        folded = model.features_from_pixels(pixels)  # (3, 196, 1280)
        images = to_model_input(pixels, model.config.preprocessing).contiguous(memory_format=torch.channels_last)
        unfolded = model.encoder.annotations(model.encoder.trunk.forward_features(images))  # (3, 196, 1280)
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4 * float(unfolded.abs().max()))
    texts = [[c.text for c in model.caption_features(f, beam_size=3)] for f in (folded, unfolded)]
    assert texts[0] == texts[1]
