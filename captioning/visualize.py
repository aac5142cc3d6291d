"""Attention as pictures for people: the display-size photo, every word's overlay, and the Show, Attend and Tell
figure, all drawn by the heatmap spec (captioning.heatmap) the demo page draws by too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from captioning.heatmap import HEATMAP, HeatmapSpec, half_up, word_overlay

if TYPE_CHECKING:
    from captioning.model import Caption

DISPLAY_MAX_SIDE = 640  # overlays are drawn on a copy no larger than this: fast, and plenty for a browser
FIGURE_DPI = 100  # the figure's pixels are the spec's: save it at this dpi (figure.savefig(path, dpi=FIGURE_DPI))


def display_image(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """RGB copy whose longer side is at most max_side (never upscaled), aspect ratio kept."""
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)


def render_word_overlays(
    image: Image.Image,
    caption: Caption,
    max_side: int = DISPLAY_MAX_SIDE,
    attention: str = "soft",
    spec: HeatmapSpec = HEATMAP,
) -> list[Image.Image]:
    """One overlay per caption word on the image downscaled to max_side (what the page shows for each word)."""
    shown = display_image(image, max_side)
    return [word_overlay(shown, alpha, attention, spec) for alpha in caption.alphas]  # alphas (n_words, 14, 14)


def figure_layout(n_words: int, aspect: float, spec: HeatmapSpec = HEATMAP) -> dict:
    """Pixel layout of the figure for n_words words on a photo of aspect height/width: its size and one box
    {x, y, w, h} per panel (the photo, then each word), as the page's figureLayout computes it."""
    panels = n_words + 1
    columns = max(1, min(spec.figure_columns, panels))
    rows = -(-panels // columns)
    width, height = spec.figure_panel_width, max(1, half_up(spec.figure_panel_width * aspect))
    cell = spec.figure_title_height + height + spec.figure_margin
    boxes = [
        {
            "x": spec.figure_margin + (p % columns) * (width + spec.figure_margin),
            "y": spec.figure_header_height + (p // columns) * cell + spec.figure_title_height,
            "w": width,
            "h": height,
        }
        for p in range(panels)
    ]
    return {
        "width": spec.figure_margin + columns * (width + spec.figure_margin),
        "height": spec.figure_header_height + rows * cell,
        "panels": boxes,
    }


def panel_title(word: str, gate: float | None) -> str:
    """A word panel's title: the word, and its gate beta when the search recorded one."""
    return word if gate is None or not np.isfinite(gate) else f"{word}  \u03b2 {gate:.2f}"


def attention_figure(
    image: Image.Image, caption: Caption, attention: str = "soft", spec: HeatmapSpec = HEATMAP
) -> Figure:
    """The Show, Attend and Tell figure: the caption, the photo, then each word's attention over it, titled by the
    word (and its gate); laid out in pixels by figure_layout, at FIGURE_DPI, like the page's downloadable figure."""
    shown = display_image(image)
    layout = figure_layout(len(caption.words), shown.height / shown.width, spec)
    box = layout["panels"][0]
    photo = shown.resize((box["w"], box["h"]), Image.BILINEAR, reducing_gap=2.0)
    panels = [photo] + [word_overlay(photo, alpha, attention, spec) for alpha in caption.alphas]  # alphas (n, 14, 14)
    gates = list(np.asarray(caption.gates, dtype=np.float64))  # (n_words,) or (0,)
    gates = gates if len(gates) == len(caption.words) else [None] * len(caption.words)
    titles = [spec.figure_image_title] + [panel_title(w, g) for w, g in zip(caption.words, gates)]
    width, height = layout["width"], layout["height"]
    points = 72.0 / FIGURE_DPI  # font sizes and gaps are pixels in the spec, points in matplotlib
    figure = Figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI), dpi=FIGURE_DPI, facecolor=spec.figure_background)
    FigureCanvasAgg(figure)  # Agg canvas: renders without any GUI backend or pyplot state
    for panel, title, box in zip(panels, titles, layout["panels"]):
        axis = figure.add_axes(
            (box["x"] / width, 1 - (box["y"] + box["h"]) / height, box["w"] / width, box["h"] / height)
        )
        axis.imshow(panel, interpolation="nearest", aspect="auto")
        axis.set_title(
            title,
            fontsize=spec.figure_title_font_px * points,
            pad=spec.figure_title_gap * points,
            color=spec.figure_text_color,
        )
        axis.axis("off")
    figure.text(
        0.5,
        1 - spec.figure_caption_baseline / height,
        caption.text,
        ha="center",
        va="baseline",
        fontsize=spec.figure_caption_font_px * points,
        fontweight="bold",
        color=spec.figure_text_color,
    )
    return figure
