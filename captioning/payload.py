"""What the demo sends and receives: the per-word JSON of a caption, a probed sentence and an attention check, and
the checks on the copy a client sends back.

The page draws every heatmap from this JSON, gradio_client users get it from `/caption`, `/probe` and `/check`, and
`/step` reads it back from the client; no Gradio here, so all of it is tested without a server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.attention_check import AttentionCheck
from captioning.checkpoint import atomic_write
from captioning.config import ATTENTION_MODES
from captioning.model import Caption
from captioning.probe import Probe
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.visualize import DISPLAY_MAX_SIDE

BEAM_SIZES = (1, 5)  # the smallest and largest beam the demo offers
MAX_GRID_SIDE = 64  # largest attention grid /step accepts from a client (models use 14x14)
# Gradio delivers a message of 150 KB or more far more slowly than one under 100 KB: the display photo gets a byte
# budget (JPEG quality stepped down for detailed photos) and the grids travel packed (see packed_grids).
DISPLAY_JPEG_BYTES = 40_000
DISPLAY_JPEG_QUALITIES = (80, 70, 60, 50)


class PayloadError(ValueError):
    """Per-word data from a client that is malformed: the reason, for the log (the visitor gets a friendly line)."""


def encode_image(image: Image.Image, quality: int = 80) -> str:
    """PIL image -> base64 JPEG data URL (small enough to live in the page's hidden JSON)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def display_data_url(image: Image.Image, budget: int = DISPLAY_JPEG_BYTES) -> str:
    """The display photo as a JPEG data URL of at most about `budget` bytes: the first of DISPLAY_JPEG_QUALITIES
    that fits (the last one otherwise)."""
    for quality in DISPLAY_JPEG_QUALITIES:
        url = encode_image(image, quality)
        if len(url) * 3 // 4 <= budget:
            break
    return url


def decode_image(data_url: str, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """Inverse of encode_image. The data URL comes back from the client, so only a display-size JPEG/PNG is accepted
    (checked from the header, before decoding): /step cannot be made to decode anything bigger."""
    payload = data_url.split(",", 1)[-1]
    with Image.open(io.BytesIO(base64.b64decode(payload, validate=True)), formats=("JPEG", "PNG")) as image:
        if max(image.size) > max_side:
            raise ValueError(f"display image is {image.width}x{image.height}, larger than {max_side} px")
        return image.convert("RGB")


def packed_grids(alphas: np.ndarray) -> str:
    """Attention grids (n_words, 14, 14) as base64 of little-endian uint16, each word scaled to its own maximum:
    under a third of the size of nested lists, and what the page draws from (it stretches each map to its range)."""
    grids = np.asarray(alphas, dtype=np.float64)  # (n_words, 14, 14)
    flat = grids.reshape(grids.shape[0], int(np.prod(grids.shape[1:])))  # (n_words, 196)
    peak = np.maximum(flat.max(axis=1, keepdims=True, initial=0.0), 1e-12)  # (n_words, 1)
    scaled = np.rint(np.clip(flat / peak, 0.0, 1.0) * 65535).astype("<u2")  # (n_words, 196)
    return base64.b64encode(scaled.tobytes()).decode("ascii")


def unpack_grids(caption: dict) -> np.ndarray:
    """Inverse of packed_grids for one caption of the payload: float (n_words, rows, cols), each word's map scaled
    to a maximum of 1 (the page's copy carries only these)."""
    values = np.frombuffer(base64.b64decode(caption["grids"]), dtype="<u2").astype(np.float64) / 65535  # (n*196,)
    return values.reshape(len(caption["words"]), *caption["grid"])  # (n_words, 14, 14)


def gate_values(caption: Caption) -> list[float | None]:
    """Each word's gate beta rounded for the page; None for every word when the search recorded none."""
    gates = np.asarray(caption.gates, dtype=np.float64)  # (n_words,) or (0,)
    if gates.shape != (len(caption.words),):
        return [None] * len(caption.words)
    return [round(float(g), 4) if math.isfinite(g) else None for g in gates]


def word_payload(caption: Caption, nested: bool = True) -> dict:
    """One caption: text, words, their attention grids (packed for the page, and as nested lists when `nested`,
    for API clients and /step), gates and log-probability."""
    payload = {"caption": caption.text, "words": list(caption.words)}
    if nested:
        payload["alphas"] = np.round(caption.alphas.astype(np.float64), 5).tolist()  # (n_words, 14, 14) lists
    grid = list(caption.alphas.shape[1:]) or [14, 14]
    return {
        **payload,
        "grids": packed_grids(caption.alphas),
        "grid": grid,
        "gates": gate_values(caption),
        "score": round(float(caption.score), 4),
    }


def caption_data(
    captions: list[Caption],
    shown: Image.Image | str,
    model: str = "model",
    attention: str = "soft",
    beam: int = DEFAULT_BEAM_SIZE,
    nested: bool = True,
) -> dict:
    """What `/caption` returns beside the text: the best caption's words, grids and gates at the top level (what
    /step reads), the display-size image (`shown`, or its display_data_url made beforehand), which model made it and
    how it attends, and the beam's other captions, next best first. nested=False leaves out the best caption's
    `alphas` lists (the page draws from `grids`)."""
    image = shown if isinstance(shown, str) else display_data_url(shown)
    best = word_payload(captions[0], nested=nested)
    identity = hashlib.sha256("\n".join([model, str(beam), best["caption"], image]).encode()).hexdigest()[:16]
    return {
        **best,
        "image": image,
        "model": model,
        "attention": attention,
        "beam": beam,
        "id": identity,
        "alternatives": [word_payload(caption, nested=False) for caption in captions[1:]],
    }


def finite_or_none(value, digits: int) -> float | None:
    """A number rounded for JSON; None for -inf / NaN, which JSON cannot carry."""
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def probe_scores(probe: Probe) -> dict:
    """A probed sentence's per-word scores and flags, JSON-safe (a log-probability of -inf is None): log_probs,
    probs, ranks, unknown, end_log_prob, end_rank, total_log_prob, truncated."""
    return {
        "log_probs": [finite_or_none(x, 4) for x in probe.log_probs],
        "probs": [finite_or_none(x, 6) for x in probe.probs],
        "ranks": [int(r) for r in probe.ranks],
        "unknown": [bool(u) for u in probe.unknown],
        "end_log_prob": finite_or_none(probe.end_log_prob, 4),
        "end_rank": int(probe.end_rank),
        "total_log_prob": finite_or_none(probe.total_log_prob, 4),
        "truncated": bool(probe.truncated),
    }


def probe_data(probe: Probe, nested: bool = True) -> dict:
    """What `/probe` returns for a typed sentence: word_payload of its caption (caption, words, alphas, grids, grid,
    gates, score = total_log_prob), then probe_scores. nested=False leaves out the `alphas` lists (the page draws
    from `grids`)."""
    return {**word_payload(probe.to_caption(), nested=nested), **probe_scores(probe)}


def check_scores(checked: AttentionCheck) -> dict:
    """An attention check's per-word results, JSON-safe, lists aligned with `words`: probs, probs_hidden_here,
    probs_hidden_elsewhere, hidden_cells, gradient (14x14 each), gradient_share."""
    return {
        "words": list(checked.words),
        "probs": [finite_or_none(p, 6) for p in checked.probs],
        "probs_hidden_here": [finite_or_none(p, 6) for p in checked.probs_hidden_here],
        "probs_hidden_elsewhere": [finite_or_none(p, 6) for p in checked.probs_hidden_elsewhere],
        "hidden_cells": [list(map(int, cells)) for cells in checked.hidden_cells],
        "gradient": np.round(checked.gradient.astype(np.float64), 6).tolist(),  # (n, 14, 14)
        "gradient_share": [finite_or_none(s, 4) for s in checked.gradient_share],
    }


def check_data(checked: AttentionCheck) -> dict:
    """What `/check` returns before the demo adds its fields: the caption, check_scores, the grid and the attention
    maps the cells were chosen from (alphas)."""
    return {
        "caption": " ".join(checked.words),
        **check_scores(checked),
        "grid": list(checked.gradient.shape[1:]),
        "alphas": np.round(checked.alphas.astype(np.float64), 5).tolist(),  # (n, 14, 14)
    }


def finite(value, default: float) -> float:
    """A number from a client (slider, API) as a finite float; anything else (None, NaN, text) -> default."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def word_index(index, n_words: int) -> int:
    """Slider/click value -> a valid word index."""
    return int(min(max(round(finite(index, 0.0)), 0), max(n_words - 1, 0)))


def beam_width(beam, default: int = DEFAULT_BEAM_SIZE) -> int:
    """Beam-size input -> an int within BEAM_SIZES."""
    low, high = BEAM_SIZES
    return int(min(max(round(finite(beam, default)), low), high))


@dataclass
class StepRequest:
    """One word of a caption, read back from a client's copy of the per-word JSON and checked."""

    words: list[str]
    index: int
    image: Image.Image  # the display photo
    alpha: np.ndarray  # (14, 14) the word's attention grid
    attention: str  # "soft" | "hard"


def has_words(data) -> bool:
    """Whether a client sent per-word data at all (before any caption there is none)."""
    return isinstance(data, dict) and bool(data.get("words"))


def read_step_request(data: dict, index) -> StepRequest:
    """The word `index` of a caption's per-word JSON as sent back by a client; PayloadError for anything malformed."""
    try:
        words = [str(word) for word in data["words"]]
        i = word_index(index, len(words))
        image = decode_image(data["image"])
        alpha = np.asarray(data["alphas"][i], dtype=np.float32)  # (14, 14)
    except Exception as error:
        raise PayloadError(f"{type(error).__name__}: {error}") from None
    if alpha.ndim != 2 or not 0 < max(alpha.shape) <= MAX_GRID_SIDE or not np.isfinite(alpha).all():
        raise PayloadError(f"attention grid of shape {alpha.shape}")
    mode = data.get("attention", "soft")
    if mode not in ATTENTION_MODES:
        raise PayloadError(f"attention mode {mode!r}")
    return StepRequest(words, i, image, alpha, mode)


def cache_jpeg(image: Image.Image, folder: str | Path) -> str:
    """Save an output image as JPEG in `folder`, named by its content, and return the path.

    Written aside and renamed into place, so two requests rendering the same image at once never truncate a file
    while it is being downloaded (Gradio's own saver rewrites it in place).
    """
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")  # Pillow's default quality, as Gradio's format="jpeg"
    payload = buffer.getvalue()
    path = Path(folder) / hashlib.sha256(payload).hexdigest() / "image.jpeg"
    try:
        os.utime(path)  # handed out again: restart its delete_cache clock (Gradio ages cache files by ctime)
    except FileNotFoundError:
        atomic_write(path, lambda part: part.write_bytes(payload))
    return str(path)
