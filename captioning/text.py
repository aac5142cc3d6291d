"""Caption text normalisation: the one tokenizer shared by data prep, evaluation and the app."""

from __future__ import annotations

import re
import unicodedata

# Runs of letters or digits (any script); everything else, '-' and "'" included, separates words.
# This reproduces Karpathy's split files: "t-shirt" -> ["t", "shirt"], "child's" -> ["child", "s"].
WORD_PATTERN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of a caption with punctuation stripped; keeps non-ASCII letters ("café")."""
    normalised = unicodedata.normalize("NFC", text).lower()  # "e" + combining accent -> "é"
    return WORD_PATTERN.findall(normalised)
