"""The pictures built on the heatmap spec (captioning.visualize): the display image, the per-word overlays and the
attention figure's layout."""

from __future__ import annotations

import dataclasses

import numpy as np
from conftest import peaked
from matplotlib.figure import Figure
from PIL import Image

from captioning.heatmap import HEATMAP
from captioning.model import Caption
from captioning.visualize import attention_figure, display_image, figure_layout, render_word_overlays

# ----------------------------------------------------------------------------------------------------------------
# display image, per-word overlays, the figure


def test_display_image_downscales_large_images_only():
    assert display_image(Image.new("RGB", (1024, 768)), 640).size == (640, 480)
    assert display_image(Image.new("L", (300, 200)), 640).size == (300, 200)
    assert display_image(Image.new("L", (300, 200)), 640).mode == "RGB"


def test_render_word_overlays_one_per_word_at_display_size():
    caption = Caption(["a", "cat"], np.stack([peaked(0, 0), peaked(13, 13)]), -1.0)  # alphas (2, 14, 14)
    overlays = render_word_overlays(Image.new("RGB", (1024, 768), "white"), caption, max_side=512)
    assert [o.size for o in overlays] == [(512, 384), (512, 384)]
    first, second = (np.asarray(o).astype(int) for o in overlays)  # (H, W, 3)
    assert np.abs(first[5, 5] - 255).max() > 60  # the attended corner is tinted ...
    assert np.abs(second[5, 5] - 255).max() <= 2  # ... and where the model did not look, the photo is left as is


def test_figure_layout_places_the_panels_by_the_spec():
    layout = figure_layout(6, 0.75)  # 7 panels: a row of 5, then 2
    margin, width, height = HEATMAP.figure_margin, HEATMAP.figure_panel_width, 180
    assert [(b["w"], b["h"]) for b in layout["panels"]] == [(width, height)] * 7
    assert [b["x"] for b in layout["panels"]] == [margin + c * (width + margin) for c in (0, 1, 2, 3, 4, 0, 1)]
    first_row = HEATMAP.figure_header_height + HEATMAP.figure_title_height
    second_row = first_row + HEATMAP.figure_title_height + height + margin
    assert [b["y"] for b in layout["panels"]] == [first_row] * 5 + [second_row] * 2
    assert layout["width"] == margin + 5 * (width + margin)
    assert layout["height"] == second_row + height + margin
    assert figure_layout(1, 0.5)["width"] == margin + 2 * (width + margin)  # fewer panels than columns


def test_attention_figure_has_the_image_and_one_titled_panel_per_word_at_the_layouts_size():
    words = ["a", "cat", "on", "a", "mat", "today"]
    caption = Caption(words, np.stack([peaked(i, i) for i in range(6)]), -2.0, gates=np.linspace(0.1, 0.6, 6))
    spec = dataclasses.replace(HEATMAP, figure_columns=4)
    figure = attention_figure(Image.new("RGB", (400, 300), "white"), caption, spec=spec)
    assert isinstance(figure, Figure)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [
        "(image)",
        "a  \u03b2 0.10",
        "cat  \u03b2 0.20",
        "on  \u03b2 0.30",
        "a  \u03b2 0.40",
        "mat  \u03b2 0.50",
        "today  \u03b2 0.60",
    ]
    figure.canvas.draw()  # renders headless (Agg)
    pixels = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].astype(int)  # (H, W, 3)
    layout = figure_layout(6, 0.75, spec)
    assert pixels.shape[:2] == (layout["height"], layout["width"])
    box = layout["panels"][1]  # word "a" looked at the top-left cell: tinted there, white far from it
    panel = pixels[box["y"] : box["y"] + box["h"], box["x"] : box["x"] + box["w"]]  # (h, w, 3)
    assert np.abs(panel[3, 3] - 255).max() > 60 and (panel[-3, -3] == 255).all()
