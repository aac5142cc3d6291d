"""Additive (Bahdanau) soft attention over the 196 annotation vectors."""

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
