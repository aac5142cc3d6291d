"""Vocabulary: the word map's ids, encoding and decoding a caption, its JSON round trip, and the special ids read
from a word map."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import END, START

from captioning.vocab import (
    SpecialIds,
    build_word_map,
    decode,
    encode_caption,
    invert_word_map,
    load_word_map,
    save_word_map,
    special_ids,
)


def test_word_map_round_trip(tmp_path):
    word_map = build_word_map(Counter({"b": 3, "a": 2, "rare": 1}), min_word_freq=1)
    assert list(word_map.items()) == [("<pad>", 0), ("b", 1), ("a", 2), ("<start>", 3), ("<end>", 4), ("<unk>", 5)]
    ids = encode_caption(["a", "rare", "b"], word_map, max_len=5)
    assert ids == [3, 2, 5, 1, 4, 0, 0]
    assert decode(ids, invert_word_map(word_map)) == ["a", "<unk>", "b"]
    save_word_map(tmp_path / "wm.json", word_map)
    assert list(load_word_map(tmp_path / "wm.json").items()) == list(word_map.items())
    with pytest.raises(ValueError):
        encode_caption(["a"] * 6, word_map, max_len=5)  # never truncated


def test_special_ids_come_from_the_word_map():
    word_map = build_word_map(Counter({"a": 5, "dog": 5, "<end>": 9}), min_word_freq=1)
    ids = special_ids(word_map)
    assert ids == SpecialIds(start=word_map["<start>"], end=word_map["<end>"], pad=0, unk=word_map["<unk>"])
    assert len({ids.start, ids.end, ids.pad, ids.unk}) == 4
    assert special_ids({"<start>": START, "<end>": END}) == SpecialIds(START, END, pad=0, unk=None)
