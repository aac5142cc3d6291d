"""Word map (token <-> id) and fixed-length caption encoding, as in the Show, Attend and Tell tutorial."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
PAD_ID = 0  # build_word_map always gives <pad> id 0, so padding is zeros


@dataclass(frozen=True)
class SpecialIds:
    """The special tokens' ids in one word map; unk is None for a map without <unk>."""

    start: int
    end: int
    pad: int = PAD_ID
    unk: int | None = None


def special_ids(word_map: Mapping[str, int]) -> SpecialIds:
    """Look up <start>, <end>, <pad> and <unk> once, so no other module spells the token strings."""
    return SpecialIds(word_map[START], word_map[END], word_map.get(PAD, PAD_ID), word_map.get(UNK))


def build_word_map(word_freq: Counter, min_word_freq: int) -> dict[str, int]:
    """Words seen more than min_word_freq times, ids from 1 in first-seen order; <pad>=0, then <start>, <end>, <unk>."""
    words = [w for w, count in word_freq.items() if count > min_word_freq and w not in SPECIAL_TOKENS]
    word_map = {PAD: 0}
    word_map.update((w, i) for i, w in enumerate(words, start=1))
    for token in (START, END, UNK):
        word_map[token] = len(word_map)
    return word_map


def encode_caption(tokens: list[str], word_map: Mapping[str, int], max_len: int) -> list[int]:
    """[<start>] + ids (<unk> if unknown) + [<end>] + <pad>s: always max_len + 2 ids; refuses to truncate."""
    if len(tokens) > max_len:
        raise ValueError(f"caption has {len(tokens)} words, more than max_len={max_len}")
    unk = word_map[UNK]
    ids = [word_map.get(w, unk) for w in tokens]
    return [word_map[START], *ids, word_map[END]] + [word_map[PAD]] * (max_len - len(tokens))


def decode(ids: Iterable[int], word_map_inverse: Mapping[int, str]) -> list[str]:
    """Words of an encoded caption: stops at <end>, skips <start> and <pad>."""
    words = []
    for i in ids:
        word = word_map_inverse[int(i)]
        if word == END:
            break
        if word not in (START, PAD):
            words.append(word)
    return words


def invert_word_map(word_map: Mapping[str, int]) -> dict[int, str]:
    """id -> word, the mapping decode() needs."""
    return {i: w for w, i in word_map.items()}


def save_word_map(path, word_map: Mapping[str, int]) -> None:
    """Write the word map as JSON, keeping its order (<pad> first)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(word_map), f, ensure_ascii=False)


def load_word_map(path) -> dict[str, int]:
    """Read a word map written by save_word_map."""
    with open(path, encoding="utf-8") as f:
        return {str(w): int(i) for w, i in json.load(f).items()}
