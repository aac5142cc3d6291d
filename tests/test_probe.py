"""Probing a typed sentence: teacher-forced scores agree with the search's own scores, maps and gates on the shipped
models; batching changes nothing; bad text gets a clear error or is read with <unk>; ranks match the argmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.model import Captioner
from captioning.probe import image_features, never_emitted, probe, probe_features, ranks_of, tokenize_probe
from captioning.shipped import EXAMPLES_DIR, SHIPPED_MODELS
from captioning.vocab import load_word_map, special_ids


@pytest.fixture(scope="module", params=sorted(SHIPPED_MODELS))
def shipped(request) -> tuple[Captioner, torch.Tensor]:
    """A shipped model (soft, then hard attention) as the app runs it, and dogs.jpg encoded once: (1, 196, C)."""
    captioner = Captioner.load(SHIPPED_MODELS[request.param])
    captioner.use_fastest_encoder()
    return captioner, image_features(captioner, Image.open(EXAMPLES_DIR / "dogs.jpg"))


@pytest.fixture(scope="module")
def shipped_word_map() -> dict[str, int]:
    """The shipped models' vocabulary (both share it), without loading a model."""
    return load_word_map(SHIPPED_MODELS["model"] / "wordmap.json")


def ids_of(captioner: Captioner, words: list[str]) -> list[int]:
    return [captioner.word_map[w] for w in words]


def test_probing_the_beam_caption_gives_back_its_score_maps_and_gates(shipped):
    captioner, features = shipped
    caption = captioner.caption_features(features, beam_size=3)[0]
    assert caption.complete  # the beam's score then counts <end>, as total_log_prob does
    result = probe_features(captioner, features, [ids_of(captioner, caption.words)])[0]
    assert result.words == caption.words and not any(result.unknown)
    assert abs(result.total_log_prob - caption.score) < 1e-3
    assert abs(float(result.log_probs.sum()) + result.end_log_prob - result.total_log_prob) < 1e-4
    assert np.allclose(result.gates, caption.gates, atol=1e-5)
    if captioner.decoder.hard:  # model_hard
        assert np.array_equal(result.alphas, caption.alphas)  # the one-hot cell the decoder read
        assert np.allclose(result.distribution, caption.distribution, atol=1e-5)
        assert set(np.unique(result.alphas)) == {0.0, 1.0}
    else:
        assert result.distribution is None
        assert np.allclose(result.alphas, caption.alphas, atol=1e-5)
    assert result.alphas.shape == (len(caption.words), 14, 14)


def test_the_greedy_caption_is_rank_one_at_every_step(shipped):
    captioner, features = shipped
    caption = captioner.caption_features(features, beam_size=1)[0]
    result = probe_features(captioner, features, [ids_of(captioner, caption.words)])[0]
    assert result.ranks.tolist() == [1] * len(caption.words) and result.end_rank == 1
    assert abs(result.total_log_prob - caption.score) < 1e-3


def test_rank_one_is_the_argmax_of_the_first_step(shipped):
    captioner, features = shipped
    decoder, ids = captioner.decoder, special_ids(captioner.word_map)
    with torch.no_grad():
        logits, _, _ = decoder.step(torch.tensor([ids.start]), decoder.start(features))  # (1, V)
    log_probs = torch.log_softmax(logits.float(), dim=1)[0]  # (V,)
    emittable = log_probs.clone()  # (V,) the first word is never <pad>, <start>, <unk> or <end>
    emittable[[ids.pad, ids.start, ids.unk, ids.end]] = float("-inf")
    best = int(emittable.argmax())
    other = int(emittable.argsort(descending=True)[4])  # the fifth most likely first word
    top, fifth = probe_features(captioner, features, [[best], [other]])
    assert top.ranks.tolist() == [1] and fifth.ranks.tolist() == [5]
    assert abs(float(top.log_probs[0]) - float(log_probs[best])) < 1e-5
    assert np.isclose(top.probs[0], float(log_probs[best].exp()), atol=1e-6)


def test_tokens_the_search_never_emits_do_not_count_in_a_rank(shipped_word_map):
    ids = special_ids(shipped_word_map)
    log_probs = torch.full((1, len(shipped_word_map)), -20.0)  # (1, V)
    log_probs[0, [ids.pad, ids.start, ids.unk, ids.end]] = -0.5  # the specials most likely
    dog, cat = shipped_word_map["dog"], shipped_word_map["cat"]
    log_probs[0, dog], log_probs[0, cat] = -1.0, -2.0
    assert ranks_of(log_probs, torch.tensor([dog]), never_emitted(ids, 0)).tolist() == [1]  # no <end> first
    assert ranks_of(log_probs, torch.tensor([dog]), never_emitted(ids, 1)).tolist() == [2]  # <end> can come next
    assert ranks_of(log_probs, torch.tensor([cat]), never_emitted(ids, 1)).tolist() == [3]
    assert ranks_of(log_probs, torch.tensor([ids.unk]), never_emitted(ids, 1)).tolist() == [1]  # ties rank alike


