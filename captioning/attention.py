"""Additive (Bahdanau) attention over the 196 annotation vectors: the soft (expected) context, and hard attention's
sampled or most likely location."""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """alpha = softmax(w . relu(W_a a_i + W_h h)); context = sum_i alpha_i a_i."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        """The image half of the score; depends only on the image, so computed once per image."""
        return self.encoder_att(features)  # (N, 196, A)

    def forward(
        self, features: torch.Tensor, image_projection: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, 196, C), image_projection (B, 196, A), hidden (B, D) -> context (B, C), alpha (B, 196)."""
        return self.attend(features, image_projection, self.decoder_att(hidden))

    def attend(
        self, features: torch.Tensor, image_projection: torch.Tensor, att2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same with the hidden half of the score, att2 = decoder_att(h) (B, A), already computed."""
        scores = self.full_att(torch.relu(image_projection + att2[:, None])).squeeze(2)  # (B, 196)
        alpha = torch.softmax(scores, dim=1)  # (B, 196)
        context = torch.bmm(alpha[:, None].to(features.dtype), features).squeeze(1)  # (B, C)
        return context, alpha


def location_context(features: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
    """The annotation vector at one location per row: features (B, 196, C), location (B,) -> (B, C)."""
    return features[torch.arange(features.size(0), device=features.device), location]  # (B, C)


def hard_context(features: torch.Tensor, alpha: torch.Tensor, soft_context: torch.Tensor, sample: bool,
                 soft_probability: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hard (stochastic) attention's context (Xu et al. 2015, 4.1) -> context (B, C), log p(s) (B,) or None.

    Training (sample=True): a location s ~ Multinoulli(alpha) per row, its annotation vector as the context, except
    that with probability soft_probability a row keeps the expected (soft) context instead; log p(s) = log alpha_s
    is 0 for those rows (nothing sampled, nothing for REINFORCE). Decoding (sample=False): the most likely location.
    """
    if not sample:
        return location_context(features, alpha.argmax(dim=1)), None  # (B, C)
    location = torch.multinomial(alpha.detach().float(), 1).squeeze(1)  # (B,)
    use_soft = torch.rand(alpha.size(0), device=alpha.device) < soft_probability  # (B,)
    picked = location_context(features, location).to(soft_context.dtype)  # (B, C)
    context = torch.where(use_soft[:, None], soft_context, picked)  # (B, C)
    log_prob = alpha.float().gather(1, location[:, None]).squeeze(1).clamp_min(1e-12).log()  # (B,)
    return context, log_prob.masked_fill(use_soft, 0.0)  # (B, C), (B,)
