"""/check, the attention check of a caption, as API clients and the page get it: the same before-probabilities as
/probe, the model's own caption for an empty text, each caption checked once (the result is kept), one-line
messages for bad input."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

from captioning import handlers
from captioning.attention_check import MAX_CHECK_WORDS
from captioning.model import Captioner
from captioning.shipped import EXAMPLES_DIR

DOGS = EXAMPLES_DIR / "dogs.jpg"


@pytest.fixture(scope="module")
def captioner(tiny_model_dir):
    return Captioner.load(tiny_model_dir)


def test_check_gives_probes_probabilities_and_word_aligned_lists(captioner):
    cache, checks = handlers.FeatureCache(), handlers.FeatureCache()
    checked = handlers.check_words(captioner, str(DOGS), "A dog sits on the mat.", cache=cache, checks=checks)
    probed = handlers.probe_models(captioner, ["model"], str(DOGS), "a dog sits on the mat", cache)[0][0][0]
    assert checked["words"] == probed["words"] == ["a", "dog", "sits", "on", "the", "mat"]
    assert checked["probs"] == probed["probs"]
    n = len(checked["words"])
    for field in ("probs_hidden_here", "probs_hidden_elsewhere", "hidden_cells", "gradient", "gradient_share"):
        assert len(checked[field]) == n, field
    assert np.asarray(checked["gradient"]).shape == (n, 14, 14)
    assert checked["model"] == "model" and checked["attention"] == "soft"
    assert checked["hide"] == {"mean": list(captioner.config.preprocessing.mean), "feather": 0.25}
    json.dumps(checked)  # JSON-safe
    with mock.patch.object(handlers, "check_attention") as check:  # the same caption again: kept, not recomputed
        again = handlers.check_words(captioner, str(DOGS), "a dog sits on the mat", cache=cache, checks=checks)
    check.assert_not_called()
    assert again == checked


def test_an_empty_text_checks_the_models_own_caption(captioner):
    checked = handlers.check_words(captioner, str(DOGS), "")
    assert checked["words"] == captioner.caption(DOGS)[0].words[:MAX_CHECK_WORDS]


@pytest.mark.parametrize(
    "path, text, message",
    [
        (None, "a dog", "Please upload a photo first"),
        (str(DOGS), "?!", "no words to score"),
        (str(DOGS), "dog " * 500, f"at most {MAX_CHECK_WORDS} words; this text has 500"),
    ],
    ids=["no photo", "no word", "500 words"],
)
def test_bad_input_gets_one_line(captioner, path, text, message):
    with pytest.raises(handlers.RequestError, match=message) as error:
        handlers.check_words(captioner, path, text)
    assert "\n" not in str(error.value)
