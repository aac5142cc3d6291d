"""What the demo's endpoints compute, without Gradio, one function per endpoint named as its URL: caption (/caption),
compare (/compare), probe (/probe), check (/check), live (/live), step (/step), and page_probe (the page's own probe).
A request that cannot be served raises RequestError with the line the visitor reads; notes beside an answer (words
cut off, unknown words) come back in a Noted. The app turns the one into gr.Error, the other into gr.Warning.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from captioning import probe as probing
from captioning.attention_check import FEATHER, check_attention
from captioning.heatmap import word_overlay
from captioning.model import Captioner
from captioning.payload import (
    PayloadError,
    beam_width,
    cache_jpeg,
    caption_data,
    check_data,
    decode_image,
    display_data_url,
    has_words,
    probe_data,
    read_step_request,
    word_payload,
)
from captioning.preprocess import UPLOAD_FORMATS, load_image
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.serving import image_error_message
from captioning.text import tokenize
from captioning.visualize import display_image

FEATURE_CACHE_SIZE = 8  # photos whose encoder features the demo keeps (about 1 MB each for the shipped models)
MAX_PROBE_CHARS = 5000  # a typed sentence is read up to here (the model scores at most max_caption_len words)
EMPTY_CAPTION = "(the model produced an empty caption)"  # the caption text shown for a caption with no word
NO_PHOTO = "Please upload an image first."  # a model request without a photo
NO_CAPTION = "Caption an image first."  # /step without a caption's data
DAMAGED_CAPTION = "This caption's word data is damaged or incomplete. Please caption the image again."  # bad /step data
CURRENT, OTHER = "attending", "word"  # /step's chip categories: the shown word, the others
LIVE_BEAM = 1  # live camera frames: greedy search (beam 3 costs more per frame for a caption a visitor reads briefly)

Models = Captioner | Mapping[str, Captioner]  # served models by page name, or one captioner alone

log = logging.getLogger("app")


class RequestError(ValueError):
    """A request the demo cannot serve: the message is the one line the visitor sees (its __cause__, where there is
    one, the detail the server logs beside it)."""


class Noted(NamedTuple):
    """An answer with the notes the visitor reads beside it (words cut off, words read as <unk>)."""

    answer: object
    notes: list[str]


class EncodedPhoto(NamedTuple):
    """A photo as one model saw it: its encoder features and the display photo the page draws on."""

    features: torch.Tensor  # (1, 196, C)
    shown: str  # the display photo as a JPEG data URL (payload.display_data_url)


class FeatureCache:
    """The last few photos' EncodedPhoto by (model name, sha256 of the uploaded file): probing a photo already
    captioned, or captioning it again, skips the encoder. The least recently used photo goes first; request threads
    share it."""

    def __init__(self, size: int = FEATURE_CACHE_SIZE):
        self.size, self.entries, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple[str, str]) -> EncodedPhoto | None:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
            return self.entries.get(key)

    def put(self, key: tuple[str, str], photo: EncodedPhoto) -> None:
        with self.lock:
            self.entries[key] = photo
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


def file_digest(path: str) -> str:
    """sha256 of an uploaded file's bytes: the same photo uploaded again finds its cached features."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_models(models: Models) -> dict[str, Captioner]:
    """Served models by page name, in order (the first is the default); one captioner alone is named "model"."""
    return dict(models) if isinstance(models, Mapping) else {"model": models}


def pick_model(models: dict[str, Captioner], name) -> str:
    """The requested model's name; None or "" -> the first; an unknown name is a RequestError."""
    if name in (None, ""):
        return next(iter(models))
    if name not in models:
        raise RequestError(f"Unknown model {name!r}: this demo serves {', '.join(models)}.")
    return name


def read_upload(path: str | None) -> Image.Image:
    """The uploaded photo, decoded; a RequestError when there is none or it cannot be read."""
    if not path:
        raise RequestError(NO_PHOTO)
    try:
        return load_image(path, formats=UPLOAD_FORMATS)  # pixel limit checked before decoding
    except Exception as error:  # not an image, truncated, too many pixels, out of memory: its cause is logged
        raise RequestError(image_error_message(error)) from error


def encoded_photo(captioner: Captioner, name: str, path: str | None, cache: FeatureCache | None) -> EncodedPhoto:
    """The photo at `path` as model `name` sees it: from the cache when this file was encoded before, else decoded
    and encoded here (the display photo made beside the encoder: PIL frees the GIL) and cached."""
    if not path:
        raise RequestError(NO_PHOTO)
    key = (name, file_digest(path))
    if cache is not None and (photo := cache.get(key)) is not None:
        return photo
    image = read_upload(path)
    with ThreadPoolExecutor(1) as helper:
        shown = helper.submit(lambda: display_data_url(display_image(image)))
        try:
            photo = EncodedPhoto(probing.image_features(captioner, image), shown.result())
        except Exception:
            log.exception("encoding failed for %s", path)
            raise RequestError("The model could not read this image. Please try another one.") from None
    if cache is not None:
        cache.put(key, photo)
    return photo


