"""Tokenizer: lower case, punctuation stripped, non-ASCII letters kept."""

from __future__ import annotations

from captioning.text import tokenize


def test_tokenize_lowercases_strips_punctuation_keeps_non_ascii():
    assert tokenize("A black dog, running!") == ["a", "black", "dog", "running"]
    assert tokenize("Un café   noir.") == ["un", "café", "noir"]
    assert tokenize("A red t-shirt ; child 's toy") == ["a", "red", "t", "shirt", "child", "s", "toy"]
    assert tokenize("  ...  ") == []
