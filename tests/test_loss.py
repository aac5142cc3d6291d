"""Losses: caption_loss (cross-entropy + doubly stochastic penalty) by hand and blind to padding, TeacherForcedLoss's
token and top-5 counts, and hard attention's REINFORCE gradient with its moving-average baseline (Xu et al. 2015,
4.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import V, features, hard_captioner, make_batch, make_decoder

from captioning.loss import ATTENTION_PENALTY, HardAttentionLoss, TeacherForcedLoss, caption_loss
from captioning.model import Captioner, cached_features


def test_caption_loss_cross_entropy_and_penalty_by_hand():
    decoder = make_decoder().eval()
    lengths_list = [7, 4, 9, 2, 5]
    captions, lengths = make_batch(lengths_list)
    out = decoder(features(5), captions, lengths)
    total, cross_entropy, penalty = caption_loss(out, captions, attention_penalty=1.5)

    logits = torch.cat([out.logits[b, : n - 1] for b, n in enumerate(lengths_list)])
    targets = torch.cat([captions[b, 1:n] for b, n in enumerate(lengths_list)])
    assert torch.allclose(cross_entropy, F.cross_entropy(logits, targets), atol=1e-6)

    by_hand = []
    for b, n in enumerate(lengths_list):
        attention_sum = out.alphas[b, : n - 1].sum(dim=0)  # (196,) over this caption's real steps only
        by_hand.append(((1.0 - attention_sum) ** 2).sum())
    assert torch.allclose(penalty, 1.5 * torch.stack(by_hand).mean(), atol=1e-5)
    assert torch.allclose(total, cross_entropy + penalty)
    assert penalty > 0

    total.backward()
    assert decoder.fc.weight.grad is not None and decoder.attention.encoder_att.weight.grad.abs().sum() > 0


def test_padded_tokens_do_not_change_the_loss():
    decoder = make_decoder().eval()
    lengths_list = [7, 4, 9, 2, 5]
    captions, lengths = make_batch(lengths_list)
    noisy = captions.clone()
    for b, n in enumerate(lengths_list):
        noisy[b, n:] = torch.randint(1, V, (noisy.size(1) - n,), generator=torch.Generator().manual_seed(b))
    assert not torch.equal(noisy, captions)
    feats = features(5)
    with torch.no_grad():
        clean_loss = caption_loss(decoder(feats, captions, lengths), captions, 1.0)
        noisy_loss = caption_loss(decoder(feats, noisy, lengths), noisy, 1.0)
    for a, b in zip(clean_loss, noisy_loss):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_forced_loss_counts_by_hand(tiny_config, word_map):
    """One batch of cached features: the loss is caption_loss, and the token / top-5 counts are those of the real
    steps (step t of caption b predicts word t + 1; padding never counts)."""
    torch.manual_seed(0)
    captioner = Captioner(tiny_config, word_map).eval()
    objective = TeacherForcedLoss(captioner, captioner.batch_encoder(cached=True), attention_penalty=0.5)
    lengths_list = [7, 4, 9, 2, 5, 6]
    lengths = torch.tensor(lengths_list)  # (B,)
    captions = torch.randint(1, len(word_map), (len(lengths_list), 9)) * (torch.arange(9) < lengths[:, None])
    image_index = torch.tensor([0, 0, 0, 1, 1, 1])  # (B,) two images, three captions each
    features = torch.randn(2, 196, tiny_config.encoder_dim).half()  # (N, 196, C) as the cache stores them
    result = objective(features, captions, lengths, image_index)

    with torch.no_grad():
        output = captioner.decoder(features.float(), captions, lengths, image_index)
    assert torch.equal(result.loss.detach(), caption_loss(output, captions, 0.5)[0])
    logits = torch.cat([output.logits[b, : n - 1] for b, n in enumerate(lengths_list)])  # (n_tokens, V)
    targets = torch.cat([captions[b, 1:n] for b, n in enumerate(lengths_list)])  # (n_tokens,)
    hits = sum(int(t in row.topk(5).indices) for row, t in zip(logits, targets))
    assert int(result.tokens) == sum(lengths_list) - len(lengths_list) == len(targets)
    assert int(result.top5_hits) == hits
    assert float(result.cross_entropy) == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-6)
    assert result.log_values() == {
        "loss": (pytest.approx(float(result.cross_entropy)), len(targets)),
        "top5": (pytest.approx(100.0 * hits / len(targets)), len(targets)),
    }
    result.loss.backward()
    assert captioner.decoder.fc.weight.grad.abs().sum() > 0


# --- hard attention: REINFORCE and its moving-average baseline --------------------------------------------------------

ATTENTION_PARAMS = ("attention.encoder_att", "attention.decoder_att", "attention.full_att")


def batch(word_map, n_images=3, per_image=2, length=6, seed=1):
    """Random features (N, 196, 1280) and equal-length captions <start> w.. <end> (B, length + 2), 2 per image."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_images, 196, 1280, generator=generator)  # (N, 196, C)
    words = torch.randint(1, len(word_map) - 3, (n_images * per_image, length), generator=generator)  # (B, length)
    captions = torch.cat(
        [torch.full((len(words), 1), word_map["<start>"]), words, torch.full((len(words), 1), word_map["<end>"])], dim=1
    )  # (B, length + 2)
    lengths = torch.full((len(words),), length + 2)  # (B,)
    image_index = torch.arange(n_images).repeat_interleave(per_image)  # (B,)
    return features, captions, lengths, image_index


