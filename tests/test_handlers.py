"""The demo's endpoints as library functions (captioning.handlers), without Gradio: what /caption computes for API
clients and for the page, /compare's rows, /probe and the page's probe with their notes, /check, /live's frames,
/step's heatmap and chips, the visitor's errors and the feature cache."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import make_hard_model
from PIL import Image

from captioning import handlers, payload
from captioning.attention_check import MAX_CHECK_WORDS
from captioning.model import Caption, Captioner
from captioning.preprocess import load_image
from captioning.shipped import EXAMPLES_DIR

DOGS, CAT = EXAMPLES_DIR / "dogs.jpg", EXAMPLES_DIR / "cat.jpg"
SENTENCE = "a dog sits on the mat"


@pytest.fixture(scope="module")
def captioner(tiny_model_dir):
    return Captioner.load(tiny_model_dir)


@pytest.fixture(scope="module")
def two_models(captioner, tiny_model_dir, tmp_path_factory) -> dict[str, Captioner]:
    """The tiny soft model and a hard-attention variant of it, by page name."""
    hard = make_hard_model(tiny_model_dir, tmp_path_factory.mktemp("hard") / "tiny_hard")
    return {"tiny": captioner, "tiny_hard": Captioner.load(hard)}


def frame_of(path, side: int = 448) -> str:
    """A photo as the page sends a camera frame: scaled to `side` px at most, as a JPEG data URL."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((side, side))
    return payload.encode_image(image, quality=85)


# --- /caption -------------------------------------------------------------------------------------------------------


def test_the_api_gets_the_full_data_and_the_page_a_lean_copy_with_a_nonce(captioner):
    text, full = handlers.caption(captioner, str(DOGS), 2)
    expected = captioner.caption(DOGS, beam_size=2)[0]
    assert text == expected.text and full["words"] == expected.words and full["beam"] == 2
    assert len(full["alphas"]) == len(full["words"]) and "nonce" not in full
    _, page = handlers.caption(captioner, str(DOGS), 2, for_page=True)
    _, again = handlers.caption(captioner, str(DOGS), 2, for_page=True)
    assert "alphas" not in page and page["grids"] == full["grids"] and page["id"] == full["id"]
    assert page["nonce"] != again["nonce"]  # the same caption again is still a change for the page


def test_a_request_without_a_beam_gets_the_default():
    beams = []

    class FakeCaptioner:  # records the beam size; a fixed 2-word caption
        config, training = SimpleNamespace(decoder=SimpleNamespace(attention="soft")), False

        def train(self, mode: bool = True):  # the encoder runs in eval mode (probe.evaluating)
            return self

        eval = train

        def image_batch(self, image):
            return torch.zeros(1, 3, 8, 8)  # (1, 3, I, I)

        def encode(self, images):
            return torch.zeros(len(images), 196, 4)  # (B, 196, C)

        def caption_pools(self, features, beam_size):
            beams.append(beam_size)
            return [[Caption(words=["a", "cat"], alphas=np.full((2, 14, 14), 1 / 196, dtype=np.float32), score=0.0)]]

    text, data = handlers.caption(FakeCaptioner(), str(CAT), default_beam=4)
    handlers.caption(FakeCaptioner(), str(CAT), 2.0, default_beam=4)
    assert beams == [4, 2] and text == "a cat" and data["beam"] == 4
    assert data["gates"] == [None, None] and data["alternatives"] == []  # no gates recorded, one caption
    assert payload.decode_image(data["image"]).size == load_image(CAT).size


def test_requests_that_cannot_be_served_say_why(captioner, tmp_path):
    with pytest.raises(handlers.RequestError, match=handlers.NO_PHOTO):
        handlers.caption(captioner, None)
    with pytest.raises(handlers.RequestError, match="Unknown model 'other': this demo serves model"):
        handlers.caption(captioner, str(DOGS), model="other")
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not a photo")
    with pytest.raises(handlers.RequestError, match="(?i)image"):
        handlers.caption(captioner, str(text_file))


def test_a_photo_captioned_again_skips_the_encoder(captioner):
    cache = handlers.FeatureCache()
    first = handlers.caption(captioner, str(CAT), cache=cache)
    with mock.patch.object(handlers.probing, "image_features", side_effect=AssertionError("encoded again")):
        assert handlers.caption(captioner, str(CAT), cache=cache) == first
        photo = handlers.encoded_photo(captioner, "model", str(CAT), cache)
    assert photo.shown == first[1]["image"] and len(cache.entries) == 1


