"""Training objective: per-token cross-entropy plus the doubly stochastic attention penalty, and the module that
turns one batch into its loss (what DDP wraps; training and validation both call it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from captioning.decoder import DecoderOutput
from captioning.meters import topk_hits
from captioning.model import Captioner


def predicted_tokens(output: DecoderOutput, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n_tokens, V) in fp32 and target words (n_tokens,) of the real steps: step t predicts word t + 1."""
    targets = captions[:, 1 : output.mask.size(1) + 1]  # (B, L) the word after each input word
    return output.logits[output.mask].float(), targets[output.mask]  # (n_tokens, V), (n_tokens,)


def caption_loss(
    output: DecoderOutput, captions: torch.Tensor, attention_penalty: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, cross-entropy per real token, penalty); penalty = lambda * mean_b sum_i (1 - sum_t alpha_ti)^2."""
    logits, targets = predicted_tokens(output, captions)  # (n_tokens, V), (n_tokens,)
    cross_entropy = F.cross_entropy(logits, targets)
    attention_sum = (output.alphas.float() * output.mask[..., None]).sum(dim=1)  # (B, 196) real steps only
    penalty = attention_penalty * ((1.0 - attention_sum) ** 2).sum(dim=1).mean()
    return cross_entropy + penalty, cross_entropy, penalty


@dataclass
class BatchLoss:
    """One batch's objective: the scalar to minimise and the counts behind the logged averages."""

    loss: torch.Tensor  # () what backward() is called on
    cross_entropy: torch.Tensor  # () per predicted token, without the penalty (the logged loss)
    tokens: torch.Tensor  # () predicted tokens: the weight of both averages
    top5_hits: torch.Tensor  # () tokens whose target word is among the 5 highest logits

    def log_values(self) -> dict[str, tuple[float, int]]:
        """{name: (batch average, weight)} for the loops' meters; logged as train_NAME / val_NAME."""
        tokens = int(self.tokens)
        return {"loss": (float(self.cross_entropy), tokens), "top5": (100.0 * float(self.top5_hits) / tokens, tokens)}


class TeacherForcedLoss(nn.Module):
    """(pixels or cached features, captions, lengths, image_index) -> BatchLoss, like nanoGPT's
    forward(idx, targets) and self-critical.pytorch's LossWrapper. Another objective (self-critical, hard attention)
    is another module with this forward and a result with .loss and .log_values(); the loops stay as they are."""

    def __init__(self, captioner: Captioner, to_features: Callable[[torch.Tensor], torch.Tensor],
                 attention_penalty: float):
        super().__init__()
        self.captioner = captioner
        self.to_features = to_features  # Captioner.batch_encoder: the batch -> features function of this run
        self.attention_penalty = attention_penalty

    def forward(self, inputs, captions, lengths, image_index, indices=None) -> BatchLoss:
        return self.loss_on_features(self.to_features(inputs), captions, lengths, image_index)

    def loss_on_features(self, features, captions, lengths, image_index) -> BatchLoss:
        """The objective for features (N, 196, C) already computed (validation decodes the same features)."""
        output = self.captioner.decoder(features, captions, lengths, image_index)  # logits (B, L, V)
        loss, cross_entropy, _ = caption_loss(output, captions, self.attention_penalty)
        logits, targets = predicted_tokens(output, captions)  # (n_tokens, V), (n_tokens,)
        return BatchLoss(loss, cross_entropy.detach(), output.mask.sum(), topk_hits(logits.detach(), targets, k=5))