def attention_grads(captioner: Captioner) -> dict[str, torch.Tensor]:
    """Gradient of each attention-network parameter (zeros where autograd left none)."""
    named = dict(captioner.decoder.named_parameters())
    return {
        name: (named[name].grad if named[name].grad is not None else torch.zeros_like(named[name]))
        for name in named
        if name.startswith(ATTENTION_PARAMS)
    }


def backward(objective, features, captions, lengths, image_index):
    objective.captioner.zero_grad(set_to_none=True)
    result = objective.loss_on_features(features, captions, lengths, image_index)
    result.loss.backward()
    return result


def test_reinforce_alone_trains_the_attention(tiny_config, word_map):
    """Always a sampled location, no penalty, no entropy: the attention's only gradient is REINFORCE's; without it
    the attention network gets exactly none (a sampled index is not differentiable)."""
    captioner = hard_captioner(tiny_config, word_map)
    data = batch(word_map)
    with_reinforce = HardAttentionLoss(
        captioner,
        cached_features,
        attention_penalty=0.0,
        reinforce_weight=1.0,
        entropy_weight=0.0,
        soft_context_probability=0.0,
    )
    with_reinforce.update_baseline(torch.tensor(-10.0))  # a baseline far below: every advantage is large
    torch.manual_seed(3)
    backward(with_reinforce, *data)
    assert all(g.abs().sum() > 0 for g in attention_grads(captioner).values())

    without = HardAttentionLoss(
        captioner,
        cached_features,
        attention_penalty=0.0,
        reinforce_weight=0.0,
        entropy_weight=0.0,
        soft_context_probability=0.0,
    )
    torch.manual_seed(3)
    backward(without, *data)
    grads = attention_grads(captioner)
    assert set(grads) == {f"{p}.{w}" for p in ATTENTION_PARAMS for w in ("weight", "bias")}
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())
    assert captioner.decoder.fc.weight.grad.abs().sum() > 0  # the words still learn


def test_forced_soft_context_is_plain_teacher_forcing(tiny_config, word_map):
    """With the soft context at every step nothing is sampled, so REINFORCE adds nothing: the loss and every
    gradient equal the soft model's cross-entropy + penalty."""
    data = batch(word_map)
    hard = hard_captioner(tiny_config, word_map, "hard", seed=5)
    soft = hard_captioner(tiny_config, word_map, "soft", seed=5)
    penalty = ATTENTION_PENALTY
    hard_result = backward(
        HardAttentionLoss(
            hard, cached_features, penalty, reinforce_weight=1.0, entropy_weight=0.0, soft_context_probability=1.0
        ),
        *data,
    )
    soft_result = backward(TeacherForcedLoss(soft, cached_features, penalty), *data)
    torch.testing.assert_close(hard_result.loss, soft_result.loss)
    for (name, a), (_, b) in zip(hard.decoder.named_parameters(), soft.decoder.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_baseline_is_a_moving_average_of_the_mean_log_likelihood(tiny_config, word_map):
    captioner = hard_captioner(tiny_config, word_map)
    objective = HardAttentionLoss(captioner, cached_features, 0.0, soft_context_probability=0.0)
    data = batch(word_map)  # equal lengths: the mean of the per-caption mean log p is minus the token cross-entropy
    first = objective.loss_on_features(*data)
    assert bool(objective.baseline_started)
    torch.testing.assert_close(objective.baseline, -first.cross_entropy)  # the first batch starts it
    objective.baseline.fill_(-2.0)
    second = objective.loss_on_features(*data)
    torch.testing.assert_close(objective.baseline, 0.9 * torch.tensor(-2.0) + 0.1 * -second.cross_entropy)
    assert second.log_values()["baseline"][0] == pytest.approx(float(objective.baseline))

    captioner.eval()  # validation / decoding: the argmax location, nothing sampled, the baseline untouched
    with torch.no_grad():
        objective.loss_on_features(*data)
    torch.testing.assert_close(objective.baseline, 0.9 * torch.tensor(-2.0) + 0.1 * -second.cross_entropy)