def test_the_feature_cache_keeps_the_most_recent_photos():
    cache = handlers.FeatureCache(size=2)
    photos = {name: handlers.EncodedPhoto(np.zeros(1), name) for name in "abc"}
    cache.put(("m", "a"), photos["a"])
    cache.put(("m", "b"), photos["b"])
    assert cache.get(("m", "a")) is photos["a"]  # now the most recent
    cache.put(("m", "c"), photos["c"])
    assert cache.get(("m", "b")) is None and cache.get(("m", "a")) is photos["a"] and len(cache.entries) == 2


# --- /compare -------------------------------------------------------------------------------------------------------


def test_compare_captions_the_photo_with_every_model(two_models):
    data = handlers.compare(two_models, str(DOGS), 3)
    assert data["kind"] == "caption" and data["beam"] == 3
    assert [row["model"] for row in data["rows"]] == list(two_models)
    for row in data["rows"]:
        expected = two_models[row["model"]].caption(DOGS, beam_size=3)[0]
        assert row["caption"] == expected.text and row["words"] == expected.words
        assert row["score"] == pytest.approx(expected.score, abs=1e-3) and len(row["gates"]) == len(row["words"])
        assert row["attention"] == two_models[row["model"]].config.decoder.attention and "alphas" not in row
    assert data["image"].startswith("data:image/jpeg;base64,")
    assert handlers.compare(two_models, str(DOGS), 3, False) == {} == handlers.compare(two_models, None)  # off


# --- /probe and the page's probe --------------------------------------------------------------------------------------


def test_long_and_non_latin_text_are_scored_with_a_note(two_models):
    longest = two_models["tiny"].config.max_caption_len  # 10 for the tiny model
    long, notes = handlers.probe(two_models, str(DOGS), "a dog on zzyzx " * 126)  # 504 words
    assert long["truncated"] is True and len(long["words"]) == len(long["probs"]) == longest
    assert notes[0].startswith(f"Only the first {longest} words were scored: this model's captions are at most")
    assert len(notes) == 2 and "scored as the unknown word: zzyzx" in notes[1]
    foreign, notes = handlers.probe(two_models, str(DOGS), "собака сидит на коврике")
    assert foreign["words"] == ["собака", "сидит", "на", "коврике"] and all(foreign["unknown"])
    assert all(p is not None and 0 < p < 1 for p in foreign["probs"]) and foreign["total_log_prob"] < 0
    assert notes == [
        "Not in the model's vocabulary (it knows English words only), scored as the unknown word: "
        "собака, сидит, на, коврике."
    ]
    assert handlers.probe(two_models, str(DOGS), SENTENCE).notes == []


@pytest.mark.parametrize(
    "path, text, message",
    [
        (DOGS, "", "the text is empty"),
        (DOGS, "   ", "the text is empty"),
        (DOGS, "?! ... --", "no words to score, only punctuation"),
        (DOGS, "🐶🐶", "no words to score"),
        (None, SENTENCE, "Please upload a photo first: your sentence is scored on it."),
    ],
)
def test_a_probe_that_cannot_be_scored_says_why(captioner, path, text, message):
    with pytest.raises(handlers.RequestError, match=message):
        handlers.probe(captioner, path and str(path), text)


def test_the_pages_probe_has_every_models_reading_in_compare_mode(two_models):
    cache = handlers.FeatureCache()
    (chosen, compare), _ = handlers.page_probe(two_models, str(DOGS), SENTENCE, "tiny_hard", True, cache=cache)
    assert chosen["model"] == "tiny_hard" and chosen["text"] == SENTENCE and "alphas" not in chosen
    assert chosen["image"].startswith("data:image/jpeg;base64,") and chosen["image"] == compare["image"]
    assert compare["kind"] == "probe" and [row["model"] for row in compare["rows"]] == ["tiny", "tiny_hard"]
    assert all(row["words"] == SENTENCE.split() for row in compare["rows"])  # word-aligned
    assert compare["rows"][1]["probs"] == chosen["probs"]
    (alone, untouched), _ = handlers.page_probe(two_models, str(DOGS), SENTENCE, "tiny", False, cache=cache)
    assert alone["probs"] == compare["rows"][0]["probs"] and untouched is None  # the compare view is left alone
    assert len(cache.entries) == 2  # one encoded photo per model


# --- /check ---------------------------------------------------------------------------------------------------------


