"""Self-critical sequence training (Rennie et al. 2017): sample captions, reward them with CIDEr-D, and push up
the log-probability of those that beat their baseline (the mean of the image's other samples, or greedy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from captioning.cider import CiderD
from captioning.decoder import Decoder


@dataclass
class Samples:
    """K sampled captions per image, rows image-major (image 0's K samples first)."""

    tokens: torch.Tensor  # (B*K, T) word ids, <end> included, 0 after it
    log_probs: torch.Tensor  # (B*K, T) log p of each sampled word (with gradient), 0 after <end>
    mask: torch.Tensor  # (B*K, T) bool: real words, <end> included


def sample_captions(decoder: Decoder, features: torch.Tensor, k: int, start_id: int, end_id: int,
                    banned: Sequence[int], max_len: int = 20, temperature: float = 1.0) -> Samples:
    """Multinomial samples; `banned` ids (<pad>, <start>, <unk>) are never drawn, nor <end> first; log_probs are
    the model's own log p of each word (as teacher forcing gives it).

    The image projection is computed once per image and shared by its K rows, as in the beam search.
    """
    batch, device = features.size(0), features.device
    state = decoder.start(features).select(torch.arange(batch, device=device).repeat_interleave(k))  # (B*K, ...)
    rows = batch * k
    words = torch.full((rows,), start_id, dtype=torch.long, device=device)  # (B*K,)
    alive = torch.ones(rows, dtype=torch.bool, device=device)  # (B*K,)
    tokens, log_probs, masks = [], [], []
    for step in range(max_len):
        logits, _, state = decoder.step(words, state)  # (B*K, V)
        scores = torch.log_softmax(logits.float() / temperature, dim=1)  # (B*K, V)
        never = [*banned, *((end_id,) if step == 0 else ())]
        scores = scores.index_fill(1, torch.tensor(never, device=device), float("-inf"))  # (B*K, V)
        words = torch.multinomial(scores.detach().exp(), 1).squeeze(1)  # (B*K,)
        if step == max_len - 1:  # a caption cut at max_len still ends
            words = torch.where(alive, torch.full_like(words, end_id), words)
        picked = scores.gather(1, words[:, None]).squeeze(1)  # (B*K,)
        tokens.append(torch.where(alive, words, torch.zeros_like(words)))
        log_probs.append(torch.where(alive, picked, torch.zeros_like(picked)))
        masks.append(alive)
        alive = alive & (words != end_id)
        if not bool(alive.any()):
            break
    return Samples(torch.stack(tokens, 1), torch.stack(log_probs, 1), torch.stack(masks, 1))  # (B*K, T) each


def caption_texts(tokens: torch.Tensor, id_to_word: dict[int, str], end_id: int) -> list[str]:
    """Space-joined words of each row up to (not including) <end>."""
    texts = []
    for row in tokens.tolist():
        words = []
        for token in row:
            if token == end_id or token == 0:
                break
            words.append(id_to_word[token])
        texts.append(" ".join(words))
    return texts


def cider_rewards(scorer: CiderD, texts: Sequence[str], references: Sequence[Sequence[str]],
                  keys: Sequence[object]) -> torch.Tensor:
    """CIDEr-D of each sampled caption against its image's references; texts are image-major (B*K,)."""
    k = len(texts) // len(references)
    rewards = [scorer.score(text, references[i // k], key=keys[i // k]) for i, text in enumerate(texts)]
    return torch.tensor(rewards, dtype=torch.float32).view(len(references), k)  # (B, K)


def leave_one_out_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) -> r - mean of the image's other K-1 rewards (the "new SCST" baseline)."""
    k = rewards.size(1)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)  # (B, K)
    return rewards - baseline


def greedy_advantage(rewards: torch.Tensor, greedy_rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) minus the reward of the image's greedy caption (B,): the original SCST baseline."""
    return rewards - greedy_rewards[:, None]


def policy_gradient_loss(samples: Samples, advantage: torch.Tensor) -> torch.Tensor:
    """-(r - b) log p of every sampled word (<end> included), averaged over the sampled words."""
    weights = advantage.reshape(-1, 1).to(samples.log_probs.device).detach()  # (B*K, 1)
    mask = samples.mask.float()  # (B*K, T)
    return -(weights * samples.log_probs * mask).sum() / mask.sum()
