"""Score a sentence someone typed: the model reads it word by word (teacher forcing) on one image and says, for
every word, how likely it found that word there, how it ranked it, how much it used the image and where it looked.

    probes = probe(captioner, image, ["a dog runs on the grass", "a cat sleeps"])
    probes[0].total_log_prob, probes[0].ranks, probes[0].to_caption()

The demo's JSON of a probe is captioning.payload.probe_data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from captioning.model import Caption, Captioner, ImageInput, one_hot_maps
from captioning.search import step_gate
from captioning.text import tokenize
from captioning.vocab import SpecialIds, special_ids


@dataclass(frozen=True)
class ProbeTokens:
    """A typed sentence as the model reads it: the training tokenisation, cut to the model's caption length."""

    words: list[str]  # lower-cased words, punctuation dropped (captioning.text.tokenize), at most max_len
    ids: list[int]  # word-map ids, <unk> for a word outside the vocabulary
    unknown: list[bool]  # per word: outside the vocabulary, read as <unk>
    truncated: bool  # the sentence had more than max_len words; the words after them were dropped


def tokenize_probe(text: str, word_map: Mapping[str, int], max_len: int) -> ProbeTokens:
    """Typed text -> the words the model scores. Words of any script are kept; those outside the vocabulary
    (non-Latin words always are) become <unk> and are marked unknown. ValueError, with a message for the person who
    typed it, for text that is empty or holds no word (only punctuation, symbols or emoji)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Type a sentence to score: the text is empty.")
    words = tokenize(text)
    if not words:
        raise ValueError("That text has no words to score, only punctuation or symbols: type a sentence.")
    unk = special_ids(word_map).unk
    unknown = [word not in word_map for word in words[:max_len]]
    if unk is None and any(unknown):
        missing = ", ".join(w for w, u in zip(words, unknown) if u)
        raise ValueError(f"This model has no <unk> word and does not know: {missing}.")
    ids = [unk if u else word_map[w] for w, u in zip(words, unknown)]
    return ProbeTokens(words[:max_len], ids, unknown, truncated=len(words) > max_len)


@dataclass(frozen=True)
class Probe:
    """What the model made of one sentence on one image, per word and for the whole.

    total_log_prob = sum over the words of log p(word | image, the words before it) + log p(<end> | image, all the
    words): each term is a log_softmax over the whole vocabulary (an unknown word counts as <unk>), added in fp32 in
    word order. That is exactly how beam search scores a caption it ends with <end> (Caption.score; the search
    excludes tokens it never emits without renormalising, and length_penalty only reorders its candidates), so a
    typed sentence and the model's own caption compare directly: higher is more likely.
    """

    words: list[str]  # as typed (tokenised); an unknown word keeps its spelling here
    ids: list[int]  # what the model read: word-map ids, <unk> for unknown words
    unknown: list[bool]  # per word: outside the vocabulary
    log_probs: np.ndarray  # (n,) float32: log p of each word at its place
    ranks: np.ndarray  # (n,) int64: 1 + how many words the search could emit there were more likely (1 = its pick)
    gates: np.ndarray  # (n,) float32: mean gate beta of each word's step, as the search records it
    alphas: np.ndarray  # (n, 14, 14) the map shown: the attention, or one-hot at the cell a hard model reads
    distribution: np.ndarray | None  # (n, 14, 14) hard attention: the full alpha behind the one-hot map; else None
    end_log_prob: float  # log p(<end>) after the last word
    end_rank: int  # rank of <end> there, as ranks
    total_log_prob: float  # see the class docstring
    truncated: bool = False  # the typed sentence was cut to the model's max caption length

    @property
    def probs(self) -> np.ndarray:
        """(n,) the probability of each word at its place."""
        return np.exp(self.log_probs.astype(np.float64))  # (n,)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def to_caption(self) -> Caption:
        """The sentence as a Caption (score = total_log_prob), for everything that draws or sends captions."""
        return Caption(
            list(self.words), self.alphas, self.total_log_prob, True, self.gates, distribution=self.distribution
        )


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, hard attention reads its argmax cell) for the block, then the mode it had."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def never_emitted(ids: SpecialIds, step: int) -> list[int]:
    """Tokens beam search never emits at this step (see search.next_word_log_probs with its default ban of
    <unk>): <pad>, <start>, <unk>, and <end> before the first word."""
    unk = [] if ids.unk is None else [ids.unk]
    return [ids.pad, ids.start, *unk, *([ids.end] if step == 0 else [])]


def ranks_of(log_probs: torch.Tensor, targets: torch.Tensor, never: list[int]) -> torch.Tensor:
    """log_probs (R, V), targets (R,) -> (R,) rank of each target: 1 + the tokens the search could emit that are
    strictly more likely. Rank 1 is the search's (greedy) pick; a target it never emits (<unk>) still gets a rank."""
    chosen = log_probs.gather(1, targets[:, None])  # (R, 1)
    candidates = log_probs.clone()  # (R, V)
    candidates[:, never] = float("-inf")
    return 1 + (candidates > chosen).sum(dim=1)  # (R,)


