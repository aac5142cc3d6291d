"""Attention heatmaps, colour overlays and the per-word figure: shapes, ranges and where the heat lands."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from captioning.model import Caption
from captioning.visualize import (
    attention_figure,
    attention_heatmap,
    attention_overlay,
    colormap_lut,
    display_image,
    hard_heatmap,
    overlay,
    render_word_overlays,
    word_heatmap,
)


def peaked(row: int, col: int, grid: int = 14) -> np.ndarray:
    """Attention grid (14, 14) with most of its mass on one cell, summing to 1."""
    alpha = np.full((grid, grid), 0.1 / (grid * grid - 1), dtype=np.float32)  # (14, 14)
    alpha[row, col] = 0.9
    return alpha


def test_heatmap_shape_dtype_and_range():
    heat = attention_heatmap(peaked(5, 5), (300, 200))
    assert heat.shape == (200, 300) and heat.dtype == np.float32
    assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)


@pytest.mark.parametrize("smooth_sigma", [0.0, 1.0])
def test_heatmap_peak_lands_where_alpha_peaks_on_a_non_square_image(smooth_sigma):
    width, height = 640, 360  # the model saw the image squashed to a square: cells stretch with the image
    heat = attention_heatmap(peaked(2, 11), (width, height), smooth_sigma)  # (H, W)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(x - (11 + 0.5) * width / 14) <= width / 14  # within a cell of the peak cell's centre
    assert abs(y - (2 + 0.5) * height / 14) <= height / 14
    assert x > width / 2 and y < height / 2  # top-right quadrant


def test_flat_attention_gives_a_zero_heatmap():
    heat = attention_heatmap(np.full((14, 14), 1 / 196), (50, 40))
    assert heat.shape == (40, 50) and not heat.any()


def test_overlay_size_mode_and_colours():
    image = Image.new("RGB", (120, 80), (128, 128, 128))
    heat = np.zeros((80, 120), dtype=np.float32)  # (H, W)
    heat[:, 60:] = 1.0
    out = overlay(image, heat, cmap="jet", opacity=0.5)
    assert out.size == (120, 80) and out.mode == "RGB"
    pixels = np.asarray(out).astype(int)  # (H, W, 3)
    left, right = pixels[40, 10], pixels[40, 110]
    assert left[2] > left[0]  # cold = blue
    assert right[0] > right[2]  # hot = red
    assert np.asarray(overlay(image, heat, opacity=0.0)).tolist() == np.asarray(image).tolist()


def test_overlay_refuses_a_heatmap_of_another_size():
    with pytest.raises(ValueError, match="heatmap"):
        overlay(Image.new("RGB", (10, 10)), np.zeros((5, 5), dtype=np.float32))


def test_colormap_lut_is_built_once_per_name():
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert colormap_lut("viridis") is lut


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


def test_attention_figure_has_the_image_and_one_titled_panel_per_word():
    caption = Caption(["a", "cat", "on", "a", "mat", "today"], np.stack([peaked(i, i) for i in range(6)]), -2.0)
    figure = attention_figure(Image.new("RGB", (400, 300), "white"), caption, columns=4)
    assert isinstance(figure, Figure)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["(image)", "a", "cat", "on", "a", "mat", "today"]
    figure.canvas.draw()  # renders headless (Agg)


def test_attention_overlay_opacity_follows_attention():
    image = Image.new("RGB", (20, 10), (40, 120, 200))
    heat = np.zeros((10, 20), dtype=np.float32)  # (H, W)
    heat[:, 10:] = 1.0
    out = np.asarray(attention_overlay(image, heat, max_opacity=0.8)).astype(int)  # (H, W, 3)
    assert (out[:, :10] == (40, 120, 200)).all()  # no attention: untinted
    top = colormap_lut("inferno")[255].astype(int)
    np.testing.assert_allclose(out[0, 15], 0.2 * np.array([40, 120, 200]) + 0.8 * top, atol=1)


def test_hard_heatmap_is_the_chosen_cell_as_a_crisp_rectangle():
    heat = hard_heatmap(peaked(3, 10), (140, 70))  # (70, 140): cells of 10 x 5 pixels
    assert set(np.unique(heat)) == {0.0, 1.0}
    rows, cols = np.nonzero(heat)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (15, 19, 100, 109)
    np.testing.assert_array_equal(word_heatmap(peaked(3, 10), (140, 70), "hard"), heat)
