"""Self-critical pieces: the sampler (banned tokens, log-probs == teacher forcing), rewards and baselines."""

from __future__ import annotations

import pytest
import torch
from conftest import make_train_config

from captioning.cider import CiderD
from captioning.config import DecoderConfig
from captioning.decoder import Decoder
from captioning.scst import (
    Samples,
    caption_texts,
    cider_rewards,
    greedy_advantage,
    leave_one_out_advantage,
    policy_gradient_loss,
    sample_captions,
)

V, C, PAD, START, END, UNK = 12, 16, 0, 9, 10, 11  # ids 1..8 are words


def make_decoder(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(V, C, DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=10, dropout=0.0))


def features(n: int) -> torch.Tensor:
    return torch.randn(n, 196, C, generator=torch.Generator().manual_seed(1))  # (n, 196, C)


def sampler_log_probs(logits: torch.Tensor, samples: Samples) -> torch.Tensor:
    """Teacher-forced logits (B, T, V) of the sampled words -> log p of each sampled word (n_words,) under the
    sampler's policy: the softmax renormalised without the banned words, and without <end> first."""
    allowed = logits.index_fill(2, torch.tensor([PAD, START, UNK]), float("-inf"))  # (B, T, V)
    allowed[:, 0, END] = float("-inf")  # no empty caption
    scores = torch.log_softmax(allowed, dim=2)  # (B, T, V) log p(w_t | w_<t, image) renormalised without banned
    return scores.gather(2, samples.tokens[:, :, None]).squeeze(2)[samples.mask]  # (n_words,)


def test_sampler_never_draws_banned_tokens_and_ends_every_caption():
    decoder = make_decoder()
    torch.manual_seed(3)
    samples = sample_captions(
        decoder, features(4), k=5, start_id=START, end_id=END, banned=(PAD, START, UNK), max_len=12
    )
    real = samples.tokens[samples.mask]  # (n_words,)
    assert samples.tokens.shape[0] == 20
    assert not torch.isin(real, torch.tensor([PAD, START, UNK])).any()
    assert (samples.tokens[:, 0] != END).all()  # no empty caption
    ends = (samples.tokens == END).sum(dim=1)  # (20,)
    assert (ends == 1).all()  # each caption ends exactly once, then only padding
    lengths = samples.mask.sum(dim=1)  # (20,)
    assert (samples.tokens[torch.arange(20), lengths - 1] == END).all()
    assert len(set(map(tuple, samples.tokens.tolist()))) > 1  # samples differ


def test_sampled_log_probs_match_teacher_forcing_of_the_same_words():
    decoder = make_decoder().eval()
    torch.manual_seed(5)
    feats = features(3)
    samples = sample_captions(decoder, feats, k=2, start_id=START, end_id=END, banned=(PAD, START, UNK))
    lengths = samples.mask.sum(dim=1)  # (6,) words incl. <end>
    captions = torch.cat([torch.full((6, 1), START), samples.tokens], dim=1)  # (6, T+1)
    output = decoder(feats, captions, lengths + 1, image_index=torch.arange(3).repeat_interleave(2))
    expected = sampler_log_probs(output.logits, samples)  # (n_words,)
    torch.testing.assert_close(samples.log_probs[samples.mask], expected, atol=1e-5, rtol=1e-5)


def test_leave_one_out_baseline_on_a_hand_made_example():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    # image 0: baselines (2+3)/2, (1+3)/2, (1+2)/2; image 1: 1.5, 1.5, 0
    expected = torch.tensor([[1.0 - 2.5, 2.0 - 2.0, 3.0 - 1.5], [-1.5, -1.5, 3.0]])
    torch.testing.assert_close(leave_one_out_advantage(rewards), expected)
    torch.testing.assert_close(
        greedy_advantage(rewards, torch.tensor([2.0, 1.0])), torch.tensor([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]])
    )


def test_policy_gradient_loss_weights_each_sampled_word_by_its_advantage():
    log_probs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    samples = Samples(torch.ones(2, 3, dtype=torch.long), log_probs, mask)
    loss = policy_gradient_loss(samples, torch.tensor([[2.0, -1.0]]))
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -1.0 * -1.5) / 5)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.4, -0.4, 0.0], [0.2, 0.2, 0.2]]))


def test_rewards_follow_image_major_order():
    refs = [["a dog runs on grass", "a dog in a field"], ["a man rides a bike", "a cyclist on a road"]]
    scorer = CiderD(refs)
    texts = ["a dog runs on grass", "a man rides a bike", "a man rides a bike", "a dog runs on grass"]
    rewards = cider_rewards(scorer, texts, refs, keys=[0, 1])  # (2, 2)
    assert rewards[0, 0] > rewards[0, 1] and rewards[1, 0] > rewards[1, 1]
    id_to_word = {1: "a", 2: "dog", END: "<end>"}
    assert caption_texts(torch.tensor([[1, 2, END, 0], [2, END, 0, 0]]), id_to_word, END) == ["a dog", "dog"]


