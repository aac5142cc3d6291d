"""Training objective: per-token cross-entropy plus the doubly stochastic attention penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from captioning.decoder import DecoderOutput


def caption_loss(
    output: DecoderOutput, captions: torch.Tensor, attention_penalty: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy per real token, penalty); penalty = lambda * mean_b sum_i (1 - sum_t alpha_ti)^2."""
    steps = output.mask.size(1)
    targets = captions[:, 1 : steps + 1]  # (B, L) the word after each input word
    logits = output.logits[output.mask].float()  # (n_tokens, V)
    cross_entropy = F.cross_entropy(logits, targets[output.mask])
    attention_sum = (output.alphas.float() * output.mask[..., None]).sum(dim=1)  # (B, 196) real steps only
    penalty = attention_penalty * ((1.0 - attention_sum) ** 2).sum(dim=1).mean()
    return cross_entropy + penalty, cross_entropy, penalty