def test_three_sentences_at_once_equal_each_alone(shipped):
    captioner, features = shipped
    texts = ["a dog runs", "two dogs are playing in the grass with a red ball", "a black zzyzx on snow"]
    together = probe(captioner, features, texts)
    alone = [probe(captioner, features, [text])[0] for text in texts]
    for batched, single in zip(together, alone):
        assert batched.words == single.words and batched.unknown == single.unknown
        assert np.allclose(batched.log_probs, single.log_probs, atol=1e-4)
        assert batched.ranks.tolist() == single.ranks.tolist() and batched.end_rank == single.end_rank
        assert np.allclose(batched.alphas, single.alphas, atol=1e-5)
        assert np.allclose(batched.gates, single.gates, atol=1e-5)
        assert abs(batched.total_log_prob - single.total_log_prob) < 1e-3
    assert together[1].total_log_prob < together[0].total_log_prob  # more words, lower log-probability


def test_probe_runs_in_eval_mode_and_restores_the_mode(shipped):
    captioner, features = shipped
    expected = probe(captioner, features, ["a dog runs through the grass"])[0]
    captioner.train()  # dropout on: a probe must still be deterministic
    try:
        again = probe(captioner, features, ["a dog runs through the grass"])[0]
        assert captioner.training
    finally:
        captioner.eval()
    assert np.allclose(again.log_probs, expected.log_probs, atol=1e-5)


def test_a_photo_file_is_encoded_once_like_its_features(shipped):
    captioner, features = shipped
    texts = ["a dog runs through the snow", "a cat"]
    from_file = probe(captioner, EXAMPLES_DIR / "dogs.jpg", texts)
    for result, expected in zip(from_file, probe(captioner, features, texts)):
        assert np.allclose(result.log_probs, expected.log_probs, atol=1e-4)
        assert abs(result.total_log_prob - expected.total_log_prob) < 1e-3


# Bad input: only the word map is needed.


@pytest.mark.parametrize("text", ["", "   \n\t", None])
def test_empty_text_is_refused(shipped_word_map, text):
    with pytest.raises(ValueError, match="empty"):
        tokenize_probe(text, shipped_word_map, 50)


@pytest.mark.parametrize("text", ["?!...", "-- ' \" ,", "🐶 🐕", "_ _"])
def test_text_without_words_is_refused(shipped_word_map, text):
    with pytest.raises(ValueError, match="no words"):
        tokenize_probe(text, shipped_word_map, 50)


def test_a_long_text_is_cut_to_the_max_caption_length_and_flagged(shipped_word_map):
    tokens = tokenize_probe("a dog runs on the grass " * 84, shipped_word_map, 50)  # 504 words
    assert tokens.truncated and len(tokens.words) == len(tokens.ids) == len(tokens.unknown) == 50
    assert tokens.words[:6] == ["a", "dog", "runs", "on", "the", "grass"]
    exact = tokenize_probe(" ".join(["dog"] * 50), shipped_word_map, 50)
    assert not exact.truncated and len(exact.ids) == 50


def test_unknown_and_non_latin_words_become_unk_and_are_marked(shipped_word_map):
    unk = shipped_word_map["<unk>"]
    tokens = tokenize_probe("A Dog's zzyzx, in snow.", shipped_word_map, 50)
    assert tokens.words == ["a", "dog", "s", "zzyzx", "in", "snow"]  # the training tokenisation
    assert tokens.unknown == [False, False, False, True, False, False] and tokens.ids[3] == unk
    russian = tokenize_probe("собака бежит по траве", shipped_word_map, 50)
    assert russian.words == ["собака", "бежит", "по", "траве"] and all(russian.unknown)
    chinese = tokenize_probe("一只狗在草地上跑。", shipped_word_map, 50)  # no spaces: one word
    assert chinese.ids == [unk] and chinese.unknown == [True]
    mixed = tokenize_probe("a dog 🐶 café", shipped_word_map, 50)
    assert mixed.words == ["a", "dog", "café"] and mixed.unknown == [False, False, True]


def test_long_and_non_latin_sentences_probe_without_error(shipped):
    captioner, features = shipped
    long, foreign = probe(captioner, features, ["a dog runs on the grass " * 84, "собака бежит по траве"])
    assert long.truncated and len(long.words) == captioner.config.max_caption_len == len(long.log_probs)
    assert not foreign.truncated and all(foreign.unknown) and np.isfinite(foreign.log_probs).all()
    assert np.isfinite(long.total_log_prob) and long.total_log_prob < foreign.total_log_prob
    with pytest.raises(ValueError, match="no words"):
        probe(captioner, features, ["a dog", "?!"])


def test_probe_features_checks_its_inputs(shipped):
    captioner, features = shipped
    assert probe_features(captioner, features, []) == []
    with pytest.raises(ValueError, match="at least one word"):
        probe_features(captioner, features, [[]])
    with pytest.raises(ValueError, match="features"):
        probe_features(captioner, features.expand(2, -1, -1), [[5], [6], [7]])
    expanded = probe_features(captioner, features.expand(2, -1, -1), [[5, 6], [7]])  # one feature row per sentence
    shared = probe_features(captioner, features, [[5, 6], [7]])
    assert np.allclose(expanded[0].log_probs, shared[0].log_probs, atol=1e-5)
