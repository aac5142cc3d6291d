"""Greedy and beam search, batched over images (B images x k beams at once); one module for app, eval and CLI.

Every search returns, per image, its pool of finished captions, best first: greedy's pool is its one caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from captioning.decoder import Decoder, DecoderState
from captioning.vocab import PAD_ID, special_ids

DEFAULT_LENGTH_PENALTY = 0.0  # none: a caption's score is its summed log-probability
DEFAULT_BEAM_SIZE = 3  # the beam width every tool and the demo use unless told otherwise


@dataclass
class Hypothesis:
    """A decoded caption: word ids (without <start>/<end>), one attention map per word, and its score."""

    tokens: list[int]
    alphas: torch.Tensor  # (n_words, 196)
    score: float
    complete: bool = True  # False when max_len was reached before <end>
    gates: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (n_words,) mean gate beta per word


def next_word_log_probs(
    decoder: Decoder,
    words: torch.Tensor,
    state: DecoderState,
    step: int,
    start_id: int,
    end_id: int,
    banned: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
    """One decoder step scored for search: words (R,) -> log p(next word) (R, V) fp32, alpha (R, 196) fp32, state.
    <pad>, <start> and banned words (e.g. <unk>) are never emitted, nor <end> first (no empty caption)."""
    logits, alpha, state = decoder.step(words, state)  # (R, V), (R, 196)
    log_probs = torch.log_softmax(logits.float(), dim=1)  # (R, V)
    never = [PAD_ID, start_id, *banned, *([end_id] if step == 0 else [])]
    log_probs[:, never] = float("-inf")
    return log_probs, alpha.float(), state


def to_hypothesis(
    tokens: list[int], alphas: torch.Tensor, score: float, end_id: int, gates: torch.Tensor | None = None
) -> Hypothesis:
    """A decoded row as a caption: the words before the first <end> (all of them, incomplete, if none).
    gates (steps,): the mean context gate beta of each step, cut like the alphas."""
    complete = end_id in tokens
    n = tokens.index(end_id) if complete else len(tokens)
    gates = torch.zeros(0) if gates is None else gates[:n].float().cpu()  # (n,)
    return Hypothesis(tokens[:n], alphas[:n].cpu(), score, complete, gates)  # alphas (n, 196)


def step_gate(state: DecoderState, rows: int, device: torch.device) -> torch.Tensor:
    """The mean gate beta the last step used, per row (R,) fp32; NaN where a decoder does not report one."""
    if state.gate is None:
        return torch.full((rows,), float("nan"), device=device)  # (R,)
    return state.gate.float()  # (R,)


@torch.no_grad()
def greedy_search(
    decoder: Decoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    max_len: int = 50,
    banned: tuple[int, ...] = (),
) -> list[list[Hypothesis]]:
    """Most likely word at each step. features (B, 196, C) -> per image, a pool of one Hypothesis."""
    state = decoder.start(features)
    batch = features.size(0)
    words = torch.full((batch,), start_id, dtype=torch.long, device=features.device)  # (B,)
    scores = torch.zeros(batch, device=features.device)  # (B,)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)  # (B,)
    tokens, alphas, gates = [], [], []
    for step in range(max_len):
        log_probs, alpha, state = next_word_log_probs(decoder, words, state, step, start_id, end_id, banned)
        best, words = log_probs.max(dim=1)  # (B,), (B,)
        scores += best * (~finished)
        tokens.append(words)
        alphas.append(alpha)
        gates.append(step_gate(state, batch, features.device))  # (B,)
        finished |= words == end_id
        if finished.all():
            break
    tokens = torch.stack(tokens, dim=1).tolist()  # (B, steps)
    alphas = torch.stack(alphas, dim=1)  # (B, steps, 196)
    gates = torch.stack(gates, dim=1)  # (B, steps)
    return [[to_hypothesis(tokens[b], alphas[b], float(scores[b]), end_id, gates[b])] for b in range(batch)]


def _normalised(hypothesis: Hypothesis, length_penalty: float) -> float:
    """Log-probability divided by (words + <end>)**penalty (0 = plain log-probability)."""
    return hypothesis.score / max(len(hypothesis.tokens) + 1, 1) ** length_penalty


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    beam_size: int = DEFAULT_BEAM_SIZE,
    max_len: int = 50,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    banned: tuple[int, ...] = (),
) -> list[list[Hypothesis]]:
    """Per image, every finished caption of the k beams (up to k), best first by normalised score; the best live
    beam alone if none ends within max_len."""
    batch, k, device = features.size(0), beam_size, features.device
    state = decoder.start(features).select(torch.arange(batch, device=device).repeat_interleave(k))  # (B*k, ...)
    words = torch.full((batch * k,), start_id, dtype=torch.long, device=device)  # (B*k,)
    beam_scores = torch.zeros(batch, k, device=device)  # (B, k)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive at first
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)  # (B*k, t)
    alpha_history = torch.zeros(batch * k, 0, features.size(1), device=device)  # (B*k, t, 196)
    gate_history = torch.zeros(batch * k, 0, device=device)  # (B*k, t)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    offsets = (torch.arange(batch, device=device) * k)[:, None]  # (B, 1)

    for step in range(max_len):
        log_probs, alpha, state = next_word_log_probs(decoder, words, state, step, start_id, end_id, banned)
        vocab = log_probs.size(1)
        candidates = (beam_scores[:, :, None] + log_probs.view(batch, k, vocab)).view(batch, k * vocab)  # (B, k*V)
        top_scores, top_ids = candidates.topk(2 * k, dim=1)  # (B, 2k) best first
        beam_ids = top_ids // vocab  # (B, 2k) integer beam index
        word_ids = top_ids % vocab  # (B, 2k)
        is_end = word_ids == end_id  # (B, 2k)
        alpha_all = torch.cat([alpha_history, alpha[:, None]], dim=1)  # (B*k, t+1, 196)
        gate_all = torch.cat([gate_history, step_gate(state, batch * k, device)[:, None]], dim=1)  # (B*k, t+1)

        # Candidates ending among the k best are finished captions (until an image has k of them).
        still_open = [len(pool) < k for pool in finished]  # (B,) images with fewer than k finished captions
        end_rows, end_cols = torch.nonzero(is_end & (torch.arange(2 * k, device=device) < k), as_tuple=True)
        for b, j in zip(end_rows.tolist(), end_cols.tolist()):
            if still_open[b] and top_scores[b, j] > float("-inf"):
                row = b * k + int(beam_ids[b, j])
                ended = [*history[row].tolist(), end_id]
                finished[b].append(to_hypothesis(ended, alpha_all[row], float(top_scores[b, j]), end_id, gate_all[row]))

        # The k best candidates that do not end become the next beams.
        live_rank = torch.cumsum(~is_end, dim=1) - 1  # (B, 2k)
        keep = ~is_end & (live_rank < k)  # (B, 2k) exactly k per image
        next_words = word_ids[keep].view(batch, k)  # (B, k)
        beam_scores = top_scores[keep].view(batch, k)  # (B, k)
        rows = (offsets + beam_ids[keep].view(batch, k)).view(-1)  # (B*k,)
        history = torch.cat([history[rows], next_words.view(-1, 1)], dim=1)  # (B*k, t+1)
        alpha_history = alpha_all[rows]  # (B*k, t+1, 196)
        gate_history = gate_all[rows]  # (B*k, t+1)
        state = state.select(rows)
        words = next_words.view(-1)  # (B*k,)
        if all(len(pool) >= k for pool in finished):
            break

    results = []
    for b in range(batch):
        pool = finished[b]
        if not pool:  # no beam emitted <end> within max_len: best live beam
            row = b * k + int(beam_scores[b].argmax())
            pool = [
                to_hypothesis(
                    history[row].tolist(), alpha_history[row], float(beam_scores[b].max()), end_id, gate_history[row]
                )
            ]
        ranked = sorted(pool, key=lambda h: -_normalised(h, length_penalty))  # stable: ties keep finishing order
        results.append(ranked[:k])  # a last step can finish more than k
    return results


def decode(
    decoder: Decoder,
    features: torch.Tensor,
    word_map: dict[str, int],
    beam_size: int = DEFAULT_BEAM_SIZE,
    max_len: int = 50,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    allow_unk: bool = False,
) -> list[list[Hypothesis]]:
    """Per image, the search's finished captions (up to beam_size), best first. Beam size 1 without a length
    penalty is greedy search: the same caption as one beam, without the beam bookkeeping."""
    ids = special_ids(word_map)
    banned = () if allow_unk or ids.unk is None else (ids.unk,)
    if beam_size == 1 and length_penalty == 0.0:
        return greedy_search(decoder, features, ids.start, ids.end, max_len, banned)
    return beam_search(decoder, features, ids.start, ids.end, beam_size, max_len, length_penalty, banned)
