"""Attention: alpha is a distribution and the context its weighted sum, rows sharing an image, the chunked additive
scores against the plain formula, and hard attention's sampled locations (Xu et al. 2015, 4.1)."""

from __future__ import annotations

import pytest
import torch
from conftest import C, features

from captioning.attention import Attention, RowLayout, additive_scores, context_by_image, hard_context


def test_attention_alpha_sums_to_one_and_context_is_the_weighted_sum():
    torch.manual_seed(0)
    attention = Attention(encoder_dim=C, decoder_dim=14, attention_dim=10)
    feats, hidden = features(3), torch.randn(3, 14)
    context, alpha = attention(feats, attention.project_image(feats), hidden)
    assert alpha.shape == (3, 196) and context.shape == (3, C)
    assert (alpha >= 0).all()
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3), atol=1e-6)
    expected = torch.stack([(alpha[b, :, None] * feats[b]).sum(dim=0) for b in range(3)])
    assert torch.allclose(context, expected, atol=1e-5)
    assert alpha.std() > 0  # not a uniform average: the scores depend on the image


def test_rows_sharing_an_image_get_distinct_slots_and_the_per_row_context():
    image = torch.tensor([2, 0, 2, 1, 0, 2])  # (B,) e.g. length-sorted captions of 3 images
    layout = RowLayout.of(image)
    assert layout.slots == 3
    assert sorted(zip(image.tolist(), layout.slot.tolist())) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    feats = features(3)  # (N, 196, C)
    alpha = torch.softmax(torch.randn(6, 196), dim=1).requires_grad_()  # (B, 196)
    grouped = context_by_image(alpha, feats, layout)  # (B, C)
    per_row = torch.bmm(alpha[:, None], feats[image]).squeeze(1)  # (B, C) each row's own copy of its features
    torch.testing.assert_close(grouped, per_row)
    weights = torch.randn_like(per_row)
    (grad_grouped,) = torch.autograd.grad((grouped * weights).sum(), alpha)
    (grad_per_row,) = torch.autograd.grad((per_row * weights).sum(), alpha)
    torch.testing.assert_close(grad_grouped, grad_per_row)
    picked = RowLayout.of(image).select(torch.tensor([0, 0, 2, 3]))  # beams: rows repeated
    assert picked.image.tolist() == [2, 2, 2, 1] and sorted(picked.slot[:3].tolist()) == [0, 1, 2]
    assert RowLayout.of(image).first(2).image.tolist() == [2, 0]


@pytest.mark.parametrize("attention_dim", [10, 2048])  # 2048: one row per cache-sized chunk, so several chunks
def test_chunked_attention_scores_and_gradients_equal_autograd_on_the_plain_formula(attention_dim):
    generator = torch.Generator().manual_seed(3)
    image = torch.tensor([2, 0, 2, 1, 0, 2, 2])  # (B,) rows share images, in no particular order
    projection = torch.randn(3, 196, attention_dim, generator=generator, requires_grad=True)  # (N, 196, A)
    att2 = torch.randn(7, attention_dim, generator=generator, requires_grad=True)  # (B, A)
    weight = torch.randn(attention_dim, generator=generator, requires_grad=True)  # (A,)
    bias = torch.randn(1, generator=generator, requires_grad=True)  # (1,)
    grad_scores = torch.randn(7, 196, generator=generator)  # (B, 196)
    inputs = (projection, att2, weight, bias)
    scores = additive_scores(projection, att2, image, weight, bias)  # (B, 196)
    reference = torch.relu(projection[image] + att2[:, None]) @ weight + bias  # (B, 196)
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(scores, inputs, grad_scores)
    reference_grads = torch.autograd.grad(reference, inputs, grad_scores)
    for name, grad, expected in zip(("projection", "att2", "weight", "bias"), grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-3, msg=name)
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    no_rows = additive_scores(projection, att2[:0], image[:0], weight, bias)  # e.g. every beam finished
    assert no_rows.shape == (0, 196)


def test_sampled_locations_follow_alpha_and_soft_rows_keep_the_expected_context():
    torch.manual_seed(0)
    features = torch.randn(1, 5, 3).expand(4000, 5, 3)  # (B, 5, C) one image, many rows
    alpha = torch.tensor([0.1, 0.6, 0.0, 0.25, 0.05]).expand(4000, 5)  # (B, 5)
    soft = torch.einsum("bl,blc->bc", alpha, features)  # (B, C)
    context, log_prob = hard_context(features, alpha, soft, sample=True, soft_probability=0.0)
    location = (context[:, None] == features).all(dim=2).float().argmax(dim=1)  # (B,) which vector was used
    frequency = torch.bincount(location, minlength=5).float() / len(location)  # (5,)
    torch.testing.assert_close(frequency, alpha[0], atol=0.03, rtol=0)
    torch.testing.assert_close(log_prob, alpha[0][location].log())  # log p(s) of the location drawn

    context, log_prob = hard_context(features, alpha, soft, sample=True, soft_probability=1.0)
    assert torch.equal(context, soft) and torch.count_nonzero(log_prob) == 0

    context, log_prob = hard_context(features, alpha, soft, sample=True, soft_probability=0.5)
    soft_rows = (log_prob == 0).float().mean()
    assert 0.45 < soft_rows < 0.55

    context, log_prob = hard_context(features, alpha, soft, sample=False, soft_probability=0.5)
    assert log_prob is None and torch.equal(context, features[:, 1])  # decoding: the most likely location
