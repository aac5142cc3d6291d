"""Gradio demo: caption a photo, then step through the words to see where the model looked for each one.

    python app.py                       # serves assets/model (and assets/model_hard) on http://127.0.0.1:7860
    python app.py --model runs/x/best --model runs/y/best --host 0.0.0.0 --auth me:secret
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

INTERRUPTED = "interrupted during start-up; nothing is being served"  # Ctrl-C before the demo serves: exit 130

try:  # torch and gradio take seconds to import on a small CPU: Ctrl-C meanwhile is one line (see main), not a traceback
    import gradio as gr
    import numpy as np
    from gradio import processing_utils
    from PIL import Image, UnidentifiedImageError

    from captioning import cli
    from captioning.checkpoint import CheckpointError, atomic_write
    from captioning.cli import model_load_error
    from captioning.model import Caption, Captioner, EncoderUnavailable
    from captioning.preprocess import UPLOAD_FORMATS, ImageTooLargeError, load_image
    from captioning.visualize import (
        DISPLAY_MAX_SIDE,
        HEATMAP_CMAP,
        attention_overlay,
        colormap_lut,
        display_image,
        word_heatmap,
    )
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "assets" / "model"  # the shipped soft-attention model
DEFAULT_HARD_MODEL = ROOT / "assets" / "model_hard"  # the shipped hard-attention model, served when it is there
EXAMPLES_DIR = ROOT / "assets" / "examples"
# The page's example order: in-domain scenes first (the first one is on the page at start-up), the cat last.
EXAMPLE_ORDER = ("dogs", "meadow", "cameraman", "grace_hopper", "stream", "astronaut", "cat")
OUT_OF_DOMAIN = "cat"  # the example kept on purpose from outside the training domain (EXAMPLES_NOTE explains)
WEB_DIR = ROOT / "assets" / "web"  # the page's script and style sheet (the heatmaps are drawn in the browser)
CURRENT, OTHER = "attending", "word"  # HighlightedText categories of /step's chips: the shown word, the others
SUPPORTED_TYPES = "JPEG, PNG, GIF, WebP, BMP or TIFF"  # what load_image(..., UPLOAD_FORMATS) decodes
MAX_GRID_SIDE = 64  # largest attention grid /step accepts from a client (models use 14x14)
ATTENTION_MODES = ("soft", "hard")  # ModelConfig.attention values; hard models get a crisp chosen-cell heatmap
# Gradio writes uploads and /step's heatmaps to its temp folder: every 30 min, delete this app's files older than 1 h.
DELETE_CACHE = (1800, 3600)
# The per-word JSON travels to the page in one message, and Gradio delivers a message of 150 KB or more far more
# slowly than one of 90 KB (measured: ~140 ms vs ~65 ms on the 2-core machine): the display photo gets a byte
# budget (JPEG quality stepped down for detailed photos) and the grids travel packed (see packed_grids).
DISPLAY_JPEG_BYTES = 40_000
DISPLAY_JPEG_QUALITIES = (80, 70, 60, 50)

INTRO = """# Show, Attend and Tell
Upload a photo and press **Caption**. The model writes a caption one word at a time, and for each word it
*attends* to part of the image. Click a word, hover over it, move the slider or press **←/→** to see where it
looked for that word: the brighter and more opaque the colour, the more attention; where the photo is untinted
the model paid little attention. The heatmap covers the whole photo because the model sees the whole photo,
squashed to a square. The other captions the beam search found are listed too: click one to see its attention.
"""
EXAMPLES_NOTE = """The model learnt from Flickr8k (people, dogs, outdoor scenes), and most examples are such scenes.
**cat** is not: Flickr8k has few cats, and the caption shows what a captioner does outside its domain (it sees a
man on a rock wall)."""

# The page's views: words, slider, heatmap canvas, legend, download and alternatives; the gallery of all words.
# Both are drawn by assets/web/demo.js from the hidden per-word JSON: no request per word.
VIEWER_HTML = """<div class="sat-viewer" data-colormap="COLORMAP">
  <div class="sat-heading">Other captions the beam found (log-probability; click one to see its attention)</div>
  <div id="alternatives" class="sat-alternatives"></div>
  <div class="sat-heading">Words: click or hover one, or press &larr; / &rarr;, to see where the model looked</div>
  <div id="words" class="sat-words"></div>
  <div class="sat-note">Bar under each word: the gate &beta; (0 to 1), how much of the image context the decoder let
    in for that word (the mean of sigmoid(f<sub>&beta;</sub>(h)) over the context's channels).</div>
  <div id="word-slider" class="sat-slider">
    <label>Word <input type="number" min="0" max="0" step="1" value="0" aria-label="Word index (number)"></label>
    <input type="range" min="0" max="0" step="1" value="0" aria-label="Word index">
  </div>
  <div id="heatmap" class="sat-heatmap"><canvas width="1" height="1" aria-label="Attention for the selected word">
    </canvas></div>
  <div id="legend" class="sat-legend"></div>
  <button id="download-figure" class="sat-download" type="button" disabled>Download figure (PNG)</button>
</div>"""
GALLERY_HTML = """<div class="sat-heading">Every word's attention (click one)</div>
<div id="gallery" class="sat-gallery"></div>"""

log = logging.getLogger("app")


# ----------------------------------------------------------------------------------------------------------------
# per-word data: everything the page and /step need travels in one JSON-able dict (no server-side session state)


def encode_image(image: Image.Image, quality: int = 80) -> str:
    """PIL image -> base64 JPEG data URL (small enough to live in the page's hidden JSON)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def display_data_url(image: Image.Image, budget: int = DISPLAY_JPEG_BYTES) -> str:
    """The display photo as a JPEG data URL of at most about `budget` bytes: the first of
    DISPLAY_JPEG_QUALITIES that fits (the last one otherwise)."""
    for quality in DISPLAY_JPEG_QUALITIES:
        url = encode_image(image, quality)
        if len(url) * 3 // 4 <= budget:
            break
    return url


def packed_grids(alphas: np.ndarray) -> str:
    """Attention grids (n_words, 14, 14) as base64 of little-endian uint16, each word scaled to its own maximum:
    under a third of the size of nested lists, and what the page draws from (it stretches each map to its range)."""
    grids = np.asarray(alphas, dtype=np.float64)  # (n_words, 14, 14)
    flat = grids.reshape(grids.shape[0], int(np.prod(grids.shape[1:])))  # (n_words, 196)
    peak = np.maximum(flat.max(axis=1, keepdims=True, initial=0.0), 1e-12)  # (n_words, 1)
    scaled = np.rint(np.clip(flat / peak, 0.0, 1.0) * 65535).astype("<u2")  # (n_words, 196)
    return base64.b64encode(scaled.tobytes()).decode("ascii")


def decode_image(data_url: str, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """Inverse of encode_image. The data URL comes back from the client, so only a display-size JPEG/PNG is
    accepted (checked from the header, before decoding): /step cannot be made to decode anything bigger."""
    payload = data_url.split(",", 1)[-1]
    with Image.open(io.BytesIO(base64.b64decode(payload, validate=True)), formats=("JPEG", "PNG")) as image:
        if max(image.size) > max_side:
            raise ValueError(f"display image is {image.width}x{image.height}, larger than {max_side} px")
        return image.convert("RGB")


def cache_image(image: Image.Image, cache_dir: str | None = None) -> str:
    """Save an output image as JPEG in Gradio's cache, named by its content, and return the path.

    Gradio's own saver for PIL outputs rewrites the file in place on every request, so two requests that render the
    same image at once (the same photo uploaded twice) truncate a file while it is being downloaded, and a download
    fails. Here the file is written under a temporary name and renamed into place: a cached file is always whole.
    """
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")  # Gradio's format="jpeg" encoding (Pillow's default quality)
    payload = buffer.getvalue()
    path = Path(cache_dir or gr.utils.get_upload_folder()) / hashlib.sha256(payload).hexdigest() / "image.jpeg"
    try:
        os.utime(path)  # handed out again: restart its delete_cache clock (Gradio ages cache files by ctime)
    except FileNotFoundError:
        atomic_write(path, lambda part: part.write_bytes(payload))
    return str(path)


def gate_values(caption: Caption) -> list[float | None]:
    """Each word's gate beta rounded for the page; None for every word when the search recorded none."""
    gates = np.asarray(caption.gates, dtype=np.float64)  # (n_words,) or (0,)
    if gates.shape != (len(caption.words),):
        return [None] * len(caption.words)
    return [round(float(g), 4) if math.isfinite(g) else None for g in gates]


def word_payload(caption: Caption, nested: bool = True) -> dict:
    """One caption for the page: text, words, their attention grids (packed for the page, and as nested lists
    when `nested`, for API clients and /step), gates and log-probability."""
    payload = {"caption": caption.text, "words": list(caption.words)}
    if nested:
        payload["alphas"] = np.round(caption.alphas.astype(np.float64), 5).tolist()  # (n_words, 14, 14) lists
    grid = list(caption.alphas.shape[1:]) or [14, 14]
    return {**payload, "grids": packed_grids(caption.alphas), "grid": grid, "gates": gate_values(caption),
            "score": round(float(caption.score), 4)}


def caption_data(captions: list[Caption], shown: Image.Image, model: str = "model", attention: str = "soft",
                 beam: int = 3) -> dict:
    """The hidden JSON: the best caption's words, grids and gates at the top level (what /step reads), the
    display-size image, which model made it and how it attends, and the beam's other captions, next best first."""
    image = display_data_url(shown)
    best = word_payload(captions[0])
    identity = hashlib.sha256("\n".join([model, str(beam), best["caption"], image]).encode()).hexdigest()[:16]
    return {**best, "image": image, "model": model, "attention": attention, "beam": beam, "id": identity,
            "alternatives": [word_payload(caption, nested=False) for caption in captions[1:]]}


def word_chips(words: list[str], current: int) -> list[tuple[str, str]]:
    """HighlightedText value: every word a chip, the current one in the highlight category."""
    return [(word, CURRENT if i == current else OTHER) for i, word in enumerate(words)]


def finite(value, default: float) -> float:
    """A number from a client (slider, API) as a finite float; anything else (None, NaN, text) -> default."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def word_index(index, n_words: int) -> int:
    """Slider/click value -> a valid word index."""
    return int(min(max(round(finite(index, 0.0)), 0), max(n_words - 1, 0)))


def beam_width(beam, default: int = 3) -> int:
    """Beam-size input -> an int in 1..5."""
    return int(min(max(round(finite(beam, default)), 1), 5))


def render_step(data: dict | None, index) -> tuple[Image.Image, list[tuple[str, str]]]:
    """Heatmap image and chips for word `index`, from the hidden JSON alone (the model is not run): what /step
    returns to API clients (the page draws its heatmaps itself).

    The JSON travels through the client, so it is checked: anything malformed is a friendly error, not a crash.
    """
    if not isinstance(data, dict) or not data.get("words"):
        raise gr.Error("Caption an image first.")
    try:
        words = [str(word) for word in data["words"]]
        i = word_index(index, len(words))
        shown = decode_image(data["image"])
        alpha = np.asarray(data["alphas"][i], dtype=np.float32)  # (14, 14)
        if alpha.ndim != 2 or not 0 < max(alpha.shape) <= MAX_GRID_SIDE or not np.isfinite(alpha).all():
            raise ValueError(f"attention grid of shape {alpha.shape}")
        mode = data.get("attention", "soft")
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention mode {mode!r}")
        heatmap = attention_overlay(shown, word_heatmap(alpha, shown.size, mode))
    except Exception as error:
        log.info("refused /step data: %s: %s", type(error).__name__, error)
        raise gr.Error("This caption's word data is damaged or incomplete. Please caption the image again.") from None
    return heatmap, word_chips(words, i)


def image_error_message(error: BaseException) -> str:
    """Why an upload could not be read, in one sentence for the page (never a stack trace)."""
    if isinstance(error, ImageTooLargeError):
        size = f"is {error.width}x{error.height} pixels" if error.width else "has far too many pixels"
        return (f"Could not read this image: it {size}, over the {error.limit / 1e6:g}-megapixel limit. "
                "Please upload a smaller image.")
    if isinstance(error, UnidentifiedImageError):
        return f"Could not read this image: the file is not a {SUPPORTED_TYPES} image. Please upload a photo."
    if isinstance(error, MemoryError):
        return "Could not read this image: the server has too little free memory for it. Please try a smaller one."
    return "Could not read this image: the file looks damaged or incomplete. Please try another JPEG or PNG."


def upload_path(component: gr.Image, payload) -> str | None:
    """Preprocess for the photo input: the uploaded file's path, with the file left unopened (see photo_input)."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # API callers may inline the image as a data URL
        try:
            return processing_utils.save_base64_to_cache(payload.url, component.GRADIO_CACHE)  # bytes, no decoding
        except Exception:
            raise gr.Error("Could not read this image: the data URL is not valid base64.") from None
    if payload.path is None:
        raise gr.Error("Please upload an image first.")
    return str(payload.path)


def photo_input(**kwargs) -> gr.Image:
    """gr.Image(type="filepath") whose handler receives the uploaded file's path without the file being opened.

    A plain gr.Image opens every upload with Pillow before the event handler runs, so a file that is not an image,
    or a decompression bomb, fails inside Gradio with a generic error (and Pillow's looser bomb limit). Here nothing
    is decoded until caption_image calls load_image: pixel limit checked from the header, friendly messages.
    (An instance override rather than a subclass: Gradio writes a .pyi stub next to any module that subclasses
    one of its components.)
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = functools.partial(upload_path, image)
    return image


# ----------------------------------------------------------------------------------------------------------------
# event handlers: plain functions (the models are bound with functools.partial in build_demo), testable without a
# server


def as_models(models: Captioner | Mapping[str, Captioner]) -> dict[str, Captioner]:
    """Served models by page name, in order (the first is the default); one captioner alone is named "model"."""
    return dict(models) if isinstance(models, Mapping) else {"model": models}


def pick_model(models: dict[str, Captioner], name) -> str:
    """The requested model's name; None or "" -> the first; an unknown name is a friendly error."""
    if name in (None, ""):
        return next(iter(models))
    if name not in models:
        raise gr.Error(f"Unknown model {name!r}: this demo serves {', '.join(models)}.")
    return name


def caption_image(models: Captioner | Mapping[str, Captioner], default_beam: int, path: str | None,
                  beam: float | None = None, model: str | None = None) -> tuple[str, dict]:
    """Run one model once: the caption text first, then the per-word data the page draws from."""
    models = as_models(models)
    name = pick_model(models, model)
    if not path:
        raise gr.Error("Please upload an image first.")
    try:
        image = load_image(path, formats=UPLOAD_FORMATS)  # pixel limit checked before decoding
    except Exception as error:  # not an image, truncated, too many pixels, out of memory
        log.info("refused upload %s: %s: %s", path, type(error).__name__, error)
        raise gr.Error(image_error_message(error)) from None
    captioner, width = models[name], beam_width(beam, default_beam)
    try:
        captions = captioner.caption_alternatives(image, beam_size=width)[0]  # best first
    except Exception:
        log.exception("captioning failed for %s", path)
        raise gr.Error("The model could not caption this image. Please try another one.") from None
    data = caption_data(captions, display_image(image), name, captioner.config.attention, width)
    return captions[0].text or "(the model produced an empty caption)", data


def caption_example(models: Captioner | Mapping[str, Captioner], default_beam: int, path: str | None,
                    model: str | None = None) -> tuple[str, dict]:
    """An example row (photo, model) captioned at the default beam size: what the examples cache stores."""
    return caption_image(models, default_beam, path, None, model)


def step(index: float, data: dict | None):
    """/step for API clients: word `index`'s heatmap (a file) and chips, from the per-word data (no model call)."""
    heatmap, chips = render_step(data, index)
    return cache_image(heatmap), chips


# ----------------------------------------------------------------------------------------------------------------
# the page


def example_paths(directory: Path = EXAMPLES_DIR) -> list[str]:
    """The example photos: EXAMPLE_ORDER first (those that exist), then any other JPEG in the folder by name."""
    found = {p.stem: p for p in directory.glob("*.jpg")}
    ordered = [found.pop(stem) for stem in EXAMPLE_ORDER if stem in found]
    return [str(p) for p in ordered + sorted(found.values())]


def model_names(directories: list[Path]) -> list[str]:
    """Page names of the served model directories: each folder's name, or its whole path where names repeat."""
    names = [Path(d).name or str(d) for d in directories]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, directories)]


def colormap_hex(cmap: str = HEATMAP_CMAP) -> str:
    """The heatmap colour table as 256 rrggbb hex triplets: the page draws with the same colours as /step."""
    return colormap_lut(cmap).tobytes().hex()


def page_assets(directory: Path = WEB_DIR) -> str:
    """The <head> markup of the page's views: its style sheet and script, inlined (no extra requests)."""
    css = (directory / "demo.css").read_text(encoding="utf-8")
    script = (directory / "demo.js").read_text(encoding="utf-8")
    return f"<style>{css}</style><script>{script}</script>"


def build_demo(models: Captioner | Mapping[str, Captioner], beam_size: int = 3, concurrency: int = 2,
               examples: list[str] | None = None, cache_examples: bool | str = "lazy") -> gr.Blocks:
    """The Blocks app around loaded captioners (one, or several by name; the first is the default).
    cache_examples: True (at launch, and the first example is on the page as it loads), "lazy" (on first use) or
    False."""
    models = as_models(models)
    names = list(models)
    examples = example_paths() if examples is None else examples
    # The examples cache is a CSV with the per-word JSON in one field: allow fields of a few MB (Python's csv
    # module refuses fields over 128 KB by default, which a detailed photo and 5 beam captions can pass).
    csv.field_size_limit(max(csv.field_size_limit(), 16 * 2**20))
    run_model = functools.partial(caption_image, models, beam_size)  # (path, beam=None, model=None) -> outputs
    run_example = functools.partial(caption_example, models, beam_size)  # (path, model) -> outputs
    # The first example is part of the page itself (the components' initial values, computed once here), not filled
    # in by a page-load event: on a busy server such an event lands late and replaces the visitor's own photo.
    first_text, first_data = run_model(examples[0]) if examples and cache_examples is True else (None, None)
    head = page_assets()
    with gr.Blocks(title="Show, Attend and Tell", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1) as left:
                image = photo_input(value=examples[0] if first_data else None, sources=["upload", "clipboard"],
                                    label="Photo", elem_id="image-input")
                choice = gr.Radio(names, value=names[0], label="Model", elem_id="model-choice",
                                  info="the model directories this demo serves", visible=len(names) > 1)
                beam = gr.Slider(1, 5, value=beam_size, step=1, label="Beam size",
                                 info="1 = greedy (fastest); larger searches more captions", elem_id="beam-size")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=1):
                text = gr.Textbox(first_text, label="Caption", interactive=False, elem_id="caption-text")
                # The first caption rides in the viewer's own value (read once when it mounts); later ones come
                # through the hidden JSON's change event, in the page.
                gr.HTML(json.dumps(first_data) if first_data else "", elem_id="viewer", head=head,
                        html_template=VIEWER_HTML.replace("COLORMAP", colormap_hex()),
                        js_on_load="window.satDemo.mount(element, props.value);")
        gr.HTML("", elem_id="gallery-view", head=head, html_template=GALLERY_HTML,
                js_on_load="window.satDemo.mountGallery(element);")
        data = gr.JSON(first_data, visible=False, elem_id="attention-data")
        outputs = [text, data]
        example_loads = []  # the event that fills in a clicked example's outputs
        if examples:
            with left:  # under the Caption button
                shelf = gr.Examples(examples=[[path, names[0]] for path in examples], inputs=[image, choice],
                                    outputs=outputs, fn=run_example, run_on_click=True,
                                    cache_examples=bool(cache_examples),
                                    cache_mode="lazy" if cache_examples == "lazy" else "eager", preload=False,
                                    example_labels=[Path(p).stem for p in examples], label="Examples (click one)",
                                    elem_id="examples")
                if any(Path(p).stem == OUT_OF_DOMAIN for p in examples):
                    gr.Markdown(EXAMPLES_NOTE, elem_id="examples-note")
            if cache_examples:  # the queued event that loads a cached example's outputs (can be cancelled)
                example_loads.append(shelf.load_input_event)

        # Newest action wins: Caption drops a pending example fill, a new upload or example click drops a pending
        # caption; while one caption is pending (the status tracker shows its queue position), Caption is ignored.
        captioning = button.click(run_model, [image, beam, choice], outputs, api_name="caption",
                                  concurrency_limit=concurrency, concurrency_id="model", trigger_mode="once",
                                  cancels=example_loads)
        image.upload(None, cancels=[captioning, *example_loads])
        if examples:
            shelf.dataset.click(None, cancels=[captioning])
        # A new caption (button or example) is drawn by the page from the JSON: no request, no server rendering.
        # The same caption again (the same photo captioned twice) changes nothing, so the button also shows it,
        # which brings the page back to its first word.
        show = "(data) => { window.satDemo.show(data); }"
        data.change(None, [data], None, js=show, show_progress="hidden")
        captioning.success(None, [data], None, js=show, show_progress="hidden")
        # API only: one word's heatmap rendered by the server, for gradio_client users (a Number has no bounds).
        index = gr.Number(visible=False, precision=0, label="word index")
        step_heatmap = gr.Image(visible=False, type="filepath", format="jpeg", label="heatmap")
        step_chips = gr.HighlightedText(visible=False, label="words")
        gr.Button(visible=False).click(step, [index, data], [step_heatmap, step_chips], api_name="step",
                                       concurrency_limit=8, concurrency_id="step")
    return demo


