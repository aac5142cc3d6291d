"""The one image preprocessing path shared by data prep, training, evaluation and the app."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

# Refuse images whose pixel count would blow up memory before decoding them (decompression bombs).
STORED_IMAGE_SIZE = 256  # side of the square images data preparation stores, px (whole image resized, no crop)
MAX_IMAGE_PIXELS = 64_000_000
# Decoders for images from untrusted sources (the app's uploads): the common photo formats only, so an upload can
# never reach Pillow's rarer plugins (EPS runs Ghostscript, for one). "JPEG" includes multi-picture (MPO) JPEGs.
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


class ImageTooLargeError(ValueError):
    """The image has more than MAX_IMAGE_PIXELS pixels; raised from its header alone, before any decoding.

    width and height are None when Pillow's own decompression-bomb guard refused the header first.
    """

    def __init__(self, width: int | None = None, height: int | None = None, limit: int = MAX_IMAGE_PIXELS):
        size = f"is {width}x{height} pixels" if width and height else "has far more pixels than that"
        super().__init__(f"image {size}; the limit is {limit:,} pixels")
        self.width, self.height, self.limit = width, height, limit


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input; saved in the model's config so every caller agrees."""

    image_size: int = 256  # square uint8 size stored by prepare_data.py
    input_size: int = 448  # square size the encoder sees (14x14 trunk map for stride-32 nets)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB copy of any PIL image (EXIF rotation, palette, alpha, CMYK, 16-bit, float, grey)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animations (GIF, APNG, WebP): the first frame
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF block: keep the pixels as stored rather than refuse the image
        pass
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8bit(image))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent areas become white
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> np.ndarray:
    """Single-channel 16/32-bit integer or float image -> uint8 (H, W), scaled by the range its values suggest:
    [0, 1] floats, 8-bit values, 16-bit values, or (beyond) the image's own maximum."""
    array = np.array(image, dtype=np.float32)  # (H, W) copy; float32 + in-place ops keep big 16-bit scans affordable
    if image.mode == "F":
        np.nan_to_num(array, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(array.max()) if array.size else 0.0
    if image.mode == "F" and peak <= 1.0:
        top = 1.0
    elif peak <= 255.0:
        top = 255.0
    elif peak <= 65535.0:
        top = 65535.0
    else:
        top = peak
    array *= 255.0 / top
    array += 0.5
    np.clip(array, 0.0, 255.0, out=array)
    return array.astype(np.uint8)  # (H, W)


def check_pixels(width: int, height: int) -> None:
    """Raise ImageTooLargeError if an image of this size is over MAX_IMAGE_PIXELS."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(width, height)


def load_image(source, formats: tuple[str, ...] | None = None) -> Image.Image:
    """Open a path or file object as upright RGB, refusing oversized images before decoding.

    The size check reads the header only: an image over MAX_IMAGE_PIXELS raises ImageTooLargeError (a ValueError)
    without its pixels ever being decompressed. formats limits the decoders tried (e.g. UPLOAD_FORMATS for
    untrusted uploads); None tries every format Pillow knows. Not an image: PIL.UnidentifiedImageError (an OSError).
    """
    try:
        opened = Image.open(source, formats=formats)
    except Image.DecompressionBombError:  # Pillow's own, looser guard: it fires inside open, from the header
        raise ImageTooLargeError() from None
    with opened as image:
        check_pixels(*image.size)
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
