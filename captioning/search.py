"""Greedy and beam search, batched over images (B images x k beams at once); one module for app, eval and CLI."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioning.decoder import Decoder


@dataclass
class Hypothesis:
    """A decoded caption: word ids (without <start>/<end>), one attention map per word, and its score."""

    tokens: list[int]
    alphas: torch.Tensor  # (n_words, 196)
    score: float
    complete: bool = True  # False when max_len was reached before <end>


@torch.no_grad()
def greedy_search(decoder: Decoder, features: torch.Tensor, start_id: int, end_id: int, max_len: int = 50,
                  banned: tuple[int, ...] = ()):
    """Most likely word at each step. features (B, 196, C) -> list of B Hypothesis."""
    state = decoder.start(features)
    batch = features.size(0)
    words = torch.full((batch,), start_id, dtype=torch.long, device=features.device)  # (B,)
    scores = torch.zeros(batch, device=features.device)  # (B,)
    finished = torch.zeros(batch, dtype=torch.bool, device=features.device)  # (B,)
    tokens, alphas = [], []
    for step in range(max_len):
        logits, alpha, state = decoder.step(words, state)  # (B, V), (B, 196)
        never = (0, start_id, *banned, *((end_id,) if step == 0 else ()))  # no empty caption
        log_probs = _never_emit(torch.log_softmax(logits.float(), dim=1), never)  # (B, V)
        best, words = log_probs.max(dim=1)  # (B,), (B,)
        scores += best * (~finished)
        tokens.append(words)
        alphas.append(alpha.float())
        finished |= words == end_id
        if finished.all():
            break
    tokens = torch.stack(tokens, dim=1).tolist()  # (B, steps)
    alphas = torch.stack(alphas, dim=1)  # (B, steps, 196)
    results = []
    for b in range(batch):
        complete = end_id in tokens[b]
        n = tokens[b].index(end_id) if complete else len(tokens[b])
        results.append(Hypothesis(tokens[b][:n], alphas[b, :n].cpu(), float(scores[b]), complete))
    return results


def _never_emit(log_probs: torch.Tensor, token_ids: tuple[int, ...]) -> torch.Tensor:
    """<pad> (id 0), <start> and any banned word (e.g. <unk>) are never generated."""
    log_probs[:, list(token_ids)] = float("-inf")
    return log_probs


def _normalised(score: float, length: int, length_penalty: float) -> float:
    """Log-probability divided by length**penalty (0 = plain log-probability)."""
    return score / max(length, 1) ** length_penalty


@torch.no_grad()
def beam_search(
    decoder: Decoder,
    features: torch.Tensor,
    start_id: int,
    end_id: int,
    beam_size: int = 3,
    max_len: int = 50,
    length_penalty: float = 0.0,
    banned: tuple[int, ...] = (),
) -> list[Hypothesis]:
    """Best caption per image among k beams; falls back to the best live beam if none ends within max_len."""
    batch, k, device = features.size(0), beam_size, features.device
    state = decoder.start(features).select(torch.arange(batch, device=device).repeat_interleave(k))  # (B*k, ...)
    words = torch.full((batch * k,), start_id, dtype=torch.long, device=device)  # (B*k,)
    beam_scores = torch.zeros(batch, k, device=device)  # (B, k)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive at first
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)  # (B*k, t)
    alpha_history = torch.zeros(batch * k, 0, features.size(1), device=device)  # (B*k, t, 196)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    offsets = (torch.arange(batch, device=device) * k)[:, None]  # (B, 1)

    for step in range(max_len):
        logits, alpha, state = decoder.step(words, state)  # (B*k, V), (B*k, 196)
        vocab = logits.size(1)
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (B*k, V)
        never = (0, start_id, *banned, *((end_id,) if step == 0 else ()))  # no empty caption
        log_probs = _never_emit(log_probs, never).view(batch, k, vocab)  # (B, k, V)
        candidates = (beam_scores[:, :, None] + log_probs).view(batch, k * vocab)  # (B, k*V)
        top_scores, top_ids = candidates.topk(2 * k, dim=1)  # (B, 2k) best first
        beam_ids = top_ids // vocab  # (B, 2k) integer beam index
        word_ids = top_ids % vocab  # (B, 2k)
        is_end = word_ids == end_id  # (B, 2k)
        alpha_all = torch.cat([alpha_history, alpha.float()[:, None]], dim=1)  # (B*k, t+1, 196)

        end_rows, end_cols = torch.nonzero(is_end & (torch.arange(2 * k, device=device) < k), as_tuple=True)
        for b, j in zip(end_rows.tolist(), end_cols.tolist()):
            if done[b] or top_scores[b, j] == float("-inf"):
                continue
            row = b * k + int(beam_ids[b, j])
            score = float(top_scores[b, j])
            finished[b].append(Hypothesis(history[row].tolist(), alpha_all[row, :-1].cpu(), score))

        # The k best candidates that do not end become the next beams.
        live_rank = torch.cumsum(~is_end, dim=1) - 1  # (B, 2k)
        keep = ~is_end & (live_rank < k)  # (B, 2k) exactly k per image
        next_beams = beam_ids[keep].view(batch, k)  # (B, k)
        next_words = word_ids[keep].view(batch, k)  # (B, k)
        beam_scores = top_scores[keep].view(batch, k)  # (B, k)
        rows = (offsets + next_beams).view(-1)  # (B*k,)
        history = torch.cat([history[rows], next_words.view(-1, 1)], dim=1)  # (B*k, t+1)
        alpha_history = alpha_all[rows]  # (B*k, t+1, 196)
        state = state.select(rows)
        words = next_words.view(-1)  # (B*k,)

        for b in range(batch):
            if not done[b] and len(finished[b]) >= k:
                done[b] = True
        if bool(done.all()):
            break

    results = []
    for b in range(batch):
        pool = list(finished[b])
        if not pool:  # no beam emitted <end> within max_len: best live beam
            row = b * k + int(beam_scores[b].argmax())
            pool = [Hypothesis(history[row].tolist(), alpha_history[row].cpu(), float(beam_scores[b].max()), False)]
        results.append(max(pool, key=lambda h: _normalised(h.score, len(h.tokens) + 1, length_penalty)))
    return results


def decode(decoder: Decoder, features: torch.Tensor, word_map: dict[str, int], beam_size: int = 3,
           max_len: int = 50, length_penalty: float = 0.0, allow_unk: bool = False) -> list[Hypothesis]:
    """Greedy for beam_size 1 is beam search with one beam; both are exposed for tests and speed."""
    start_id, end_id = word_map["<start>"], word_map["<end>"]
    banned = () if allow_unk or "<unk>" not in word_map else (word_map["<unk>"],)
    if beam_size == 1 and length_penalty == 0.0:
        return greedy_search(decoder, features, start_id, end_id, max_len, banned)
    return beam_search(decoder, features, start_id, end_id, beam_size, max_len, length_penalty, banned)
