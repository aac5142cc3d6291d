"""Synthetic captioning data: 1-3 coloured shapes per image, captions naming them and where they are.

A dataset with a tiny vocabulary and known ground truth (boxes), for smoke-testing training, attention maps
and the app in seconds instead of hours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
BACKGROUND_LEVEL = 235  # light grey, far from every shape colour
BACKGROUND_NOISE = 12  # +- per channel
MIN_SIDE, MAX_SIDE = 0.18, 0.32  # shape side as a fraction of the image side
PLACEMENT_TRIES = 50
SYNTHETIC_IMAGE_SIZE = 128  # side of a generated image, px


@dataclass
class SyntheticImage:
    """One generated sample: RGB image, caption variants, and {"shape","color","box":[x0,y0,x1,y1]} per shape."""

    image: Image.Image
    captions: list[str]
    objects: list[dict]


def describe(obj: dict) -> str:
    """'red circle' for {"shape": "circle", "color": "red"}."""
    return f"{obj['color']} {obj['shape']}"


def relation(a: dict, b: dict) -> str:
    """Where a is relative to b along the axis their centres differ most: left of / right of / above / below."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["box"], b["box"]
    dx = (ax0 + ax1 - bx0 - bx1) / 2  # image x grows rightwards
    dy = (ay0 + ay1 - by0 - by1) / 2  # image y grows downwards
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def caption_variants(objects: list[dict]) -> list[str]:
    """3-5 captions that name every shape and, for several shapes, their spatial relations."""
    if len(objects) == 1:
        a = describe(objects[0])
        return [f"a {a}", f"there is a {a}", f"a single {a}"]
    if len(objects) == 2:
        a, b = objects
        rel = relation(a, b)
        da, db = describe(a), describe(b)
        return [
            f"a {da} {rel} a {db}",
            f"a {db} {INVERSE_RELATION[rel]} a {da}",
            f"there is a {da} and a {db}",
            f"two shapes: a {db} and a {da}",
        ]
    a, b, c = sorted(objects, key=lambda o: o["box"][0] + o["box"][2])  # left to right
    da, db, dc = describe(a), describe(b), describe(c)
    return [
        f"a {da}, a {db} and a {dc} from left to right",
        f"three shapes: a {dc}, a {da} and a {db}",
        f"a {da} {relation(a, b)} a {db}",
        f"a {db} {relation(b, c)} a {dc}",
        f"a {dc} {relation(c, a)} a {da}",
    ]


def boxes_overlap(a: list[int], b: list[int], gap: int) -> bool:
    """True when boxes [x0, y0, x1, y1) come closer than gap pixels."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def place_shapes(rng: random.Random, image_size: int) -> list[dict]:
    """1-3 shapes with distinct colours, random sizes, non-overlapping boxes [x0, y0, x1, y1) inside the image."""
    count = rng.randint(1, 3)
    colors = rng.sample(sorted(COLORS), count)
    gap = max(2, image_size // 32)
    objects = []
    for color in colors:
        shape = rng.choice(SHAPES)
        side = rng.randint(int(MIN_SIDE * image_size), int(MAX_SIDE * image_size))
        for _ in range(PLACEMENT_TRIES):
            x0, y0 = rng.randint(gap, image_size - side - gap), rng.randint(gap, image_size - side - gap)
            box = [x0, y0, x0 + side, y0 + side]
            if not any(boxes_overlap(box, o["box"], gap) for o in objects):
                objects.append({"shape": shape, "color": color, "box": box})
                break
    return objects  # a shape that found no free spot is simply left out


def draw_shapes(background: np.ndarray, objects: list[dict]) -> Image.Image:
    """Paint the shapes onto a (H, W, 3) uint8 background; each fills exactly its box's pixels."""
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        fill = COLORS[obj["color"]]
        if obj["shape"] == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        else:  # triangle: apex at the top centre, base along the bottom edge
            draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    return image


def noisy_background(noise_rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Light grey with mild per-pixel noise, (S, S, 3) uint8."""
    noise = noise_rng.integers(-BACKGROUND_NOISE, BACKGROUND_NOISE + 1, size=(image_size, image_size, 3))  # (S, S, 3)
    return (BACKGROUND_LEVEL + noise).astype(np.uint8)  # (S, S, 3)


def make_synthetic(num_images: int, image_size: int = SYNTHETIC_IMAGE_SIZE, seed: int = 0) -> list[SyntheticImage]:
    """num_images deterministic samples: the same seed gives the same pixels, captions and boxes."""
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_images):
        objects = place_shapes(rng, image_size)
        image = draw_shapes(noisy_background(noise_rng, image_size), objects)
        samples.append(SyntheticImage(image=image, captions=caption_variants(objects), objects=objects))
    return samples
