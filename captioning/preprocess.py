"""The one image preprocessing path shared by data prep, training, evaluation and the app."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# Refuse images whose pixel count would blow up memory before decoding them (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input; saved in the model's config so every caller agrees."""

    image_size: int = 256  # square uint8 size stored by prepare_data.py
    input_size: int = 448  # square size the encoder sees (14x14 trunk map for stride-32 nets)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB copy of any PIL image (EXIF rotation, palette, alpha, CMYK, 16-bit, grey)."""
    image = ImageOps.exif_transpose(image)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(source) -> Image.Image:
    """Open a path or file object as upright RGB, refusing oversized images before decoding."""
    with Image.open(source) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels")
        image.load()
        return to_rgb(image)


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Whole image (no crop) resized to size x size, as uint8 (3, size, size)."""
    resized = to_rgb(image).resize((size, size), Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()  # (3, S, S)


def to_model_input(pixels: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (B, 3, S, S) from resize_square -> normalised float (B, 3, input, input)."""
    x = pixels.float().div_(255.0)  # (B, 3, S, S)
    if x.shape[-1] != prep.input_size or x.shape[-2] != prep.input_size:
        size = (prep.input_size, prep.input_size)
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)  # (B, 3, I, I)
        x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(prep.mean, dtype=x.dtype).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    return (x - mean) / std  # (B, 3, I, I)


def preprocess_image(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """PIL image -> model input (1, 3, input, input), exactly as training saw it."""
    pixels = torch.from_numpy(resize_square(image, prep.image_size))[None]  # (1, 3, S, S)
    return to_model_input(pixels, prep)  # (1, 3, I, I)
