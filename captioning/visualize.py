"""Attention maps as pictures: per-word heatmaps over the whole image, fast colour overlays, the classic figure."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy.ndimage import gaussian_filter

if TYPE_CHECKING:
    from captioning.model import Caption

DISPLAY_MAX_SIDE = 640  # overlays are drawn on a copy no larger than this: fast, and plenty for a browser
HEATMAP_CMAP = "inferno"  # perceptual colour map of the heatmaps (the demo page draws with the same table)
MAX_OPACITY = 0.8  # tint at the most attended point; opacity follows attention, so little attention = photo as is
OPACITY_GAMMA = 1.5  # opacity = MAX_OPACITY * heat**1.5: the faint tail of the attention leaves the photo clear


def display_image(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """RGB copy whose longer side is at most max_side (never upscaled), aspect ratio kept."""
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)


def attention_heatmap(alpha: np.ndarray, size: tuple[int, int], smooth_sigma: float = 1.0) -> np.ndarray:
    """One word's attention grid (14, 14) -> float32 (H, W) in [0, 1] stretched over an image of size (W, H).

    The model saw the whole image squashed to a square, so grid cell (i, j) covers the same fraction of the
    image in both directions: a plain (non-uniform) resize to (W, H) puts every cell back where it came from.
    """
    grid = np.asarray(alpha, dtype=np.float32)  # (14, 14)
    if smooth_sigma > 0:
        grid = gaussian_filter(grid, sigma=smooth_sigma, mode="nearest")  # (14, 14)
    heat = np.asarray(Image.fromarray(grid, mode="F").resize(size, Image.BICUBIC), dtype=np.float32)  # (H, W)
    low, high = float(heat.min()), float(heat.max())
    if high - low < 1e-12:
        return np.zeros_like(heat)  # (H, W) flat attention: nothing to highlight
    return (heat - low) / (high - low)  # (H, W) in [0, 1]


def hard_heatmap(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Hard attention: 1 inside the chosen (argmax) cell of the grid (14, 14), 0 elsewhere, stretched over an
    image of size (W, H) as a crisp rectangle (no smoothing: the model looked at that one cell)."""
    grid = np.asarray(alpha, dtype=np.float32)  # (14, 14)
    chosen = np.zeros(grid.shape, dtype=np.uint8)  # (14, 14)
    chosen[np.unravel_index(int(np.argmax(grid)), grid.shape)] = 255
    return np.asarray(Image.fromarray(chosen).resize(size, Image.NEAREST), dtype=np.float32) / 255.0  # (H, W)


def word_heatmap(alpha: np.ndarray, size: tuple[int, int], attention: str = "soft",
                 smooth_sigma: float = 1.0) -> np.ndarray:
    """One word's heatmap (H, W) in [0, 1]: smoothed for soft attention, the chosen cell for hard attention."""
    return hard_heatmap(alpha, size) if attention == "hard" else attention_heatmap(alpha, size, smooth_sigma)


@lru_cache(maxsize=8)
def colormap_lut(cmap: str = "jet") -> np.ndarray:
    """256-entry uint8 RGB lookup table of a matplotlib colormap, built once per name."""
    colors = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]  # (256, 3) float in [0, 1]
    lut = (colors * 255.0 + 0.5).astype(np.uint8)  # (256, 3)
    lut.setflags(write=False)
    return lut


def overlay(image: Image.Image, heatmap: np.ndarray, cmap: str = "jet", opacity: float = 0.5) -> Image.Image:
    """Blend a colour-mapped heatmap (H, W) in [0, 1] over an RGB image of the same size."""
    height, width = heatmap.shape
    if image.size != (width, height):
        raise ValueError(f"heatmap is {width}x{height} but the image is {image.width}x{image.height}")
    index = (np.clip(heatmap, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (H, W)
    colors = Image.fromarray(colormap_lut(cmap)[index])  # (H, W, 3) uint8
    return Image.blend(image.convert("RGB"), colors, opacity)


def attention_overlay(image: Image.Image, heatmap: np.ndarray, cmap: str = HEATMAP_CMAP,
                      max_opacity: float = MAX_OPACITY) -> Image.Image:
    """Tint an RGB image with a colour-mapped heatmap (H, W) in [0, 1] whose opacity follows the heat
    (max_opacity * heat**OPACITY_GAMMA): where the model paid little attention the photo shows untinted, where it
    looked most the colour covers max_opacity. The demo page draws the same in assets/web/demo.js."""
    height, width = heatmap.shape
    if image.size != (width, height):
        raise ValueError(f"heatmap is {width}x{height} but the image is {image.width}x{image.height}")
    heat = np.clip(heatmap, 0.0, 1.0)  # (H, W)
    colors = colormap_lut(cmap)[(heat * 255.0 + 0.5).astype(np.uint8)].astype(np.float32)  # (H, W, 3)
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    weight = (heat**OPACITY_GAMMA * max_opacity)[:, :, None]  # (H, W, 1)
    return Image.fromarray((photo + (colors - photo) * weight + 0.5).astype(np.uint8))  # (H, W, 3)


def render_word_overlays(image: Image.Image, caption: Caption, max_side: int = DISPLAY_MAX_SIDE,
                         smooth_sigma: float = 1.0, cmap: str = HEATMAP_CMAP, opacity: float = MAX_OPACITY,
                         attention: str = "soft") -> list[Image.Image]:
    """One overlay per caption word (attention_overlay; opacity is the maximum), on the image downscaled to
    max_side; attention="hard" shows each word's chosen cell."""
    shown = display_image(image, max_side)
    return [attention_overlay(shown, word_heatmap(alpha, shown.size, attention, smooth_sigma), cmap, opacity)
            for alpha in caption.alphas]  # alphas (n_words, 14, 14)


def attention_figure(image: Image.Image, caption: Caption, columns: int = 5, max_side: int = 320,
                     panel_inches: float = 2.4, attention: str = "soft") -> Figure:
    """The Show, Attend and Tell figure: the image, then each word's attention over it, word as the title."""
    panels = [display_image(image, max_side)] + render_word_overlays(image, caption, max_side, attention=attention)
    titles = ["(image)"] + list(caption.words)
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    aspect = panels[0].height / panels[0].width
    figure = Figure(figsize=(columns * panel_inches, rows * (panel_inches * aspect + 0.4)))
    FigureCanvasAgg(figure)  # Agg canvas: renders without any GUI backend or pyplot state
    for i, (panel, title) in enumerate(zip(panels, titles)):
        axis = figure.add_subplot(rows, columns, i + 1)
        axis.imshow(panel)
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    figure.suptitle(caption.text, fontsize=12)
    figure.tight_layout()
    return figure
