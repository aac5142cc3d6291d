"""Hard (stochastic) attention, Xu et al. 2015 section 4.1: sampled locations in training, the REINFORCE gradient
with its moving-average baseline, the most likely location when decoding, resume, and old model directories."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from captioning.attention import hard_context
from captioning.checkpoint import CheckpointError
from captioning.loss import ATTENTION_PENALTY, HardAttentionLoss, TeacherForcedLoss
from captioning.model import Captioner, cached_features

ATTENTION_PARAMS = ("attention.encoder_att", "attention.decoder_att", "attention.full_att")


def hard_captioner(config, word_map, attention="hard", seed=0) -> Captioner:
    """A tiny captioner (random lite0 encoder, 16-d decoder) without dropout, so that only sampling is random."""
    torch.manual_seed(seed)
    decoder = dataclasses.replace(config.decoder, attention=attention, dropout=0.0)
    return Captioner(dataclasses.replace(config, decoder=decoder), word_map).train()


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


def test_beam_search_on_a_hard_model_gives_one_hot_maps_at_the_location_used(tiny_config, word_map):
    captioner = hard_captioner(tiny_config, word_map).eval()
    with torch.no_grad():
        captioner.decoder.attention.full_att.weight.mul_(30.0)  # peaked attention: distinct locations per word
    features = torch.randn(2, 196, 1280)  # (N, 196, C)
    for beam in (1, 3):
        for caption in captioner.caption_features(features, beam_size=beam):
            assert caption.alphas.shape == caption.distribution.shape == (len(caption.words), 14, 14)
            assert np.all(caption.alphas.reshape(len(caption.words), -1).sum(axis=1) == 1.0)
            assert set(np.unique(caption.alphas)) <= {0.0, 1.0}
            flat = caption.distribution.reshape(len(caption.words), -1)  # (n, 196) the full alpha
            np.testing.assert_allclose(flat.sum(axis=1), 1.0, rtol=1e-4)
            assert np.array_equal(caption.alphas.reshape(len(caption.words), -1).argmax(axis=1), flat.argmax(axis=1))


def test_expected_context_decodes_a_hard_model_as_the_soft_model_of_its_weights(tiny_config, word_map):
    """use_expected_context (evaluate --expected-context): the same captions, scores and maps as a soft-attention
    model holding the same weights; the maps are then the full alpha, not one-hot cells."""
    hard = hard_captioner(tiny_config, word_map).eval()
    soft = hard_captioner(tiny_config, word_map, attention="soft").eval()
    soft.load_state_dict(hard.state_dict())
    with torch.no_grad():
        hard.decoder.attention.full_att.weight.mul_(30.0)  # peaked attention: argmax and expectation differ
        soft.decoder.attention.full_att.weight.mul_(30.0)
        hard.decoder.fc.weight.mul_(20.0)  # peaked words: the context changes them
        soft.decoder.fc.weight.mul_(20.0)
    features = torch.randn(3, 196, 1280)  # (N, 196, C)
    argmax_captions = hard.caption_features(features, beam_size=3)
    hard.use_expected_context()
    assert hard.config.decoder.attention == "soft" and not hard.decoder.hard
    expected = hard.caption_features(features, beam_size=3)
    reference = soft.caption_features(features, beam_size=3)
    assert [c.words for c in expected] == [c.words for c in reference]
    assert [c.score for c in expected] == pytest.approx([c.score for c in reference], abs=1e-5)
    assert all(c.distribution is None and not set(np.unique(c.alphas)) <= {0.0, 1.0} for c in expected)
    assert [c.score for c in argmax_captions] != pytest.approx([c.score for c in expected], abs=1e-3)


def test_decoding_uses_the_annotation_vector_at_the_argmax(tiny_config, word_map):
    """Greedy decoding of the hard model equals a soft model whose context is replaced by the argmax vector."""
    captioner = hard_captioner(tiny_config, word_map).eval()
    features = torch.randn(2, 196, 1280)  # (N, 196, C)
    decoder = captioner.decoder
    with torch.no_grad():
        state = decoder.start(features)
        words = torch.full((2,), word_map["<start>"])  # (N,)
        logits, alpha, _ = decoder.step(words, state)  # (N, V), (N, 196)
        att2, gate = state.weights.project_hidden(state.hidden)  # (N, A), (N, C)
        context = features[torch.arange(2), alpha.argmax(dim=1)]  # (N, C)
        from captioning.decoder import lstm_cell

        word_gates = state.weights.word_gates(decoder.embedding(words))  # (N, 4D)
        hidden, _ = lstm_cell(word_gates, torch.sigmoid(gate) * context, state.hidden, state.cell, state.weights)
        torch.testing.assert_close(logits, decoder.fc(hidden))


@pytest.mark.slow
def test_hard_training_resumes_exactly_with_its_baseline(tiny_train_config, tmp_path):
    from captioning.training import train

    def config(out, epochs=2):
        return tiny_train_config(out, attention="hard", epochs=epochs, dropout=0.0)

    whole = train(config(tmp_path / "whole"))
    train(config(tmp_path / "split", epochs=1))
    resumed = train(config(tmp_path / "split"), resume=tmp_path / "split")
    timing = {"batch_time", "data_time", "epoch_time", "captions_per_s"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in resumed["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in whole["history"]]
    assert "train_baseline" in whole["history"][0] and "train_entropy" in whole["history"][0]
    a = torch.load(tmp_path / "whole" / "last" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last" / "train_state.pt", weights_only=True)
    assert set(a["objective"]) == {"baseline", "baseline_started"} and bool(a["objective"]["baseline_started"])
    assert torch.equal(a["objective"]["baseline"], b["objective"]["baseline"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    saved = json.loads((tmp_path / "whole" / "best" / "config.json").read_text())
    assert saved["decoder"]["attention"] == "hard" and Captioner.load(tmp_path / "whole" / "best").decoder.hard


def test_a_model_directory_without_the_attention_key_loads_as_soft(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "unstated"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["decoder"].pop("attention") == "soft"
    (copy / "config.json").write_text(json.dumps(config))
    model = Captioner.load(copy)
    assert model.config.decoder.attention == "soft" and not model.decoder.hard
    config["decoder"]["attention"] = "sharp"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="attention must be one of"):
        Captioner.load(copy)
