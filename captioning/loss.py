"""Training objectives: per-token cross-entropy plus the doubly stochastic attention penalty, and the modules that
turn one batch into its loss (what DDP wraps; training and validation both call them): teacher forcing, and hard
attention's REINFORCE on top of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from captioning.decoder import SOFT_CONTEXT_PROBABILITY, DecoderOutput
from captioning.meters import topk_hits
from captioning.model import Captioner

# the objectives' weights: TrainConfig's defaults (its flags) and the loss modules' read them from here (the soft
# context's probability of hard attention lives with the decoder: decoder.SOFT_CONTEXT_PROBABILITY)
ATTENTION_PENALTY = 1.0 / 196  # lambda of the doubly stochastic attention penalty (one over the grid's cells)
HARD_REINFORCE_WEIGHT = 1.0  # hard attention: weight of the REINFORCE term (lambda_r)
HARD_ENTROPY_WEIGHT = 0.01  # hard attention: weight of the entropy bonus on alpha (lambda_e)
HARD_BASELINE_DECAY = 0.9  # hard attention: decay of the moving-average REINFORCE baseline


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

    def __init__(
        self, captioner: Captioner, to_features: Callable[[torch.Tensor], torch.Tensor], attention_penalty: float
    ):
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


def caption_log_likelihoods(output: DecoderOutput, captions: torch.Tensor) -> torch.Tensor:
    """Mean log p of each caption's words (per predicted token, so long and short captions compare) (B,)."""
    logits, targets = predicted_tokens(output, captions)  # (n_tokens, V), (n_tokens,) in row-major mask order
    token_log_likelihood = -F.cross_entropy(logits, targets, reduction="none")  # (n_tokens,)
    caption_of_token = output.mask.nonzero()[:, 0]  # (n_tokens,) the row each token belongs to
    sums = token_log_likelihood.new_zeros(output.mask.size(0)).index_add_(0, caption_of_token, token_log_likelihood)
    return sums / output.mask.sum(dim=1).clamp_min(1)  # (B,)


def attention_entropy(output: DecoderOutput) -> torch.Tensor:
    """Mean entropy of alpha over the real steps (nats; log 196 = 5.28 is uniform)."""
    alphas = output.alphas.float()[output.mask]  # (n_tokens, 196)
    return -(alphas * alphas.clamp_min(1e-12).log()).sum(dim=1).mean()


@dataclass
class HardAttentionBatchLoss(BatchLoss):
    """BatchLoss plus what hard attention's REINFORCE estimator logs."""

    baseline: float = 0.0  # the moving-average baseline after this batch
    entropy: float = 0.0  # mean attention entropy of this batch

    def log_values(self) -> dict[str, tuple[float, int]]:
        return {**super().log_values(), "baseline": (self.baseline, 1), "entropy": (self.entropy, 1)}


class HardAttentionLoss(TeacherForcedLoss):
    """Hard (stochastic) attention as in Xu et al. 2015, 4.1: each step's context is one location
    s_t ~ Multinoulli(alpha_t) (the soft context with probability soft_context_probability); the words get the usual
    cross-entropy (+ the doubly stochastic penalty), the attention gets REINFORCE,
    reinforce_weight * (log p(y | s) - b) * grad log p(s), with the moving-average baseline
    b <- decay * b + (1 - decay) * mean log p(y | s) (the first batch's mean starts it), plus an entropy bonus on alpha.
    The baseline is a buffer, so the training state saves it and DDP keeps the ranks in step."""

    def __init__(
        self,
        captioner: Captioner,
        to_features: Callable[[torch.Tensor], torch.Tensor],
        attention_penalty: float,
        reinforce_weight: float = HARD_REINFORCE_WEIGHT,
        entropy_weight: float = HARD_ENTROPY_WEIGHT,
        soft_context_probability: float = SOFT_CONTEXT_PROBABILITY,
        baseline_decay: float = HARD_BASELINE_DECAY,
    ):
        super().__init__(captioner, to_features, attention_penalty)
        if captioner.config.decoder.attention != "hard":
            raise ValueError("HardAttentionLoss needs a model with attention='hard'")
        self.reinforce_weight = reinforce_weight
        self.entropy_weight = entropy_weight
        self.soft_context_probability = soft_context_probability
        self.baseline_decay = baseline_decay
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_started", torch.zeros((), dtype=torch.bool))

    def loss_on_features(self, features, captions, lengths, image_index) -> BatchLoss:
        output = self.captioner.decoder(
            features, captions, lengths, image_index, self.soft_context_probability
        )  # logits (B, L, V)
        loss, cross_entropy, _ = caption_loss(output, captions, self.attention_penalty)
        logits, targets = predicted_tokens(output, captions)  # (n_tokens, V), (n_tokens,)
        tokens = output.mask.sum()
        entropy = attention_entropy(output)
        if output.location_log_probs is not None:  # training: locations were sampled
            likelihood = caption_log_likelihoods(output, captions).detach()  # (B,)
            baseline = self.baseline if bool(self.baseline_started) else likelihood.mean()
            advantage = likelihood - baseline  # (B,)
            reinforce = -(advantage[:, None] * output.location_log_probs).sum() / tokens
            loss = loss + self.reinforce_weight * reinforce - self.entropy_weight * entropy
            self.update_baseline(likelihood.mean())
        return HardAttentionBatchLoss(
            loss,
            cross_entropy.detach(),
            tokens,
            topk_hits(logits.detach(), targets, k=5),
            baseline=float(self.baseline),
            entropy=float(entropy.detach()),
        )

    @torch.no_grad()
    def update_baseline(self, mean_log_likelihood: torch.Tensor) -> None:
        """b <- decay * b + (1 - decay) * mean log-likelihood; the first call sets b to the mean."""
        if not bool(self.baseline_started):
            self.baseline.copy_(mean_log_likelihood)
            self.baseline_started.fill_(True)
            return
        self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * mean_log_likelihood)
