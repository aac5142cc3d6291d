"""Additive (Bahdanau) attention over the 196 annotation vectors: the soft (expected) context, and hard attention's
sampled or most likely location."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class RowLayout:
    """Which image each decoding row (a caption, beam or sample) reads, and the row's slot among that image's rows:
    the attention context is then one (slots x 196) @ (196 x C) GEMM per image, its features read once per step
    instead of once per row (per-row copies would make the context memory-bound)."""

    image: torch.Tensor  # (B,) the image of each row
    slot: torch.Tensor  # (B,) the row's place among its image's rows
    slots: int  # the most rows of one image

    @classmethod
    def identity(cls, rows: int, device: torch.device) -> RowLayout:
        """One row per image, in order."""
        return cls(torch.arange(rows, device=device), torch.zeros(rows, dtype=torch.long, device=device), 1)

    @classmethod
    def of(cls, image: torch.Tensor) -> RowLayout:
        """The layout of rows reading image (B,); slots numbered in row order within each image."""
        if image.numel() == 0:
            return cls(image, image.clone(), 1)
        order = torch.argsort(image, stable=True)  # (B,) rows grouped by image
        sorted_image = image[order]  # (B,)
        counts = torch.bincount(sorted_image)  # (N,) rows per image
        starts = counts.cumsum(0) - counts  # (N,) first sorted position of each image
        slot = torch.empty_like(image)
        slot[order] = torch.arange(image.numel(), device=image.device) - starts[sorted_image]  # (B,)
        return cls(image, slot, int(counts.max()))

    def first(self, rows: int) -> RowLayout:
        """The first rows only (slots stay where they were)."""
        return RowLayout(self.image[:rows], self.slot[:rows], self.slots)

    def select(self, index: torch.Tensor) -> RowLayout:
        """Rows picked (and possibly repeated) by index. A layout depends only on its rows' images, so a pick that
        keeps them (beam search reordering each image's beams) keeps this layout."""
        image = self.image[index]  # (B',)
        return self if torch.equal(image, self.image) else RowLayout.of(image)


def _rows_per_chunk(image_projection: torch.Tensor, cache_bytes: int = 2**21) -> int:
    """How many rows' (196, A) activations fit in about 2 MB, so a chunk's passes stay in cache."""
    row_bytes = image_projection[0].numel() * image_projection.element_size()
    return max(1, cache_bytes // row_bytes)


def _score_activations(image_projection: torch.Tensor, att2: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """relu(P[image] + W_h h) for some rows: (N, 196, A), (b, A), (b,) -> (b, 196, A)."""
    return torch.index_select(image_projection, 0, image).add_(att2[:, None]).relu_()  # (b, 196, A)


class _AdditiveScores(torch.autograd.Function):
    """w . relu(P[image] + W_h h) + b for every row and location, a few rows at a time, recomputing the activations
    in backward instead of storing them: autograd's version keeps a per-row copy of P and makes about ten passes
    over the (B, 196, A) activations in memory per step; here each chunk's passes stay in cache (timings in
    docs/benchmarks.md)."""

    @staticmethod
    def forward(
        ctx,
        image_projection: torch.Tensor,
        att2: torch.Tensor,
        image: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        dtype = image_projection.dtype
        weight_in_dtype = weight.to(dtype)  # (A,) cast once, not per chunk
        scores = image_projection.new_empty(att2.size(0), image_projection.size(1))  # (B, 196); B may be 0
        chunk = _rows_per_chunk(image_projection)
        for start in range(0, att2.size(0), chunk):
            rows = slice(start, start + chunk)
            scores[rows] = _score_activations(image_projection, att2[rows], image[rows]) @ weight_in_dtype  # (b, 196)
        scores.add_(bias.to(dtype))  # (B, 196)
        ctx.save_for_backward(image_projection, att2, image, weight)
        ctx.bias_dtype = bias.dtype
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores: torch.Tensor):
        image_projection, att2, image, weight = ctx.saved_tensors  # (N, 196, A), (B, A), (B,), (A,)
        dtype = image_projection.dtype
        grad_scores = grad_scores.to(dtype)  # (B, 196)
        weight_in_dtype = weight.to(dtype)  # (A,)
        grad_weight = torch.zeros_like(weight_in_dtype)  # (A,)
        grad_att2 = torch.empty_like(att2)  # (B, A)
        grad_projection = torch.zeros_like(image_projection)  # (N, 196, A)
        chunk = _rows_per_chunk(image_projection)
        for start in range(0, att2.size(0), chunk):
            rows = slice(start, start + chunk)
            hidden = _score_activations(image_projection, att2[rows], image[rows])  # (b, 196, A)
            grad = grad_scores[rows]  # (b, 196)
            grad_weight += torch.einsum("bl,bla->a", grad, hidden)  # (A,)
            grad_hidden = hidden.sign_().mul_(grad[:, :, None]).mul_(weight_in_dtype)  # (b, 196, A) relu'
            grad_att2[rows] = grad_hidden.sum(dim=1)  # (b, A)
            grad_projection.index_add_(0, image[rows], grad_hidden)  # (N, 196, A)
        grad_bias = grad_scores.sum().reshape(1).to(ctx.bias_dtype)  # (1,)
        return grad_projection, grad_att2, None, grad_weight.to(weight.dtype), grad_bias


def additive_scores(
    image_projection: torch.Tensor, att2: torch.Tensor, image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Attention scores e = w . relu(W_a a + W_h h) + b: image_projection (N, 196, A) one per image, att2 (B, A)
    per row, image (B,) each row's image, weight (A,), bias (1,) -> (B, 196)."""
    return _AdditiveScores.apply(image_projection, att2, image, weight, bias)  # (B, 196)


def context_by_image(alpha: torch.Tensor, features: torch.Tensor, layout: RowLayout) -> torch.Tensor:
    """sum_i alpha_i a_i of each row: alpha (B, 196), features (N, 196, C) one per image -> context (B, C)."""
    grouped = alpha.new_zeros(features.size(0), layout.slots, alpha.size(1))  # (N, S, 196) empty slots stay zero
    grouped[layout.image, layout.slot] = alpha
    return torch.bmm(grouped.to(features.dtype), features)[layout.image, layout.slot]  # (B, C)


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
        self,
        features: torch.Tensor,
        image_projection: torch.Tensor,
        att2: torch.Tensor,
        layout: RowLayout | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same with the hidden half of the score, att2 = decoder_att(h) (B, A), already computed; with a
        layout, features and image_projection are one per image (N, 196, C), (N, 196, A) and layout says which one
        each row reads."""
        layout = layout if layout is not None else RowLayout.identity(att2.size(0), att2.device)
        scores = additive_scores(
            image_projection, att2, layout.image, self.full_att.weight[0], self.full_att.bias
        )  # (B, 196)
        alpha = torch.softmax(scores, dim=1)  # (B, 196)
        return context_by_image(alpha, features, layout), alpha  # (B, C), (B, 196)


def location_context(features: torch.Tensor, location: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    """The annotation vector at one location per row: features (B, 196, C) (or (N, 196, C) with image (B,), each
    row's image), location (B,) -> (B, C)."""
    image = image if image is not None else torch.arange(location.size(0), device=features.device)  # (B,)
    return features[image, location]  # (B, C)


def hard_context(
    features: torch.Tensor,
    alpha: torch.Tensor,
    soft_context: torch.Tensor,
    sample: bool,
    soft_probability: float,
    image: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hard (stochastic) attention's context (Xu et al. 2015, 4.1) -> context (B, C), log p(s) (B,) or None.

    Training (sample=True): a location s ~ Multinoulli(alpha) per row, its annotation vector as the context, except
    that with probability soft_probability a row keeps the expected (soft) context instead; log p(s) = log alpha_s
    is 0 for those rows (nothing sampled, nothing for REINFORCE). Decoding (sample=False): the most likely location.
    features are per row (B, 196, C), or per image (N, 196, C) with image (B,) naming each row's.
    """
    if not sample:
        return location_context(features, alpha.argmax(dim=1), image), None  # (B, C)
    location = torch.multinomial(alpha.detach().float(), 1).squeeze(1)  # (B,)
    use_soft = torch.rand(alpha.size(0), device=alpha.device) < soft_probability  # (B,)
    picked = location_context(features, location, image).to(soft_context.dtype)  # (B, C)
    context = torch.where(use_soft[:, None], soft_context, picked)  # (B, C)
    log_prob = alpha.float().gather(1, location[:, None]).squeeze(1).clamp_min(1e-12).log()  # (B,)
    return context, log_prob.masked_fill(use_soft, 0.0)  # (B, C), (B,)