def test_a_hard_decoder_samples_words_while_reading_its_most_likely_cell():
    """In training mode a hard decoder would sample cells; the sampler must read the argmax cell (what decoding
    reads), so its log-probs are those of eval-mode (argmax) teacher forcing of the same words."""
    torch.manual_seed(0)
    decoder = Decoder(V, C, DecoderConfig(embed_dim=8, attention_dim=8, decoder_dim=10, dropout=0.0, attention="hard"))
    feats = features(3)
    torch.manual_seed(5)
    samples = sample_captions(decoder.train(), feats, k=2, start_id=START, end_id=END, banned=(PAD, START, UNK))
    lengths = samples.mask.sum(dim=1)  # (6,) words incl. <end>
    captions = torch.cat([torch.full((6, 1), START), samples.tokens], dim=1)  # (6, T+1)
    image_index = torch.arange(3).repeat_interleave(2)  # (6,)
    with torch.no_grad():
        argmax = sampler_log_probs(decoder.eval()(feats, captions, lengths + 1, image_index).logits, samples)
        sampled = sampler_log_probs(decoder.train()(feats, captions, lengths + 1, image_index, 0.0).logits, samples)
    torch.testing.assert_close(samples.log_probs[samples.mask].detach(), argmax, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sampled, argmax, atol=1e-3)  # sampled cells would have given other log-probs


# --- the self-critical stage through the training loop --------------------------------------------------------


def scst_config(tiny_train_config, output_dir, start_dir, **overrides):
    values = dict(
        scst=True, init_from=str(start_dir), epochs=2, decoder_lr=1e-3, select_on="cider", dropout=0.0, scst_max_len=8
    )
    values.update(overrides)
    return tiny_train_config(output_dir, **values)


def train_start_model(shapes_data, root, attention: str = "soft"):
    """A tiny model trained for one short epoch on the shapes data -> its last/ directory, for runs to start from."""
    from captioning.training import train

    train(make_train_config(shapes_data, root, dropout=0.0, attention=attention))
    return root / "last"


@pytest.fixture(scope="module")
def cross_entropy_start(shapes_data, tmp_path_factory):
    """A cross-entropy model (one short epoch) that the self-critical runs start from."""
    return train_start_model(shapes_data, tmp_path_factory.mktemp("ce_start"))


@pytest.mark.slow
def test_scst_run_starts_from_the_model_and_logs_reward_and_cider(tiny_train_config, cross_entropy_start, tmp_path):
    from captioning.model import Captioner
    from captioning.training import train

    start = Captioner.load(cross_entropy_start)
    state = train(
        scst_config(tiny_train_config, tmp_path / "scst", cross_entropy_start, epochs=1, max_steps_per_epoch=0)
    )
    row = state["history"][0]
    assert row["train_reward"] > 0 and "train_loss" not in row  # the reward is what this stage logs
    assert {"val_bleu4", "val_cider", "val_loss"} <= set(row)
    assert state["best_score"] == row["val_cider"]  # selected on CIDEr as asked
    trained = Captioner.load(tmp_path / "scst" / "last")
    moved = [
        name
        for name, value in trained.decoder.state_dict().items()
        if not torch.equal(value, start.decoder.state_dict()[name])
    ]
    assert moved  # it trained ...
    random_start = Captioner.load(tmp_path / "scst" / "last")
    random_start.decoder.init_weights()  # what a run that ignored init_from would have started from
    distance = lambda a, b: float((a.decoder.fc.weight - b.decoder.fc.weight).detach().abs().mean())  # noqa: E731
    assert distance(trained, start) < 0.1 * distance(trained, random_start)  # ... from the start model's weights
    assert (tmp_path / "scst" / "training_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_scst_refuses_a_start_model_of_another_shape(tiny_train_config, cross_entropy_start, tmp_path):
    from captioning.checkpoint import CheckpointError
    from captioning.training import train

    with pytest.raises(CheckpointError):
        train(scst_config(tiny_train_config, tmp_path / "bad", cross_entropy_start, decoder_dim=24))


@pytest.fixture(scope="module")
def hard_start(shapes_data, tmp_path_factory):
    """A tiny hard-attention model (one short epoch) that the runs below start from."""
    return train_start_model(shapes_data, tmp_path_factory.mktemp("hard_start"), attention="hard")


@pytest.mark.slow
def test_scst_on_a_hard_model_trains_the_words_and_leaves_the_attention_as_it_was(
    tiny_train_config, hard_start, tmp_path
):
    """Self-critical fine-tuning of a hard-attention model: rollouts read the argmax cell, as decoding does, so the
    attention (which an argmax gets no gradient through) keeps its weights while the rest of the decoder trains."""
    from captioning.model import Captioner
    from captioning.training import train

    start = Captioner.load(hard_start)
    state = train(scst_config(tiny_train_config, tmp_path / "scst", hard_start, attention="hard", epochs=1))
    assert state["history"][0]["train_reward"] > 0
    trained = Captioner.load(tmp_path / "scst" / "last")
    assert trained.config.decoder.attention == "hard"
    before, after = start.decoder.state_dict(), trained.decoder.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert {"fc.weight", "lstm.weight_hh", "f_beta.weight"} <= moved
    assert not {name for name in moved if name.startswith("attention.")}


@pytest.mark.slow
def test_a_start_model_of_the_other_attention_mode_is_named(tiny_train_config, hard_start, tmp_path, capsys):
    """--init-from a hard model into a soft run (the tensors match) trains it as soft: the run says so."""
    from captioning.training import train

    capsys.readouterr()
    train(tiny_train_config(tmp_path / "soft", init_from=str(hard_start), max_steps_per_epoch=1))
    assert "was trained with hard attention; this run trains it as soft (--attention soft)" in capsys.readouterr().out
