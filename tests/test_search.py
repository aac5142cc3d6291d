"""Greedy and beam search: beam 1 == greedy, batched == one image at a time, scores are real log-probabilities,
per-word attention, no <end> within max_len, length normalisation, never <pad>/<start>, each image's pool of finished
captions best first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import END, START, C, V

from captioning.config import DecoderConfig
from captioning.decoder import Decoder
from captioning.search import Hypothesis, beam_search, decode, greedy_search

SEEDS = range(6)
WORD_MAP = {"<start>": START, "<end>": END}  # what decode reads from a word map (no <unk>: nothing banned)


def make_decoder(seed: int, end_bias: float = 0.5) -> Decoder:
    """A random decoder with peaked word distributions, so captions of varied lengths end by themselves."""
    torch.manual_seed(seed)
    decoder = Decoder(V, C, DecoderConfig(embed_dim=12, attention_dim=10, decoder_dim=14)).eval()
    torch.nn.init.normal_(decoder.fc.weight, std=8.0)
    torch.nn.init.normal_(decoder.lstm.weight_hh, std=0.5)
    torch.nn.init.normal_(decoder.embedding.weight, std=1.0)
    decoder.fc.bias.data[END] = end_bias
    return decoder


def best(pools: list[list[Hypothesis]]) -> list[Hypothesis]:
    """The first (best) hypothesis of each image's pool."""
    return [pool[0] for pool in pools]


def features(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 196, C, generator=torch.Generator().manual_seed(100 + seed))


def log_probability(decoder: Decoder, feats: torch.Tensor, tokens: list[int], ended: bool) -> float:
    """Sum of log p(word) along <start> tokens (<end>), by stepping the decoder."""
    words = [START, *tokens]
    targets = [*tokens, END] if ended else tokens
    state, total = decoder.start(feats[None]), 0.0
    with torch.no_grad():
        for word, target in zip(words, targets):
            logits, _, state = decoder.step(torch.tensor([word]), state)
            total += float(torch.log_softmax(logits, dim=1)[0, target])
    return total


@pytest.mark.parametrize("seed", SEEDS)
def test_beam_size_one_equals_greedy(seed):
    decoder, feats = make_decoder(seed), features(4, seed)
    greedy = greedy_search(decoder, feats, START, END, max_len=20)
    beam = beam_search(decoder, feats, START, END, beam_size=1, max_len=20)
    assert [len(pool) for pool in greedy] == [len(pool) for pool in beam] == [1] * 4
    for g, b in zip(best(greedy), best(beam), strict=True):
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-5)
        assert torch.allclose(g.alphas, b.alphas, atol=1e-6)