def sentence_rows(sentences: list[list[int]], ids: SpecialIds) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids -> what each step reads and predicts, padded to the longest: inputs (R, T) = <start> w1..wn <pad>..,
    targets (R, T) = w1..wn <end> <pad>.., with T = longest n + 1."""
    steps = max(len(s) for s in sentences) + 1
    inputs = torch.full((len(sentences), steps), ids.pad, dtype=torch.long)  # (R, T)
    targets = torch.full((len(sentences), steps), ids.pad, dtype=torch.long)  # (R, T)
    for row, sentence in enumerate(sentences):
        inputs[row, : len(sentence) + 1] = torch.tensor([ids.start, *sentence])
        targets[row, : len(sentence) + 1] = torch.tensor([*sentence, ids.end])
    return inputs, targets


@torch.no_grad()
def probe_features(captioner: Captioner, features: torch.Tensor, sentences: list[list[int]]) -> list[Probe]:
    """Teacher-forced scores of word-id sentences (no <start>/<end>) on one image, all sentences in one batch.
    features: (1, 196, C) shared by every sentence, or (R, 196, C) one row per sentence. Runs in eval mode with the
    same decoder steps as the search, so a caption the search wrote gets back its own scores, maps and gates."""
    if not sentences:
        return []
    if any(len(sentence) == 0 for sentence in sentences):
        raise ValueError("a sentence to probe needs at least one word")
    if features.dim() != 3 or features.size(0) not in (1, len(sentences)):
        raise ValueError(f"features must be (1, cells, C) or ({len(sentences)}, cells, C), not {tuple(features.shape)}")
    decoder = captioner.decoder
    device = next(decoder.parameters()).device
    ids = special_ids(captioner.word_map)
    rows = len(sentences)
    inputs, targets = (t.to(device) for t in sentence_rows(sentences, ids))  # (R, T), (R, T)
    lengths = torch.tensor([len(s) for s in sentences], device=device)  # (R,) words per sentence

    with evaluating(captioner):
        image_of_row = (
            torch.zeros(rows, dtype=torch.long, device=device)
            if features.size(0) == 1
            else torch.arange(rows, device=device)
        )  # (R,)
        state = decoder.start(features.to(device)).select(image_of_row)  # (R, ...) rows share the image's tensors
        totals = torch.zeros(rows, device=device)  # (R,) fp32, accumulated like the beam's scores
        log_probs, ranks, alphas, gates = [], [], [], []
        for step in range(inputs.size(1)):
            logits, alpha, state = decoder.step(inputs[:, step], state)  # (R, V), (R, 196)
            step_log_probs = torch.log_softmax(logits.float(), dim=1)  # (R, V) as search.next_word_log_probs
            chosen = step_log_probs.gather(1, targets[:, step, None])[:, 0]  # (R,)
            totals += torch.where(step <= lengths, chosen, torch.zeros_like(chosen))  # (R,) words, then <end>
            log_probs.append(chosen)
            ranks.append(ranks_of(step_log_probs, targets[:, step], never_emitted(ids, step)))  # (R,)
            alphas.append(alpha.float())  # (R, 196)
            gates.append(step_gate(state, rows, device))  # (R,)

    log_probs = torch.stack(log_probs, dim=1).cpu().numpy()  # (R, T)
    ranks = torch.stack(ranks, dim=1).cpu().numpy()  # (R, T)
    alphas = torch.stack(alphas, dim=1).cpu().numpy()  # (R, T, 196)
    gates = torch.stack(gates, dim=1).cpu().numpy()  # (R, T)
    grid = math.isqrt(alphas.shape[2])  # 14: the square grid of annotation vectors
    hard = captioner.decoder.hard  # decodes from its argmax cell: show that cell, as Captioner.to_caption does
    probes = []
    for row, sentence in enumerate(sentences):
        n = len(sentence)
        maps = alphas[row, :n].reshape(n, grid, grid)  # (n, 14, 14)
        probes.append(
            Probe(
                words=[captioner.id_to_word[i] for i in sentence],
                ids=list(sentence),
                unknown=[i == ids.unk for i in sentence],
                log_probs=log_probs[row, :n],  # (n,)
                ranks=ranks[row, :n].astype(np.int64),  # (n,)
                gates=gates[row, :n],  # (n,)
                alphas=one_hot_maps(maps) if hard else maps,  # (n, 14, 14) as Captioner.to_caption shows them
                distribution=maps if hard else None,
                end_log_prob=float(log_probs[row, n]),
                end_rank=int(ranks[row, n]),
                total_log_prob=float(totals[row]),
            )
        )
    return probes


@torch.no_grad()
def image_features(captioner: Captioner, image: ImageInput) -> torch.Tensor:
    """One photo (file or PIL image) -> its annotation vectors (1, 196, C), the way Captioner.caption encodes it."""
    with evaluating(captioner):
        return captioner.encode(captioner.image_batch(image))  # (1, 196, C)


def probe(captioner: Captioner, image_or_features: ImageInput | torch.Tensor, texts: list[str] | str) -> list[Probe]:
    """Score typed sentences on one image: a photo (file or PIL image), encoded once here, or its features
    (1, 196, C). One Probe per text, in order; ValueError (a message for people) if a text is empty or has no word."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    tokens = [tokenize_probe(text, captioner.word_map, captioner.config.max_caption_len) for text in texts]
    features = (
        image_or_features
        if isinstance(image_or_features, torch.Tensor)
        else image_features(captioner, image_or_features)
    )  # (1, 196, C)
    probes = probe_features(captioner, features, [t.ids for t in tokens])
    return [replace(p, words=list(t.words), truncated=t.truncated) for p, t in zip(probes, tokens)]