# ----------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option's help says what it does, its allowed values and its default."""
    parser = argparse.ArgumentParser(description="Show, Attend and Tell captioning demo (Gradio).")
    parser.add_argument("--model", action="append", metavar="DIR",
                        help="model directory (config.json, wordmap.json, model.safetensors), e.g. runs/x/best; "
                             "repeat it to serve several (the page offers a choice, the first is the default) "
                             "(default: assets/model, the shipped soft-attention model, and assets/model_hard, the "
                             "hard-attention one, when it is there)")
    # GRADIO_SERVER_NAME/PORT are honoured as defaults: Hugging Face Spaces sets them (0.0.0.0:7860).
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to bind: 127.0.0.1 serves this machine only, 0.0.0.0 the whole network "
                             "(default: %(default)s, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=port_number, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="TCP port to serve on, 1-65535 (default: %(default)s, or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true",
                        help="also create a temporary public *.gradio.live link (default: off; needs internet)")
    parser.add_argument("--auth", type=auth_pair, metavar="USER:PASS",
                        help="require this login on the page and the API (default: none; recommended with --share)")
    parser.add_argument("--beam-size", type=int, default=3, choices=range(1, 6), metavar="{1..5}",
                        help="the page's initial beam size, 1 (greedy, fastest) to 5 (default: %(default)s)")
    parser.add_argument("--max-file-size", default="10mb", metavar="SIZE",
                        help="largest upload accepted, a number with kb, mb or gb, e.g. 500kb (default: %(default)s)")
    parser.add_argument("--concurrency", type=cli.positive_int, default=2, metavar="N",
                        help="captions computed at once, 1 or more (default: %(default)s)")
    parser.add_argument("--queue-size", type=cli.positive_int, default=32, metavar="N",
                        help="requests allowed to wait, 1 or more; more are refused with 'Queue is full' "
                             "(default: %(default)s)")
    parser.add_argument("--cache-examples", choices=["eager", "lazy", "off"], default="eager",
                        help="caption the example photos at start-up (eager: the first one is on the page at once), "
                             "on first click (lazy) or never (off) (default: %(default)s)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def port_number(value: str) -> int:
    """argparse type for --port: a whole number in 1..65535."""
    number = cli.positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError("must be at most 65535")
    return number


def share_warning(share: bool, auth: tuple[str, str] | None) -> str | None:
    """What to print when --share would open the demo to anyone holding the link; None when it is safe."""
    if share and auth is None:
        return ("warning: --share without --auth: the public link is open to anyone who has it: they can use this "
                "demo, its API and your CPU. Add --auth USER:PASS to require a login.")
    return None


def auth_pair(value: str) -> tuple[str, str]:
    """argparse type for --auth USER:PASS."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("must look like USER:PASS")
    return user, password


def model_dirs(given: list[str] | None) -> tuple[list[Path], str | None]:
    """The model directories to serve, and a note to print when the default hard model is not there (yet)."""
    if given:
        return [Path(d) for d in given], None
    if DEFAULT_HARD_MODEL.is_dir():
        return [DEFAULT_MODEL, DEFAULT_HARD_MODEL], None
    return [DEFAULT_MODEL], "note: assets/model_hard (the hard-attention model) is not there: serving assets/model only"


def model_error(model: str, error: Exception) -> str:
    """cli.model_load_error's one line, plus where the default model lives when that one failed."""
    hint = " (the default model is assets/model; pass --model DIR to use another)" \
        if Path(model).resolve() == DEFAULT_MODEL and not (Path(model) / "best").exists() else ""
    return model_load_error(model, error) + hint


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return serve(args)
    except KeyboardInterrupt:  # Ctrl-C before the demo was serving (loading, caching the examples)
        print(INTERRUPTED, file=sys.stderr)
        return 130


def serve(args: argparse.Namespace) -> int:
    """Load the models, start the server and block until Ctrl-C; 2 when a model or the address is unusable."""
    directories, note = model_dirs(args.model)
    if note:
        print(note, flush=True)
    models = {}
    for name, directory in zip(model_names(directories), directories):
        try:
            models[name] = Captioner.load(directory)
        except (CheckpointError, OSError, ImportError, ValueError, EncoderUnavailable) as error:
            print(model_error(str(directory), error), file=sys.stderr)
            return 2
    for precision_note in sorted({model.use_fastest_encoder() for model in models.values()} - {None}):
        print(precision_note, flush=True)  # once, however many models share it
    warning = share_warning(args.share, args.auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    cache = {"eager": True, "lazy": "lazy", "off": False}[args.cache_examples]
    # A fresh examples cache per process: gradio keys its cache by component id, not by model, so a cache left
    # by another model (or beam size) would show stale captions.
    with tempfile.TemporaryDirectory(prefix="show-attend-tell-examples-") as cache_dir:
        os.environ.setdefault("GRADIO_EXAMPLES_CACHE", cache_dir)
        demo = build_demo(models, args.beam_size, args.concurrency, cache_examples=cache)
        demo.queue(max_size=args.queue_size)
        try:
            try:  # quiet: gradio's own hints name launch() arguments; this app's are printed below
                _, local_url, share_url = demo.launch(server_name=args.host, server_port=args.port,
                                                      share=args.share, auth=args.auth, quiet=True,
                                                      max_file_size=args.max_file_size, prevent_thread_lock=True)
            except OSError as error:  # port taken, address not available
                print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
                return 2
            print(f"* Running on local URL:  {local_url}", flush=True)
            if share_url:
                print(f"* Running on public URL: {share_url}", flush=True)
            elif args.share:
                print(f"could not create a public share link (no network?) — serving locally at {local_url}",
                      file=sys.stderr)
            else:
                print("* To create a public link, rerun with --share (and --auth USER:PASS to require a login).",
                      flush=True)
            demo.block_thread()
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