def test_greedy_picks_the_most_likely_word_and_scores_it():
    decoder, feats = make_decoder(1), features(1, 1)
    hyp = greedy_search(decoder, feats, START, END, max_len=20)[0][0]
    state, word = decoder.start(feats), torch.tensor([START])
    with torch.no_grad():
        for expected in [*hyp.tokens, END][:20]:
            logits, _, state = decoder.step(word, state)
            logits[0, [0, START]] = float("-inf")
            assert int(logits.argmax()) == expected
            word = torch.tensor([expected])
    ended = len(hyp.tokens) < 20
    assert hyp.score == pytest.approx(log_probability(decoder, feats[0], hyp.tokens, ended), abs=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_batched_beam_equals_one_image_at_a_time(seed):
    decoder, feats = make_decoder(seed), features(4, seed)
    batched = best(beam_search(decoder, feats, START, END, beam_size=3, max_len=20))
    assert len(batched) == 4
    for i, hyp in enumerate(batched):
        single = beam_search(decoder, feats[i : i + 1], START, END, beam_size=3, max_len=20)[0][0]
        assert hyp.tokens == single.tokens
        assert hyp.score == pytest.approx(single.score, abs=1e-4)
        ended = len(hyp.tokens) < 20
        assert hyp.score == pytest.approx(log_probability(decoder, feats[i], hyp.tokens, ended), abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_per_word_alphas_are_distributions(beam_size):
    decoder, feats = make_decoder(2), features(4, 2)
    pools = beam_search(decoder, feats, START, END, beam_size=beam_size, max_len=20)
    for hyp in (hyp for pool in pools for hyp in pool):
        assert hyp.alphas.shape == (len(hyp.tokens), 196)
        assert torch.allclose(hyp.alphas.sum(dim=1), torch.ones(len(hyp.tokens)), atol=1e-5)
    assert any(len(h.tokens) > 0 for h in best(pools))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_end_within_max_len_returns_max_len_words(beam_size):
    decoder, feats = make_decoder(0), features(2, 0)
    decoder.fc.bias.data[END] = -1e9  # <end> is impossible
    pools = decode(decoder, feats, {"<start>": START, "<end>": END}, beam_size=beam_size, max_len=7)
    assert [len(pool) for pool in pools] == [1, 1]  # the best live beam alone
    for i, hyp in enumerate(best(pools)):
        assert not hyp.complete
        assert len(hyp.tokens) == 7
        assert END not in hyp.tokens
        assert hyp.alphas.shape == (7, 196)
        assert hyp.score == pytest.approx(log_probability(decoder, feats[i], hyp.tokens, ended=False), abs=1e-4)


def test_length_penalty_prefers_longer_captions():
    longer = 0
    for seed in SEEDS:
        decoder, feats = make_decoder(seed), features(4, seed)
        plain = best(beam_search(decoder, feats, START, END, beam_size=3, max_len=20, length_penalty=0.0))
        normalised = best(beam_search(decoder, feats, START, END, beam_size=3, max_len=20, length_penalty=2.0))
        for p, n in zip(plain, normalised):
            assert all(0 < t < V and t not in (START, END) for t in n.tokens)
            assert n.alphas.shape == (len(n.tokens), 196)
            assert len(n.tokens) >= len(p.tokens)
            assert n.score <= p.score + 1e-5  # the raw log-probability of the plain winner is the best
            longer += len(n.tokens) > len(p.tokens)
    assert longer > 0


@pytest.mark.parametrize("beam_size", [1, 3])
def test_pad_and_start_are_never_emitted(beam_size):
    decoder, feats = make_decoder(3), features(3, 3)
    decoder.fc.bias.data[0] = 50.0  # the model would love to say <pad> and <start>
    decoder.fc.bias.data[START] = 50.0
    pools = decode(decoder, feats, {"<start>": START, "<end>": END}, beam_size=beam_size, max_len=10)
    assert len(pools) == 3
    for hyp in (hyp for pool in pools for hyp in pool):
        assert 0 not in hyp.tokens and START not in hyp.tokens


@pytest.mark.parametrize("beam_size", [1, 3])
def test_unk_is_never_emitted_unless_allowed(beam_size):
    decoder, feats = make_decoder(4), features(3, 4)
    decoder.fc.bias.data[19] = 50.0  # the model would love to say <unk>
    word_map = {"<start>": START, "<end>": END, "<unk>": 19}
    for pool in decode(decoder, feats, word_map, beam_size=beam_size, max_len=10):
        assert all(19 not in hyp.tokens and len(hyp.tokens) > 0 for hyp in pool)
    allowed = best(decode(decoder, feats, word_map, beam_size=beam_size, max_len=10, allow_unk=True))
    assert all(19 in hyp.tokens for hyp in allowed)


def gate_of_each_word(decoder: Decoder, feats: torch.Tensor, tokens: list[int]) -> list[float]:
    """The mean context gate beta the decoder used for each word of `tokens`, by stepping it."""
    state, gates = decoder.start(feats[None]), []
    with torch.no_grad():
        for word in [START, *tokens[:-1]]:
            _, _, state = decoder.step(torch.tensor([word]), state)
            gates.append(float(state.gate[0]))
    return gates


@pytest.mark.parametrize("beam_size", [1, 3])
def test_each_word_carries_the_gate_its_step_used(beam_size):
    decoder, feats = make_decoder(2), features(3, 2)
    for b, hyp in enumerate(best(decode(decoder, feats, WORD_MAP, beam_size=beam_size, max_len=12))):
        assert hyp.gates.shape == (len(hyp.tokens),)
        assert ((hyp.gates > 0) & (hyp.gates < 1)).all()  # a mean of sigmoids
        np.testing.assert_allclose(hyp.gates.numpy(), gate_of_each_word(decoder, feats[b], hyp.tokens), atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_each_pool_holds_the_beams_finished_captions_best_first(seed):
    decoder, feats = make_decoder(seed), features(3, seed)
    pools = decode(decoder, feats, WORD_MAP, beam_size=4, max_len=20)
    assert len(pools) == 3
    for b, pool in enumerate(pools):
        assert 1 <= len(pool) <= 4
        assert [h.score for h in pool] == sorted((h.score for h in pool), reverse=True)
        assert len({tuple(h.tokens) for h in pool}) == len(pool)  # different captions
        for hyp in pool:  # each one's score is its real log-probability, its alphas and gates its own
            assert hyp.score == pytest.approx(log_probability(decoder, feats[b], hyp.tokens, hyp.complete), abs=1e-4)
            assert hyp.alphas.shape == (len(hyp.tokens), 196) and hyp.gates.shape == (len(hyp.tokens),)
        single = decode(decoder, feats[b : b + 1], WORD_MAP, beam_size=4, max_len=20)[0]
        assert [h.tokens for h in single] == [h.tokens for h in pool]  # the pool does not depend on the batch
