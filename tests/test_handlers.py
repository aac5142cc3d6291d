"""The demo's endpoints as library functions (captioning.handlers), without Gradio: what /caption computes for API
clients and for the page, the visitor's errors, the feature cache, and /compare's rows."""

from __future__ import annotations

from unittest import mock

import pytest

from captioning import handlers
from captioning.model import Captioner
from captioning.shipped import EXAMPLES_DIR

DOGS, CAT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"


@pytest.fixture(scope="module")
def captioner(tiny_model_dir):
    return Captioner.load(tiny_model_dir)


def test_the_api_gets_the_full_data_and_the_page_a_lean_copy_with_a_nonce(captioner):
    text, full = handlers.caption_upload(captioner, str(DOGS), 2)
    expected = captioner.caption(DOGS, beam_size=2)[0]
    assert text == expected.text and full["words"] == expected.words and full["beam"] == 2
    assert len(full["alphas"]) == len(full["words"]) and "nonce" not in full
    _, page = handlers.caption_upload(captioner, str(DOGS), 2, for_page=True)
    _, again = handlers.caption_upload(captioner, str(DOGS), 2, for_page=True)
    assert "alphas" not in page and page["grids"] == full["grids"] and page["id"] == full["id"]
    assert page["nonce"] != again["nonce"]  # the same caption again is still a change for the page


def test_requests_that_cannot_be_served_say_why(captioner, tmp_path):
    with pytest.raises(handlers.RequestError, match="Please upload an image first"):
        handlers.caption_upload(captioner, None)
    with pytest.raises(handlers.RequestError, match="Unknown model 'other': this demo serves model"):
        handlers.caption_upload(captioner, str(DOGS), model="other")
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not a photo")
    with pytest.raises(handlers.RequestError, match="(?i)image"):
        handlers.caption_upload(captioner, str(text_file))


def test_a_photo_captioned_again_skips_the_encoder(captioner):
    cache = handlers.FeatureCache()
    first = handlers.caption_upload(captioner, str(CAT), cache=cache)
    with mock.patch.object(handlers, "image_features", side_effect=AssertionError("encoded again")):
        assert handlers.caption_upload(captioner, str(CAT), cache=cache) == first
        photo = handlers.encoded_photo(captioner, "model", str(CAT), cache)
    assert photo.shown == first[1]["image"] and len(cache.entries) == 1


def test_compare_has_one_row_per_model(captioner):
    data = handlers.compare_captions({"a": captioner, "b": captioner}, str(DOGS), 3)
    assert [row["model"] for row in data["rows"]] == ["a", "b"] and data["beam"] == 3
    assert data["rows"][0]["words"] == captioner.caption(DOGS, beam_size=3)[0].words
