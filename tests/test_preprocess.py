"""Image preprocessing: the one path (resize_square then to_model_input), the whole image without a crop, and any
PIL mode to three channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.preprocess import Preprocessing, preprocess_image, resize_square, to_model_input


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
