"""The heatmap spec and its Python renderer (captioning.heatmap): the spec's numbers as the page gets them, the soft
and hard heatmaps' shapes, ranges and where the heat lands, and the overlay's colour and opacity."""

from __future__ import annotations

import dataclasses
import json

import matplotlib
import numpy as np
import pytest
from conftest import peaked
from PIL import Image
from scipy.ndimage import gaussian_filter

from captioning.heatmap import (
    HEATMAP,
    attention_overlay,
    blur_matrix,
    colormap_table,
    cubic_matrix,
    hard_heatmap,
    heat_levels,
    soft_heatmap,
    word_heatmap,
    word_overlay,
)

# ----------------------------------------------------------------------------------------------------------------
# the spec: one set of numbers, as the page gets them


def test_the_colour_table_is_matplotlibs_inferno():
    inferno = np.rint(np.asarray(matplotlib.colormaps["inferno"].colors) * 255)  # (256, 3) the listed colours
    assert HEATMAP.colormap == "inferno"
    np.testing.assert_array_equal(HEATMAP.colors, inferno)
    assert HEATMAP.colors.shape == (256, 3) and HEATMAP.colors.dtype == np.uint8
    assert colormap_table("inferno") is HEATMAP.colors  # built once


def test_the_page_gets_every_number_of_the_spec_and_the_same_colours():
    page = json.loads(json.dumps(HEATMAP.to_page()))  # what the viewer's data-heatmap attribute carries
    for field in dataclasses.fields(HEATMAP):
        assert page[field.name] == getattr(HEATMAP, field.name), field.name
    colors = np.frombuffer(bytes.fromhex(page["colors"]), dtype=np.uint8).reshape(256, 3)  # (256, 3)
    np.testing.assert_array_equal(colors, HEATMAP.colors)


def test_the_spec_is_frozen_and_changes_by_replace():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HEATMAP.max_opacity = 1.0
    other = dataclasses.replace(HEATMAP, colormap="viridis", figure_columns=3)
    np.testing.assert_array_equal(other.colors, colormap_table("viridis"))
    assert other.to_page()["figure_columns"] == 3 and HEATMAP.figure_columns == 5


def test_opacity_follows_the_spec_curve():
    soft, hard = HEATMAP.opacity("soft"), HEATMAP.opacity("hard")  # (256,) each
    assert soft[0] == 0.0 and soft[255] == pytest.approx(HEATMAP.max_opacity)
    assert soft[128] == pytest.approx(HEATMAP.max_opacity * (128 / 255) ** HEATMAP.opacity_gamma)
    assert hard[0] == 0.0 and hard[255] == pytest.approx(HEATMAP.hard_opacity)


# ----------------------------------------------------------------------------------------------------------------
# the soft heatmap: blur, cubic upsampling, stretch to [0, 1]


def test_the_blur_is_scipys_gaussian_with_edges_repeated():
    grid = np.random.default_rng(0).random((14, 14))  # (14, 14)
    blur = blur_matrix(14, HEATMAP.smooth_sigma, HEATMAP.smooth_truncate)  # (14, 14)
    expected = gaussian_filter(grid, sigma=HEATMAP.smooth_sigma, truncate=HEATMAP.smooth_truncate, mode="nearest")
    np.testing.assert_allclose(blur @ grid @ blur.T, expected, atol=1e-12)
    np.testing.assert_array_equal(blur_matrix(5, 0.0, 4.0), np.eye(5))


def test_cubic_upsampling_keeps_constants_and_lines_and_hits_the_samples_at_integer_scale():
    up = cubic_matrix(70, 14, HEATMAP.cubic_a)  # (70, 14): 5 output pixels per input sample
    np.testing.assert_allclose(up.sum(axis=1), 1.0)  # a flat grid stays flat
    samples = np.arange(14, dtype=np.float64)  # (14,)
    x = (np.arange(70) + 0.5) / 5 - 0.5  # (70,) where each output pixel samples the input
    inside = (x >= 1) & (x <= 12)  # away from the repeated edges, a ramp is reproduced exactly
    np.testing.assert_allclose((up @ samples)[inside], x[inside], atol=1e-12)
    np.testing.assert_allclose((up @ samples)[2::5], samples, atol=1e-12)  # pixel 5i + 2 sits on sample i


def test_soft_heatmap_shape_dtype_and_range():
    heat = soft_heatmap(peaked(5, 5), (300, 200))
    assert heat.shape == (200, 300) and heat.dtype == np.float64
    assert heat.min() == 0.0 and heat.max() == 1.0


