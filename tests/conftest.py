"""Shared fixtures: a tiny word map and a tiny model config (random lite0 encoder, 64 px input, 16-d decoder)."""

from __future__ import annotations

import pytest

from captioning.config import ModelConfig
from captioning.preprocess import Preprocessing

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "on", "left", "right", "of", "the")


@pytest.fixture
def word_map() -> dict[str, int]:
    """<pad>=0, words from 1, then <start>, <end>, <unk> (the layout of vocab.build_word_map)."""
    mapping = {"<pad>": 0}
    mapping.update((w, i) for i, w in enumerate(WORDS, start=1))
    for token in ("<start>", "<end>", "<unk>"):
        mapping[token] = len(mapping)
    return mapping


@pytest.fixture
def tiny_config(word_map) -> ModelConfig:
    """Fast on CPU: a 64 px input gives a 2x2 trunk map, pooled up to the 14x14 grid (fine for tests)."""
    return ModelConfig(
        backbone="tf_efficientnet_lite0",
        encoder_weights="random",
        encoder_dim=1280,
        vocab_size=len(word_map),
        embed_dim=16,
        attention_dim=16,
        decoder_dim=16,
        max_caption_len=12,
        preprocessing=Preprocessing(image_size=64, input_size=64),
    )
