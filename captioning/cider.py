"""CIDEr-D (Vedantam et al. 2015) as pycocoevalcap computes it, with document frequencies fixed once.

pycocoevalcap's `Cider` recomputes document frequencies from the references of whatever it scores; a
self-critical reward needs them from a fixed corpus (the TRAIN references) and needs thousands of sampled
captions scored per second, so the reference vectors are built once per image and reused.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NGRAM_ORDER = 4
SIGMA = 6.0  # width of the Gaussian length penalty (the "-D" of CIDEr-D)


def ngram_counts(caption: str, n: int = NGRAM_ORDER) -> Counter:
    """Counts of every 1..n-gram of a space-tokenised caption."""
    words = caption.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def document_frequencies(references: Iterable[Sequence[str]]) -> tuple[dict[tuple, float], float]:
    """Per n-gram, the number of images whose references contain it; and log(number of images)."""
    frequency: dict[tuple, float] = defaultdict(float)
    images = 0
    for refs in references:
        images += 1
        for ngram in set().union(*(ngram_counts(r) for r in refs)):
            frequency[ngram] += 1.0
    return dict(frequency), math.log(float(images))


@dataclass
class TfIdf:
    """A caption as tf-idf weights per n-gram order, their norms, and its length (as pycocoevalcap counts it)."""

    vectors: list[dict[tuple, float]]
    norms: list[float]
    length: int


class CiderD:
    """CIDEr-D of candidate captions against references, idf from a fixed corpus (e.g. all TRAIN images)."""

    def __init__(self, corpus_references: Iterable[Sequence[str]], sigma: float = SIGMA):
        self.frequency, self.log_images = document_frequencies(corpus_references)
        self.sigma = sigma
        self._reference_cache: dict[object, list[TfIdf]] = {}

    def tfidf(self, caption: str) -> TfIdf:
        """tf * (log N - log df) per n-gram; an n-gram never seen in the corpus counts as df = 1."""
        vectors = [{} for _ in range(NGRAM_ORDER)]
        norms = [0.0] * NGRAM_ORDER
        length = 0
        for ngram, count in ngram_counts(caption).items():
            order = len(ngram) - 1
            weight = float(count) * (self.log_images - math.log(max(1.0, self.frequency.get(ngram, 0.0))))
            vectors[order][ngram] = weight
            norms[order] += weight * weight
            if order == 1:  # pycocoevalcap's length is its bigram count; kept for identical scores
                length += count
        return TfIdf(vectors, [math.sqrt(v) for v in norms], length)

    def similarity(self, candidate: TfIdf, reference: TfIdf) -> float:
        """Mean over n-gram orders of the clipped cosine similarity, times the Gaussian length penalty."""
        penalty = math.exp(-((candidate.length - reference.length) ** 2) / (2 * self.sigma**2))
        total = 0.0
        for order in range(NGRAM_ORDER):
            ref = reference.vectors[order]
            dot = sum(min(w, ref.get(g, 0.0)) * ref.get(g, 0.0) for g, w in candidate.vectors[order].items())
            if candidate.norms[order] != 0 and reference.norms[order] != 0:
                dot /= candidate.norms[order] * reference.norms[order]
            total += dot * penalty
        return total / NGRAM_ORDER

    def references(self, key: object, refs: Sequence[str]) -> list[TfIdf]:
        """The references of one image as tf-idf vectors, built once per key."""
        if key not in self._reference_cache:
            self._reference_cache[key] = [self.tfidf(r) for r in refs]
        return self._reference_cache[key]

    def score(self, candidate: str, refs: Sequence[str], key: object = None) -> float:
        """CIDEr-D of one caption: 10 x mean similarity to the references (key: cache the references' vectors)."""
        vectors = self.references(key, refs) if key is not None else [self.tfidf(r) for r in refs]
        cand = self.tfidf(candidate)
        return 10.0 * sum(self.similarity(cand, ref) for ref in vectors) / len(vectors)