def caption(
    models: Models,
    path: str | None,
    beam=None,
    model=None,
    *,
    default_beam: int = DEFAULT_BEAM_SIZE,
    cache: FeatureCache | None = None,
    for_page: bool = False,
) -> tuple[str, dict]:
    """/caption: one model's caption of the photo at `path`: the text (EMPTY_CAPTION for none) and the per-word data
    (payload.caption_data, plus `familiarity`: the share of val photos farther from the training photos, in percent,
    or None for a model without the summary). The photo's features are taken from, and left in, `cache`. for_page:
    the page's own copy, without the nested `alphas` lists it does not read, and with a fresh `nonce`, so that every
    caption, the same one again included, reaches the page as a change of its hidden JSON (one hand-over each)."""
    models = as_models(models)
    name = pick_model(models, model)
    captioner, width = models[name], beam_width(beam, default_beam)
    photo = encoded_photo(captioner, name, path, cache)
    captions = search_captions(captioner, photo.features, width, path)
    attention = captioner.config.decoder.attention
    data = caption_data(captions, photo.shown, name, attention, width, nested=not for_page)
    summary = getattr(captioner, "familiarity", None)  # None: no summary (or a stand-in captioner without one)
    data["familiarity"] = summary.percent(photo.features)[0] if summary is not None else None
    if for_page:
        data["nonce"] = secrets.token_hex(4)
    return captions[0].text or EMPTY_CAPTION, data


def search_captions(captioner: Captioner, features: torch.Tensor, width: int, source) -> list:
    """The beam's captions of one encoded photo, best first; a RequestError (the failure logged with `source`, the
    photo's name) when the search fails."""
    try:
        return captioner.caption_pools(features, beam_size=width)[0]  # best first
    except Exception:
        log.exception("captioning failed for %s", source)
        raise RequestError("The model could not caption this image. Please try another one.") from None


def live(models: Models, frame, model=None, *, beam: int = LIVE_BEAM) -> dict:
    """/live: one camera frame, a JPEG data URL the page made (at most DISPLAY_MAX_SIDE px a side, checked before
    decoding), captioned by one model: /caption's page data, the frame itself as the display photo. Frames are not
    cached: each is new, and a visitor streaming would push everyone's photos out of the feature cache."""
    models = as_models(models)
    name = pick_model(models, model)
    captioner = models[name]
    if not isinstance(frame, str) or not frame.startswith("data:image/"):
        raise RequestError("No camera frame came with this request.")
    try:
        image = decode_image(frame)
    except Exception as error:
        log.info("refused camera frame: %s: %s", type(error).__name__, error)
        raise RequestError("The camera frame could not be read.") from None
    captions = search_captions(captioner, probing.image_features(captioner, image), beam, "a camera frame")
    return caption_data(captions, frame, name, captioner.config.decoder.attention, beam, nested=False)


def compare(
    models: Models,
    path: str | None,
    beam=None,
    enabled: bool = True,
    *,
    default_beam: int = DEFAULT_BEAM_SIZE,
    cache: FeatureCache | None = None,
) -> dict:
    """/compare: the photo's best caption by every served model, one row each (the per-word format of /caption's
    words, plus model and attention), and the display photo; {} when compare mode is off or there is no photo."""
    if not enabled or not path:
        return {}
    width, rows, shown = beam_width(beam, default_beam), [], None
    for name, captioner in as_models(models).items():
        photo = encoded_photo(captioner, name, path, cache)
        best = search_captions(captioner, photo.features, width, f"{path} with {name}")[0]
        rows.append(
            {**word_payload(best, nested=False), "model": name, "attention": captioner.config.decoder.attention}
        )
        shown = photo.shown
    return {"kind": "caption", "image": shown, "beam": width, "rows": rows}