@pytest.mark.parametrize("smooth_sigma", [0.0, 1.0])
def test_heatmap_peak_lands_where_alpha_peaks_on_a_non_square_image(smooth_sigma):
    width, height = 640, 360  # the model saw the image squashed to a square: cells stretch with the image
    spec = dataclasses.replace(HEATMAP, smooth_sigma=smooth_sigma)
    heat = soft_heatmap(peaked(2, 11), (width, height), spec)  # (H, W)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(x - (11 + 0.5) * width / 14) <= width / 14  # within a cell of the peak cell's centre
    assert abs(y - (2 + 0.5) * height / 14) <= height / 14
    assert x > width / 2 and y < height / 2  # top-right quadrant


def test_blurring_spreads_the_heat():
    sharp = soft_heatmap(peaked(7, 7), (140, 140), dataclasses.replace(HEATMAP, smooth_sigma=0.0))
    assert (soft_heatmap(peaked(7, 7), (140, 140)) > 0.5).sum() > (sharp > 0.5).sum()


def test_flat_attention_gives_a_zero_heatmap():
    heat = soft_heatmap(np.full((14, 14), 1 / 196), (50, 40))
    assert heat.shape == (40, 50) and not heat.any()


def test_the_heatmap_ignores_the_grids_scale():  # the page gets each word's grid scaled to its maximum
    alpha = np.random.default_rng(1).random((14, 14))  # (14, 14)
    np.testing.assert_allclose(soft_heatmap(alpha, (64, 48)), soft_heatmap(alpha / alpha.max(), (64, 48)), atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# the hard heatmap: the chosen cell


def test_hard_heatmap_is_the_chosen_cell_as_a_crisp_rectangle():
    heat = hard_heatmap(peaked(3, 10), (140, 70))  # (70, 140): cells of 10 x 5 pixels
    assert set(np.unique(heat)) == {0.0, 1.0}
    rows, cols = np.nonzero(heat)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (15, 19, 100, 109)
    np.testing.assert_array_equal(word_heatmap(peaked(3, 10), (140, 70), "hard"), heat)


def test_hard_cell_edges_round_half_up():
    heat = hard_heatmap(peaked(0, 1), (21, 14))  # cell 1 spans x in [1.5, 3): edges round(1.5) = 2, round(3) = 3
    rows, cols = np.nonzero(heat)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (2, 2, 0, 0)


def test_word_heatmap_refuses_an_unknown_attention():
    with pytest.raises(ValueError, match="attention"):
        word_heatmap(peaked(0, 0), (10, 10), "medium")


# ----------------------------------------------------------------------------------------------------------------
# the overlay: colour and opacity per heat level


def test_heat_levels_round_half_up():
    heat = np.array([[0.0, 0.5 / 255, 1.5 / 255, 1.0]])  # (1, 4)
    assert heat_levels(heat).tolist() == [[0, 1, 2, 255]]


def test_attention_overlay_opacity_follows_attention():
    image = Image.new("RGB", (20, 10), (40, 120, 200))
    heat = np.zeros((10, 20))  # (H, W)
    heat[:, 10:] = 1.0
    out = np.asarray(attention_overlay(image, heat, "soft")).astype(int)  # (H, W, 3)
    assert (out[:, :10] == (40, 120, 200)).all()  # no attention: untinted
    top = HEATMAP.colors[255].astype(int)
    expected = (1 - HEATMAP.max_opacity) * np.array([40, 120, 200]) + HEATMAP.max_opacity * top
    np.testing.assert_allclose(out[0, 15], expected, atol=0.51)
    hard = np.asarray(attention_overlay(image, heat, "hard")).astype(int)  # (H, W, 3)
    expected = (1 - HEATMAP.hard_opacity) * np.array([40, 120, 200]) + HEATMAP.hard_opacity * top
    np.testing.assert_allclose(hard[0, 15], expected, atol=0.51)
    assert (hard[:, :10] == (40, 120, 200)).all()


def test_attention_overlay_refuses_a_heatmap_of_another_size():
    with pytest.raises(ValueError, match="heatmap"):
        attention_overlay(Image.new("RGB", (10, 10)), np.zeros((5, 5)), "soft")


def test_word_overlay_tints_the_attended_corner_only():
    out = np.asarray(word_overlay(Image.new("RGB", (280, 140), "white"), peaked(0, 0), "soft")).astype(int)
    assert np.abs(out[2, 2] - 255).max() > 60 and (out[-3, -3] == 255).all()  # (H, W, 3)
