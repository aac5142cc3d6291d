"""Synthetic shapes data: determinism, captions that match the pixels, boxes, speed."""

from __future__ import annotations

import time

import numpy as np

from captioning.synthetic import COLORS, SHAPES, make_synthetic, relation
from captioning.text import tokenize


def described_objects(caption: str) -> set[tuple[str, str]]:
    """(color, shape) pairs a caption names, e.g. 'a red circle' -> {('red', 'circle')}."""
    words = tokenize(caption)
    return {(c, s) for c, s in zip(words, words[1:]) if c in COLORS and s in SHAPES}


def test_same_seed_same_images_captions_and_boxes():
    first, second = make_synthetic(20, image_size=64, seed=3), make_synthetic(20, image_size=64, seed=3)
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.captions == b.captions and a.objects == b.objects
    other = make_synthetic(20, image_size=64, seed=4)
    assert any(a.captions != b.captions for a, b in zip(first, other))


def test_captions_name_exactly_the_shapes_present():
    samples = make_synthetic(200, image_size=128, seed=0)
    assert {len(s.objects) for s in samples} == {1, 2, 3}
    for sample in samples:
        present = {(o["color"], o["shape"]) for o in sample.objects}
        assert len({o["color"] for o in sample.objects}) == len(sample.objects)  # distinct colours
        assert 3 <= len(sample.captions) <= 5
        named = [described_objects(caption) for caption in sample.captions]
        assert all(pairs and pairs <= present for pairs in named)  # no caption names an absent shape
        assert set().union(*named) == present  # together they name every shape
        if len(sample.objects) == 2:
            a, b = sample.objects
            assert f"{a['color']} {a['shape']} {relation(a, b)} a {b['color']} {b['shape']}" in sample.captions[0]


def test_boxes_inside_image_and_colour_at_centre():
    size = 96
    for sample in make_synthetic(100, image_size=size, seed=1):
        pixels = np.asarray(sample.image)  # (S, S, 3)
        assert pixels.shape == (size, size, 3)
        for obj in sample.objects:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            if obj["shape"] in ("circle", "square"):
                centre = pixels[(y0 + y1) // 2, (x0 + x1) // 2]
                assert tuple(int(v) for v in centre) == COLORS[obj["color"]]


def test_generation_is_fast():
    start = time.perf_counter()
    samples = make_synthetic(500, image_size=128, seed=2)
    assert len(samples) == 500
    assert time.perf_counter() - start < 10.0
