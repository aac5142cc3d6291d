"""Captioner: caption and caption_alternatives on PIL images and photo files, alone or in lists, and decoding a
hard-attention model (one-hot maps at the location used, or the expected context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hard_captioner
from PIL import Image

from captioning.model import Caption, Captioner


def test_captioner_caption_returns_words_and_14x14_maps(tiny_config, word_map):
    torch.manual_seed(0)
    model = Captioner(tiny_config, word_map).eval()
    torch.nn.init.normal_(model.decoder.fc.weight, std=8.0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(2)]
    captions = model.caption(images[0], beam_size=3)
    assert len(captions) == 1
    caption = captions[0]
    assert isinstance(caption, Caption)
    n = len(caption.words)
    assert 0 < n <= tiny_config.max_caption_len
    assert set(caption.words) <= set(word_map) - {"<pad>", "<start>", "<end>"}
    assert caption.text == " ".join(caption.words)
    assert caption.alphas.shape == (n, 14, 14)
    assert np.allclose(caption.alphas.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.isfinite(caption.score) and caption.score <= 0

    both = model.caption(images, beam_size=3)  # a list of images is captioned as one batch
    assert [c.words for c in both] == [caption.words, model.caption(images[1], beam_size=3)[0].words]
    greedy = model.caption(images[0], beam_size=1)[0]
    assert greedy.alphas.shape == (len(greedy.words), 14, 14)


def test_captioner_takes_photo_files_and_images_alone_or_in_lists(tiny_config, word_map, tmp_path):
    torch.manual_seed(0)
    model = Captioner(tiny_config, word_map).eval()
    torch.nn.init.normal_(model.decoder.fc.weight, std=8.0)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(2)]
    paths = [tmp_path / "first.png", tmp_path / "second.png"]
    for image, path in zip(images, paths):
        image.save(path)
    expected = [c.text for c in model.caption(images, beam_size=3)]
    assert [c.text for c in model.caption([str(paths[0]), images[1]], beam_size=3)] == expected
    assert [model.caption(paths[0], beam_size=3)[0].text, model.caption(str(paths[1]))[0].text] == expected
    pools = model.caption_alternatives(paths, beam_size=3)
    assert [pool[0].text for pool in pools] == expected and all(1 <= len(pool) <= 3 for pool in pools)
    for pool in pools:
        assert all(isinstance(c, Caption) and c.gates.shape == (len(c.words),) for c in pool)
        assert [c.score for c in pool] == sorted((c.score for c in pool), reverse=True)


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