def probe_notes(probed: probing.Probe, max_len: int) -> list[str]:
    """What to tell the visitor about a probed sentence: words cut off, words read as <unk>."""
    notes = []
    if probed.truncated:
        notes.append(
            f"Only the first {max_len} words were scored: this model's captions are at most {max_len} words long."
        )
    unknown = [word for word, flag in zip(probed.words, probed.unknown) if flag]
    if unknown:
        listed = ", ".join(unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        every = " (it knows English words only)" if len(unknown) == len(probed.words) else ""
        notes.append(f"Not in the model's vocabulary{every}, scored as the unknown word: {listed}.")  # no <>: HTML
    return notes


def probe_models(
    models: Models,
    names: list[str],
    path: str | None,
    text,
    cache: FeatureCache | None = None,
    nested: bool = True,
) -> tuple[list[tuple[dict, str]], list[str]]:
    """Each named model's probe of `text` on the photo: ([(its payload: payload.probe_data with model and attention,
    the display photo)], the notes for the visitor: words cut or unknown); a RequestError for no photo or a text
    with no word. nested=False: the payloads without the `alphas` lists (the page's copy)."""
    if not path:
        raise RequestError("Please upload a photo first: your sentence is scored on it.")
    models = as_models(models)
    text = text[:MAX_PROBE_CHARS] if isinstance(text, str) else text
    results, notes = [], []
    for name in names:
        captioner = models[name]
        try:  # the text is checked before the photo is read
            probing.tokenize_probe(text, captioner.word_map, captioner.config.max_caption_len)
        except ValueError as error:
            raise RequestError(str(error)) from None
        photo = encoded_photo(captioner, name, path, cache)
        probed = probing.probe(captioner, photo.features, [text])[0]
        notes += [note for note in probe_notes(probed, captioner.config.max_caption_len) if note not in notes]
        results.append(
            (
                {**probe_data(probed, nested), "model": name, "attention": captioner.config.decoder.attention},
                photo.shown,
            )
        )
    return results, notes


def probe(models: Models, path: str | None, text, model=None, *, cache: FeatureCache | None = None) -> Noted:
    """/probe: how likely one model finds a typed sentence on the photo, word by word (teacher forcing): words,
    per-word log-probabilities, probabilities, ranks and unknown flags, gates, 14x14 maps (`alphas`, and packed
    `grids` as /caption's), the total log-probability, plus model and attention; with the notes for the visitor."""
    models = as_models(models)
    results, notes = probe_models(models, [pick_model(models, model)], path, text, cache)
    return Noted(results[0][0], notes)


def page_probe(
    models: Models,
    path: str | None,
    text,
    model=None,
    compare: bool = False,
    *,
    cache: FeatureCache | None = None,
) -> Noted:
    """The page's probe: (the chosen model's payload: packed grids only, the display photo and the typed text; in
    compare mode every model's, one row each, for the compare view, else None: the view is left as it is), with the
    notes for the visitor."""
    models = as_models(models)
    name = pick_model(models, model)
    names = list(models) if compare else [name]
    results, notes = probe_models(models, names, path, text, cache, nested=False)
    rows = [payload for payload, _ in results]
    shown = results[0][1]
    chosen = {**rows[names.index(name)], "image": shown, "text": text}
    compared = {"kind": "probe", "image": shown, "text": text, "rows": rows} if compare else None
    return Noted((chosen, compared), notes)


def check(
    models: Models,
    path: str | None,
    text,
    model=None,
    *,
    cache: FeatureCache | None = None,
    checks: FeatureCache | None = None,
) -> dict:
    """/check: does each word of a caption (the typed `text`; empty: the model's own caption) depend on where the
    model looked? captioning.attention_check's payload (probs, probs_hidden_here, probs_hidden_elsewhere,
    hidden_cells, gradient, ... aligned with words), plus model, attention and how the page draws a hidden photo
    (`hide`: the fill colour in 0..1 and the feathering in cells). The photo's features come from `cache`; a result
    is kept in `checks` by model, photo and words, so a caption is checked once."""
    if not path:
        raise RequestError("Please upload a photo first: the check runs on it.")
    models = as_models(models)
    name = pick_model(models, model)
    captioner = models[name]
    text = text[:MAX_PROBE_CHARS] if isinstance(text, str) else ""
    key = (name, file_digest(path) + "\n" + " ".join(tokenize(text)))
    if checks is not None and (found := checks.get(key)) is not None:
        return found
    photo = encoded_photo(captioner, name, path, cache)
    image = read_upload(path)
    try:
        checked = check_attention(captioner, image, text, features=photo.features)
    except ValueError as error:  # a text with no word or too many: the message is for the visitor
        raise RequestError(str(error)) from None
    except Exception:
        log.exception("attention check failed for %s", path)
        raise RequestError("The model could not check this caption. Please try another photo.") from None
    hide = {"mean": list(captioner.config.preprocessing.mean), "feather": FEATHER}
    result = {**check_data(checked), "model": name, "attention": captioner.config.decoder.attention, "hide": hide}
    if checks is not None:
        checks.put(key, result)
    return result


def render_step(data: dict | None, index) -> tuple[Image.Image, list[tuple[str, str]]]:
    """Word `index`'s heatmap image and chips (word, CURRENT or OTHER) from the per-word JSON alone (no model call)."""
    if not has_words(data):
        raise RequestError(NO_CAPTION)
    try:
        word = read_step_request(data, index)
    except PayloadError as error:
        raise RequestError(DAMAGED_CAPTION) from error
    heatmap = word_overlay(word.image, word.alpha, word.attention)
    chips = [(w, CURRENT if i == word.index else OTHER) for i, w in enumerate(word.words)]
    return heatmap, chips


def step(index, data: dict | None, *, folder: str) -> tuple[str, list[tuple[str, str]]]:
    """/step: word `index`'s heatmap (a JPEG file in `folder`) and chips, from the per-word data (no model call)."""
    heatmap, chips = render_step(data, index)
    return cache_jpeg(heatmap, folder), chips