def test_check_gives_probes_probabilities_and_word_aligned_lists(captioner):
    cache, checks = handlers.FeatureCache(), handlers.FeatureCache()
    checked = handlers.check(captioner, str(DOGS), "A dog sits on the mat.", cache=cache, checks=checks)
    probed = handlers.probe(captioner, str(DOGS), SENTENCE, cache=cache).answer
    assert checked["words"] == probed["words"] == SENTENCE.split()
    assert checked["probs"] == probed["probs"]
    n = len(checked["words"])
    for field in ("probs_hidden_here", "probs_hidden_elsewhere", "hidden_cells", "gradient", "gradient_share"):
        assert len(checked[field]) == n, field
    assert np.asarray(checked["gradient"]).shape == (n, 14, 14)
    assert checked["model"] == "model" and checked["attention"] == "soft"
    assert checked["hide"] == {"mean": list(captioner.config.preprocessing.mean), "feather": 0.25}
    json.dumps(checked)  # JSON-safe
    with mock.patch.object(handlers, "check_attention") as check:  # the same caption again: kept, not recomputed
        again = handlers.check(captioner, str(DOGS), SENTENCE, cache=cache, checks=checks)
    check.assert_not_called()
    assert again == checked


def test_an_empty_text_checks_the_models_own_caption(captioner):
    checked = handlers.check(captioner, str(DOGS), "")
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
def test_a_check_that_cannot_run_says_why_in_one_line(captioner, path, text, message):
    with pytest.raises(handlers.RequestError, match=message) as error:
        handlers.check(captioner, path, text)
    assert "\n" not in str(error.value)


# --- /live ----------------------------------------------------------------------------------------------------------


def test_a_camera_frame_is_captioned_with_the_live_settings(captioner):
    frame = frame_of(DOGS)
    data = handlers.live(captioner, frame)
    features = handlers.probing.image_features(captioner, handlers.decode_image(frame))  # (1, 196, C)
    expected = captioner.caption_pools(features, 1)[0][0]
    assert data["words"] == expected.words and data["caption"] == expected.text
    assert data["image"] == frame and data["beam"] == handlers.LIVE_BEAM == 1 and data["alternatives"] == []
    assert "alphas" not in data and data["grid"] == [14, 14] and data["model"] == "model"
    assert handlers.live(captioner, frame_of(CAT))["id"] != data["id"]


def test_frames_that_cannot_be_read_say_why(captioner):
    with pytest.raises(handlers.RequestError, match="No camera frame"):
        handlers.live(captioner, None)
    with pytest.raises(handlers.RequestError, match="could not be read"):
        handlers.live(captioner, "data:image/jpeg;base64,bm90IGFuIGltYWdl")
    with pytest.raises(handlers.RequestError, match="could not be read"):  # larger than a display photo
        handlers.live(captioner, payload.encode_image(Image.new("RGB", (1200, 900), (90, 120, 200))))
    with pytest.raises(handlers.RequestError, match="Unknown model"):
        handlers.live(captioner, frame_of(DOGS), "other")


# --- /step ----------------------------------------------------------------------------------------------------------


def test_step_draws_a_words_heatmap_and_chips_from_the_data_alone(tmp_path):
    alphas = np.zeros((2, 14, 14), dtype=np.float32)  # (n_words, 14, 14)
    alphas[0, 0, 0] = alphas[1, 13, 13] = 1.0
    data = {"words": ["a", "cat"], "alphas": alphas.tolist(), "image": payload.encode_image(Image.new("RGB", (40, 30)))}
    image, chips = handlers.render_step(data, 1)
    assert image.size == (40, 30) and chips == [("a", handlers.OTHER), ("cat", handlers.CURRENT)]
    first, _ = handlers.step(0, data, folder=tmp_path)
    second, second_chips = handlers.step(1, data, folder=tmp_path)
    assert first != second and second_chips == chips  # another word, another cached heatmap file
    assert Image.open(second).size == (40, 30)


def test_step_without_a_caption_or_with_damaged_data_says_why():
    with pytest.raises(handlers.RequestError, match=handlers.NO_CAPTION):
        handlers.render_step(None, 0)
    with pytest.raises(handlers.RequestError, match=handlers.DAMAGED_CAPTION) as damaged:
        handlers.render_step({"words": ["a"], "image": "x"}, 0)
    assert isinstance(damaged.value.__cause__, payload.PayloadError)  # the detail the server logs beside it
