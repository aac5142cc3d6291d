"""The demo's per-word JSON (captioning.payload), built without a model or a server: packed grids, the display
photo's byte budget, a caption's data with its beam alternatives, a probed sentence's and an attention check's data,
and the beam and word index a client sends."""

from __future__ import annotations

import json

import numpy as np
from conftest import peaked
from PIL import Image

from captioning import payload
from captioning.attention_check import AttentionCheck
from captioning.model import Caption
from captioning.probe import Probe
from captioning.search import DEFAULT_BEAM_SIZE


def test_packed_grids_keep_each_words_map_and_are_small():
    rng = np.random.default_rng(0)
    alphas = rng.dirichlet(np.ones(196), size=12).reshape(12, 14, 14).astype(np.float32)  # (n_words, 14, 14)
    caption = payload.word_payload(Caption(["w"] * 12, alphas, -3.0))
    scaled = alphas / alphas.max(axis=(1, 2), keepdims=True)  # (n_words, 14, 14), each word's maximum 1
    np.testing.assert_allclose(payload.unpack_grids(caption), scaled, atol=1e-5)
    assert len(caption["grids"]) * 3 < len(str(caption["alphas"]))  # a third of the nested lists or less
    assert payload.packed_grids(np.zeros((0, 14, 14))) == ""  # an empty caption


def test_the_display_photo_keeps_to_its_byte_budget():
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    flat = Image.new("RGB", (640, 480), (90, 140, 200))
    assert len(payload.display_data_url(flat)) == len(payload.encode_image(flat, 80))  # the first quality that fits
    small = payload.display_data_url(noise, budget=60_000)
    assert len(small) < len(payload.encode_image(noise, 80)) and payload.decode_image(small).size == (640, 480)


def test_alternatives_are_the_beams_other_captions():
    """caption_data keeps the best caption at the top level and the rest, in order, as alternatives."""
    grids = np.full((2, 14, 14), 1 / 196, dtype=np.float32)  # (n_words, 14, 14)
    captions = [
        Caption(["a", "dog"], grids, -1.5, gates=np.array([0.25, 0.75], dtype=np.float32)),
        Caption(["a", "cat"], grids, -2.0),
        Caption(["one", "dog"], grids, -2.5),
    ]
    data = payload.caption_data(captions, Image.new("RGB", (40, 30)), "m", "hard", 3)
    assert data["caption"] == "a dog" and data["gates"] == [0.25, 0.75] and data["attention"] == "hard"
    assert [a["caption"] for a in data["alternatives"]] == ["a cat", "one dog"]
    assert data["alternatives"][0]["gates"] == [None, None]  # a search that records no gate
    assert [a["score"] for a in data["alternatives"]] == [-2.0, -2.5]


def test_probe_data_is_the_caption_format_plus_scores_and_json_safe():
    probed = Probe(
        words=["a", "dog", "zzyzx"],
        ids=[4, 5, 3],
        unknown=[False, False, True],
        log_probs=np.array([-0.123456, -1.5, -np.inf], dtype=np.float32),  # (3,)
        ranks=np.array([1, 3, 7], dtype=np.int64),  # (3,)
        gates=np.array([0.25, 0.5, 0.75], dtype=np.float32),  # (3,)
        alphas=np.stack([peaked(0, 0), peaked(5, 5), peaked(13, 13)]),  # (3, 14, 14)
        distribution=None,
        end_log_prob=-2.0,
        end_rank=2,
        total_log_prob=-9.87654,  # made up: only the formatting is tested
        truncated=True,
    )
    data = json.loads(json.dumps(payload.probe_data(probed), allow_nan=False))  # JSON-safe: no -inf
    assert list(data) == [
        *("caption", "words", "alphas", "grids", "grid", "gates", "score"),  # payload.word_payload of its caption
        *("log_probs", "probs", "ranks", "unknown", "end_log_prob", "end_rank", "total_log_prob", "truncated"),
    ]
    assert data["caption"] == "a dog zzyzx" and data["words"] == ["a", "dog", "zzyzx"] and data["grid"] == [14, 14]
    np.testing.assert_allclose(data["alphas"], probed.alphas, atol=1e-5)
    np.testing.assert_allclose(payload.unpack_grids(data), probed.alphas / 0.9, atol=1e-4)
    assert data["gates"] == [0.25, 0.5, 0.75] and data["ranks"] == [1, 3, 7] and data["unknown"] == [False, False, True]
    assert data["log_probs"] == [-0.1235, -1.5, None] and data["probs"] == [round(np.exp(-0.123456), 6), 0.22313, 0.0]
    assert data["score"] == data["total_log_prob"] == -9.8765
    assert (data["end_log_prob"], data["end_rank"], data["truncated"]) == (-2.0, 2, True)


def test_check_data_is_json_safe_and_aligned_with_the_words():
    gradient = np.zeros((2, 14, 14))  # (n, 14, 14): the second word has no positive gradient
    gradient[0, 0, :2] = [0.75, 0.25]
    checked = AttentionCheck(
        words=["a", "cup"],
        ids=[4, 6],
        probs=np.array([0.5, 0.25]),  # (n,)
        probs_hidden_here=np.array([0.125, 0.2]),
        probs_hidden_elsewhere=np.array([0.5, 0.25]),
        hidden_cells=[[0], [195, 194]],
        elsewhere_cells=[[[100]], [[10, 11]]],
        alphas=np.stack([peaked(0, 0), peaked(13, 13)]),  # (n, 14, 14)
        gradient=gradient,
    )
    data = json.loads(json.dumps(payload.check_data(checked), allow_nan=False))  # JSON-safe: no NaN
    assert list(data) == [
        *("caption", "words", "probs", "probs_hidden_here", "probs_hidden_elsewhere", "hidden_cells"),
        *("gradient", "gradient_share", "grid", "alphas"),
    ]
    assert data["caption"] == "a cup" and data["grid"] == [14, 14] and data["hidden_cells"] == [[0], [195, 194]]
    assert data["probs_hidden_here"] == [0.125, 0.2] and data["gradient_share"] == [0.75, None]  # NaN: nothing > 0
    assert np.array(data["gradient"]).shape == np.array(data["alphas"]).shape == (2, 14, 14)
    per_word = {k: v for k, v in data.items() if k not in ("caption", "grid", "alphas")}
    assert payload.check_scores(checked) == per_word  # what the command line prints


def test_a_clients_beam_and_word_index_are_clamped_and_anything_else_is_the_default():
    low, high = payload.BEAM_SIZES
    assert [payload.beam_width(b) for b in (0, 2.6, 99, "4")] == [low, 3, high, 4]
    assert payload.beam_width(None) == payload.beam_width(float("nan")) == payload.beam_width("x") == DEFAULT_BEAM_SIZE
    assert [payload.word_index(i, 5) for i in (-3, 2.4, 9, None)] == [0, 2, 4, 0]
