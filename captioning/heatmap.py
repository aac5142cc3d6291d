"""The one heatmap specification, and the Python renderer that follows it.

HeatmapSpec holds every number a word's heatmap is drawn with: the blur of the 14x14 grid, its upsampling to the
photo, the colour table, the opacity curve, the hard-attention cell and the figure's layout. The page draws by the
same numbers (`HEATMAP.to_page()` rides in the viewer's data-heatmap attribute, assets/web/demo.js reads it), so the
browser's canvas and the pictures rendered here agree pixel for pixel up to float rounding.

How a word is drawn on a (W, H) picture:
    soft: grid -> separable Gaussian blur (edges repeated) -> cubic convolution to (H, W) (Keys, pixel centres
          aligned, edges repeated, taps normalised) -> stretched to [0, 1] (a flat map -> all 0)
    hard: 1 on the chosen (argmax) cell, cell edges at round(c * W / cols), 0 elsewhere (no blur)
    then: level = floor(heat * 255 + 0.5); out = floor(photo + (colors[level] - photo) * opacity[level] + 0.5)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image

from captioning.config import ATTENTION_MODES


@lru_cache(maxsize=8)
def colormap_table(name: str) -> np.ndarray:
    """256-entry uint8 RGB table of a matplotlib colour map (read-only, built once per name)."""
    colors = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]  # (256, 3) float in [0, 1]
    table = np.floor(colors * 255.0 + 0.5).astype(np.uint8)  # (256, 3)
    table.setflags(write=False)
    return table


@dataclass(frozen=True)
class HeatmapSpec:
    """Every drawing parameter of the word heatmaps and the attention figure, shared by Python and the page."""

    smooth_sigma: float = 1.0  # Gaussian blur of the soft grid, in grid cells (0 = none)
    smooth_truncate: float = 4.0  # kernel radius = floor(truncate * sigma + 0.5) cells (scipy's rule)
    cubic_a: float = -0.5  # Keys' cubic convolution parameter of the grid -> picture upsampling
    colormap: str = "inferno"  # perceptual colour map, dark (little attention) to pale yellow (most)
    max_opacity: float = 0.8  # soft: opacity = max_opacity * heat**opacity_gamma, so the faint tail leaves
    opacity_gamma: float = 1.5  # the photo clear and the peak is tinted but still shows through
    hard_opacity: float = 0.65  # hard: the chosen cell tinted with the top colour at this opacity, no outline
    # the figure (pixels): the caption as a header, then the photo and one titled panel per word, in a grid
    figure_columns: int = 5
    figure_panel_width: int = 240  # panel height follows the photo's aspect ratio
    figure_margin: int = 10  # around and between panels
    figure_header_height: int = 40  # the caption's band above the first row
    figure_caption_baseline: int = 26  # the caption's text baseline, from the top
    figure_caption_font_px: int = 17  # bold
    figure_title_height: int = 26  # band above each panel for its title
    figure_title_gap: int = 8  # a title's baseline sits this far above its panel
    figure_title_font_px: int = 15
    figure_image_title: str = "(image)"  # the first panel's title (the photo itself)
    figure_background: str = "#ffffff"
    figure_text_color: str = "#111827"  # the caption (bold) and the panels' titles

    @property
    def colors(self) -> np.ndarray:
        """The colour table (256, 3) uint8: heat level -> RGB."""
        return colormap_table(self.colormap)

    def opacity(self, attention: str) -> np.ndarray:
        """Opacity per heat level (256,) float64: the soft curve, or hard_opacity scaled by the (0/1) heat."""
        level = np.arange(256, dtype=np.float64) / 255.0  # (256,)
        if attention == "hard":
            return self.hard_opacity * level  # (256,)
        return self.max_opacity * level**self.opacity_gamma  # (256,)

    def to_page(self) -> dict:
        """The spec as JSON-able numbers for the page: every field, the colour table as one hex string of 256
        rrggbb triplets and the opacity per heat level of each attention mode (the page draws by these tables and
        never recomputes the curve)."""
        opacity = {mode: self.opacity(mode).tolist() for mode in ATTENTION_MODES}
        return {**dataclasses.asdict(self), "colors": self.colors.tobytes().hex(), "opacity": opacity}


HEATMAP = HeatmapSpec()


def half_up(value: float) -> int:
    """Round half up, as JavaScript's Math.round (Python's round() rounds half to even)."""
    return math.floor(value + 0.5)


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """Normalised 1-D Gaussian weights (2r + 1,), r = floor(truncate * sigma + 0.5) (scipy.ndimage's kernel)."""
    radius = half_up(truncate * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)  # (2r+1,)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)  # (2r+1,)
    return weights / weights.sum()


def blur_matrix(size: int, sigma: float, truncate: float) -> np.ndarray:
    """(size, size) matrix of a 1-D Gaussian blur with the edge values repeated (scipy's mode="nearest")."""
    if not sigma > 0:
        return np.eye(size)
    kernel = gaussian_kernel(sigma, truncate)  # (2r+1,)
    radius = (len(kernel) - 1) // 2
    source = np.clip(np.arange(size)[:, None] + np.arange(-radius, radius + 1), 0, size - 1)  # (size, 2r+1)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.repeat(np.arange(size), len(kernel)), source.ravel()), np.tile(kernel, size))
    return matrix  # (size, size)


def keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel at offsets x."""
    t = np.abs(x)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def cubic_matrix(out_size: int, in_size: int, a: float) -> np.ndarray:
    """(out_size, in_size) cubic-convolution upsampling: output pixel o samples the input at
    x = (o + 0.5) * in/out - 0.5 from its 4 nearest samples, edges repeated, weights summing to 1."""
    x = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5  # (out,)
    taps = np.floor(x)[:, None] - 1 + np.arange(4)  # (out, 4) the 4 input positions around x
    weights = keys_cubic(x[:, None] - taps, a)  # (out, 4)
    weights = weights / weights.sum(axis=1, keepdims=True)  # (out, 4)
    matrix = np.zeros((out_size, in_size))
    np.add.at(
        matrix, (np.repeat(np.arange(out_size), 4), np.clip(taps, 0, in_size - 1).astype(int).ravel()), weights.ravel()
    )
    return matrix  # (out, in)


def soft_heatmap(alpha: np.ndarray, size: tuple[int, int], spec: HeatmapSpec = HEATMAP) -> np.ndarray:
    """One word's attention grid (rows, cols) -> float64 (H, W) in [0, 1] stretched over a picture of size (W, H).

    The model saw the whole image squashed to a square, so grid cell (i, j) covers the same fraction of the picture
    in both directions: a plain (non-uniform) resize to (W, H) puts every cell back where it came from.
    """
    width, height = size
    grid = np.asarray(alpha, dtype=np.float64)  # (rows, cols)
    rows, cols = grid.shape
    grid = blur_matrix(rows, spec.smooth_sigma, spec.smooth_truncate) @ grid  # (rows, cols) down the columns
    grid = grid @ blur_matrix(cols, spec.smooth_sigma, spec.smooth_truncate).T  # (rows, cols) along the rows
    heat = cubic_matrix(height, rows, spec.cubic_a) @ grid @ cubic_matrix(width, cols, spec.cubic_a).T  # (H, W)
    low, high = float(heat.min()), float(heat.max())
    if not high - low > 1e-12:
        return np.zeros_like(heat)  # (H, W) flat attention: nothing to highlight
    return (heat - low) / (high - low)  # (H, W) in [0, 1]


def cell_box(row: int, col: int, rows: int, cols: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel rectangle (x0, y0, x1, y1), end exclusive, of grid cell (row, col) on a picture of size (W, H): edges
    at round(c * W / cols), at least one pixel wide and high."""
    width, height = size
    x0, x1 = half_up(col * width / cols), half_up((col + 1) * width / cols)
    y0, y1 = half_up(row * height / rows), half_up((row + 1) * height / rows)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def hard_heatmap(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Hard attention: float64 (H, W), 1 on the chosen (argmax, first on ties) cell of the grid, 0 elsewhere, a
    crisp rectangle on a picture of size (W, H) (no blur: the model looked at that one cell)."""
    grid = np.asarray(alpha, dtype=np.float64)  # (rows, cols)
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    x0, y0, x1, y1 = cell_box(int(row), int(col), *grid.shape, size)
    heat = np.zeros((size[1], size[0]))  # (H, W)
    heat[y0:y1, x0:x1] = 1.0
    return heat


def word_heatmap(alpha: np.ndarray, size: tuple[int, int], attention: str, spec: HeatmapSpec = HEATMAP) -> np.ndarray:
    """One word's heatmap (H, W) in [0, 1] on a picture of size (W, H): soft_heatmap or hard_heatmap."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, not {attention!r}")
    return hard_heatmap(alpha, size) if attention == "hard" else soft_heatmap(alpha, size, spec)


def heat_levels(heatmap: np.ndarray) -> np.ndarray:
    """Heat (H, W) in [0, 1] -> uint8 levels (H, W): floor(heat * 255 + 0.5), the index into colors and opacity."""
    return np.floor(np.clip(heatmap, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (H, W)


def attention_overlay(
    image: Image.Image, heatmap: np.ndarray, attention: str, spec: HeatmapSpec = HEATMAP
) -> Image.Image:
    """Tint an RGB picture with a heatmap (H, W) in [0, 1] of the same size: each pixel moves towards its heat
    level's colour by that level's opacity (spec.opacity(attention)), so where the model paid little attention the
    photo shows untinted."""
    height, width = heatmap.shape
    if image.size != (width, height):
        raise ValueError(f"heatmap is {width}x{height} but the image is {image.width}x{image.height}")
    level = heat_levels(heatmap)  # (H, W)
    colors = spec.colors[level].astype(np.float64)  # (H, W, 3)
    weight = spec.opacity(attention)[level][:, :, None]  # (H, W, 1)
    photo = np.asarray(image.convert("RGB"), dtype=np.float64)  # (H, W, 3)
    return Image.fromarray(np.floor(photo + (colors - photo) * weight + 0.5).astype(np.uint8))  # (H, W, 3)


def word_overlay(image: Image.Image, alpha: np.ndarray, attention: str, spec: HeatmapSpec = HEATMAP) -> Image.Image:
    """One word's attention grid drawn over an RGB picture (what the page's canvas shows for that word)."""
    return attention_overlay(image, word_heatmap(alpha, image.size, attention, spec), attention, spec)
