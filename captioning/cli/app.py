"""The Gradio demo: caption a photo, then step through the words to see where the model looked for each one.

    python app.py                       # serves assets/model and assets/model_hard on http://127.0.0.1:7860
    python app.py --model runs/x/best --model runs/y/best --host 0.0.0.0 --auth me:secret

A thin shell: what the endpoints compute, the payload, its checks, model loading and the heatmaps live in the
library (captioning.handlers, .payload, .serving, .heatmap); the page's HTML, style and script in assets/web/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import html
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

from captioning import handlers
from captioning.cli.args import interrupted, positive_int
from captioning.cli.environment import Repeatable, name_variables, parse_with_environment
from captioning.familiarity import UNFAMILIAR_BELOW, UNFAMILIAR_NOTE
from captioning.handlers import (
    EMPTY_CAPTION,
    NO_PHOTO,
    FeatureCache,
    Models,
    RequestError,
    as_models,
    caption_frame,
    caption_upload,
    check_words,
    compare_captions,
    pick_model,
    probe_models,
)
from captioning.heatmap import HEATMAP, word_overlay
from captioning.model import model_directory
from captioning.model_thread import ModelThread
from captioning.payload import BEAM_SIZES, PayloadError, cache_jpeg, has_words, read_step_request
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.serving import (
    NO_EXAMPLES,
    ExamplesError,
    ModelLoadError,
    default_model_dirs,
    load_models,
    served_examples,
    serves_shipped_models_only,
)
from captioning.shipped import OUT_OF_DOMAIN_EXAMPLE, WEB_DIR, example_photos

CURRENT, OTHER = "attending", "word"  # HighlightedText categories of /step's chips: the shown word, the others
# Gradio writes uploads and /step's heatmaps to its temp folder: every 30 min, delete this app's files older than 1 h.
DELETE_CACHE = (1800, 3600)
STARTUP_INTERRUPTED = "interrupted during start-up; nothing is being served"  # Ctrl-C before the demo serves
# How the demo is launched, besides address and login. Gradio's run history is off: it rewrites every past call, its
# payload included, into the browser's localStorage at each message of each call (the page slows with every
# caption), and it would keep visitors' photos' captions in their browser.
LAUNCH_SETTINGS = {"run_history": False}
# Every setting a hosted copy needs can come from the environment too (flag -> variable; a flag on the command line
# wins): a Hugging Face Space runs `python app.py` with no arguments, and sets GRADIO_SERVER_NAME/PORT itself.
ENVIRONMENT = {
    "--model": "CAPTIONING_MODEL",
    "--host": "GRADIO_SERVER_NAME",
    "--port": "GRADIO_SERVER_PORT",
    "--root-path": "GRADIO_ROOT_PATH",
    "--auth": "CAPTIONING_AUTH",
    "--max-file-size": "CAPTIONING_MAX_FILE_SIZE",
    "--concurrency": "CAPTIONING_CONCURRENCY",
    "--queue-size": "CAPTIONING_QUEUE_SIZE",
    "--examples": "CAPTIONING_EXAMPLES",
}
SECRET_VARIABLES = frozenset({"CAPTIONING_AUTH"})  # never printed, not even in an error about their value

log = logging.getLogger("app")


def web_text(name: str) -> str:
    """A file of the page from assets/web/ (HTML, Markdown, CSS, JS)."""
    return (WEB_DIR / name).read_text(encoding="utf-8")


def page_head() -> str:
    """The <head> markup of the page's views: its style sheet and its script, inlined (no extra requests)."""
    return f"<style>{web_text('demo.css')}</style><script>{web_text('demo.js')}</script>"


def viewer_html() -> str:
    """The viewer's markup with the heatmap specification the page draws by (the one Python draws by too) and the
    messages the page shows as Python does (in data attributes: the page's script types neither)."""
    served = {"HEATMAP_SPEC": HEATMAP.to_page(), "PAGE_MESSAGES": {"empty_caption": EMPTY_CAPTION}}
    markup = web_text("viewer.html")
    for placeholder, value in served.items():
        markup = markup.replace(placeholder, html.escape(json.dumps(value), quote=True))
    return markup


def familiarity_html() -> str:
    """The line the page shows above the caption for a photo unlike the model's training photos, with the threshold
    it is shown below (captioning.familiarity owns both)."""
    note = web_text("familiarity.html").replace("UNFAMILIAR_BELOW", str(UNFAMILIAR_BELOW))
    return note.replace("UNFAMILIAR_NOTE", html.escape(UNFAMILIAR_NOTE))


def page_view(elem_id: str, template: str, on_load: str, head: str, value: str = "") -> gr.HTML:
    """A view the page's script draws: an assets/web template, mounted by `on_load` (JS) once it is on the page."""
    return gr.HTML(value, elem_id=elem_id, head=head, html_template=template, js_on_load=on_load)


def upload_path(component: gr.Image, payload) -> str | None:
    """Preprocess for the photo input: the uploaded file's path, with the file left unopened (see photo_input)."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # API callers may inline the image as a data URL
        try:
            return processing_utils.save_base64_to_cache(payload.url, component.GRADIO_CACHE)  # bytes, no decoding
        except Exception as error:
            raise visitor_error("Could not read this image: the data URL is not valid base64.", error) from None
    if payload.path is None:
        raise visitor_error(NO_PHOTO)
    return str(payload.path)


def photo_input(**kwargs) -> gr.Image:
    """gr.Image(type="filepath") whose handler gets the upload's path unopened: nothing is decoded until a handler
    calls read_upload (pixel limit checked from the header, friendly messages). An instance override,
    not a subclass: Gradio writes a .pyi stub next to any module that subclasses one of its components."""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = functools.partial(upload_path, image)
    return image


# event handlers: plain functions over captioning.handlers (the models are bound with functools.partial in
# build_demo), testable without a server; a RequestError reaches the visitor as gr.Error


def visitor_error(message: str, cause: BaseException | None = None) -> gr.Error:
    """A visitor's mistake as the gr.Error they read, logged as one line (with its cause, where there is one) and
    no traceback: the console's tracebacks are left to the server's own faults."""
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    log.info("refused a request: %s%s", message, detail)
    return gr.Error(message, print_exception=False)


def shown_to_visitor(handler):
    """handler, with a RequestError raised as gr.Error (the page shows its message, gradio_client raises it)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except RequestError as error:
            raise visitor_error(str(error), error.__cause__) from None

    return run


@shown_to_visitor
def caption_image(
    models: Models,
    default_beam: int,
    path: str | None,
    beam: float | None = None,
    model: str | None = None,
    *,
    cache: FeatureCache | None = None,
    for_page: bool = False,
) -> tuple[str, dict]:
    """/caption: run one model once; the caption text first, then the per-word data (handlers.caption_upload)."""
    return caption_upload(models, path, beam, model, default_beam=default_beam, cache=cache, for_page=for_page)


@shown_to_visitor
def compare_view(
    models: Models,
    default_beam: int,
    path: str | None,
    beam: float | None = None,
    enabled: bool = True,
    *,
    cache: FeatureCache | None = None,
) -> dict:
    """/compare: every served model's best caption of the photo (handlers.compare_captions); {} when compare mode
    is off or there is no photo."""
    if not enabled or not path:
        return {}
    return compare_captions(models, path, beam, default_beam=default_beam, cache=cache)


@shown_to_visitor
def live_caption(models: Models, frame: str | None, model: str | None = None) -> dict:
    """/live: one camera frame (a JPEG data URL) captioned with the live settings (handlers.caption_frame)."""
    return caption_frame(models, frame, model)


def warn(notes: list[str]) -> None:
    for note in notes:
        gr.Warning(note)


@shown_to_visitor
def probe_sentence(
    models: Models,
    path: str | None,
    text: str | None,
    model: str | None = None,
    *,
    cache: FeatureCache | None = None,
) -> dict:
    """/probe: how likely one model finds a typed sentence on the photo, word by word (teacher forcing): words,
    per-word log-probabilities, probabilities, ranks and unknown flags, gates, 14x14 maps (`alphas`, and packed
    `grids` as /caption's), the total log-probability, plus model and attention."""
    models = as_models(models)
    results, notes = probe_models(models, [pick_model(models, model)], path, text, cache)
    warn(notes)
    return results[0][0]


@shown_to_visitor
def page_probe(
    models: Models,
    path: str | None,
    text: str | None,
    model: str | None = None,
    compare: bool = False,
    *,
    cache: FeatureCache | None = None,
) -> tuple[dict, dict]:
    """The page's probe (handlers.page_probe): the chosen model's payload, and in compare mode every model's for the
    compare view (else the compare view is left as it is)."""
    chosen, compared, notes = handlers.page_probe(models, path, text, model, compare, cache=cache)
    warn(notes)
    return chosen, gr.skip() if compared is None else compared


@shown_to_visitor
def check_caption(
    models: Models,
    path: str | None,
    text: str | None,
    model: str | None = None,
    *,
    cache: FeatureCache | None = None,
    checks: FeatureCache | None = None,
) -> dict:
    """/check: for each word of `text` (empty: the model's own caption), its probability as is, with the cells it
    attended to hidden and with as many cells hidden elsewhere, the hidden cells and the gradient map
    (handlers.check_words)."""
    return check_words(models, path, text, model, cache=cache, checks=checks)


def render_step(data: dict | None, index) -> tuple[Image.Image, list[tuple[str, str]]]:
    """Word `index`'s heatmap image and chips from the per-word JSON alone (the model is not run)."""
    if not has_words(data):
        raise visitor_error("Caption an image first.")
    try:
        word = read_step_request(data, index)
    except PayloadError as error:
        message = "This caption's word data is damaged or incomplete. Please caption the image again."
        raise visitor_error(message, error) from None
    heatmap = word_overlay(word.image, word.alpha, word.attention)
    chips = [(w, CURRENT if i == word.index else OTHER) for i, w in enumerate(word.words)]
    return heatmap, chips


def step_data_input() -> gr.JSON:
    """/step's caption data, hidden: no value, and for the API page's example a caption of two words on a 2x2 photo
    (a real one is /caption's second output), not a whole caption."""
    photo = io.BytesIO()
    Image.new("RGB", (2, 2), "gray").save(photo, format="PNG")
    example = {
        "words": ["a", "dog"],
        "alphas": [[[0.7, 0.1], [0.1, 0.1]], [[0.1, 0.1], [0.1, 0.7]]],  # one grid per word (14x14 from /caption)
        "attention": "soft",
        "image": "data:image/png;base64," + base64.b64encode(photo.getvalue()).decode(),
    }
    field = gr.JSON(visible=False, label="caption data")
    field.example_payload = field.example_value = lambda: example  # an instance override, as in photo_input
    return field


def step(index: float, data: dict | None):
    """/step for API clients: word `index`'s heatmap (a file) and chips, from the per-word data (no model call)."""
    heatmap, chips = render_step(data, index)
    return cache_jpeg(heatmap, gr.utils.get_upload_folder()), chips


def build_demo(
    models: Models,
    beam_size: int = DEFAULT_BEAM_SIZE,
    concurrency: int = 2,
    examples: list[str] | None = None,
    cache_examples: bool | str = "lazy",
    flickr8k_notes: bool = False,
    model_thread: ModelThread | None = None,
) -> gr.Blocks:
    """The Blocks app around loaded captioners (one, or several by name; the first is the default).
    cache_examples: True (at launch, and the first example is on the page as it loads), "lazy" (on first use) or
    False. flickr8k_notes: the served models are the shipped Flickr8k ones (the page's note on the examples says so).
    model_thread: the thread every model call runs on (best the one that loaded the models; default: a new one).
    """
    model_thread = model_thread or ModelThread()
    models = as_models(models)
    names = list(models)
    examples = example_photos() if examples is None else examples
    # The examples cache is a CSV with the per-word JSON in one field: allow fields of a few MB (Python's csv module
    # refuses fields over 128 KB by default, which a detailed photo and 5 beam captions can pass).
    csv.field_size_limit(max(csv.field_size_limit(), 16 * 2**20))
    cache = FeatureCache()  # this demo's encoded photos: a probe of a captioned photo skips the encoder
    # every handler that runs a model runs it on model_thread: (path, beam, model) -> outputs
    run_model = model_thread.bind(functools.partial(caption_image, models, beam_size, cache=cache))
    run_page = functools.partial(run_model, for_page=True)  # the same, with the page's copy of the data

    def run_example(path: str | None, model: str | None = None, beam: float | None = None) -> tuple[str, dict]:
        """An example row (photo, model, beam size): what the examples cache stores, and what /load_example returns
        to API clients (the full data, as /caption's). Clicking an example sets the page's model and beam slider to
        the row's, so the slider shows the beam its cached caption used."""
        return run_model(path, beam, model)

    # The first example is part of the page itself (the components' initial values, computed once here), not filled
    # in by a page-load event: on a busy server such an event lands late and replaces the visitor's own photo.
    first_text, first_data = run_page(examples[0]) if examples and cache_examples is True else (None, None)
    head = page_head()
    with gr.Blocks(title="Show, Attend and Tell", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(web_text("intro.md"))
        with gr.Row():
            with gr.Column(scale=1) as left:
                image = photo_input(
                    value=examples[0] if first_data else None,
                    sources=["upload", "clipboard"],
                    label="Photo",
                    elem_id="image-input",
                )
                page_view("live-mode", web_text("live.html"), "window.satDemo.mountLive(element);", head)
                choice = gr.Radio(
                    names,
                    value=names[0],
                    label="Model",
                    elem_id="model-choice",
                    info="the model directories this demo serves",
                    visible=len(names) > 1,
                )
                compare = gr.Checkbox(
                    False,
                    label="Compare models",
                    elem_id="compare",
                    visible=len(names) > 1,
                    info="caption the photo (and score your sentence) with every model, one under the other",
                )
                beam = gr.Slider(
                    *BEAM_SIZES,
                    value=beam_size,
                    step=1,
                    label="Beam size",
                    info="1 = greedy (fastest); larger searches more captions",
                    elem_id="beam-size",
                )
                check = gr.Checkbox(
                    False,
                    label="Check attention",
                    elem_id="check",
                    info="for each word: does hiding where the model looked change it? (a few seconds per caption)",
                )
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=1):
                page_view("familiarity", familiarity_html(), "window.satDemo.mountFamiliarity(element);", head)
                text = gr.Textbox(first_text, label="Caption", interactive=False, elem_id="caption-text")
                with gr.Row(equal_height=True):
                    probe_text = gr.Textbox(
                        label="Your own caption",
                        elem_id="probe-text",
                        scale=4,
                        min_width=240,  # narrower (a phone): the button goes under the box
                        max_lines=1,
                        placeholder="type a sentence, press Enter",
                        info="how likely does the model find each of its words?",
                    )
                    probe_button = gr.Button("Score it", elem_id="probe-button", scale=1, min_width=90)
                # The first caption rides in the viewer's own value (read once when it mounts); later ones come
                # through the hidden JSON's change event, in the page.
                first = json.dumps(first_data) if first_data else ""
                page_view("viewer", viewer_html(), "window.satDemo.mount(element, props.value);", head, first)
                page_view("compare-view", web_text("compare.html"), "window.satDemo.mountCompare(element);", head)
        page_view("gallery-view", web_text("gallery.html"), "window.satDemo.mountGallery(element);", head)
        data = gr.JSON(first_data, visible=False, elem_id="attention-data")
        probe_data = gr.JSON(visible=False, elem_id="probe-data")  # a typed sentence's per-word data
        compare_data = gr.JSON(visible=False, elem_id="compare-data")  # every model's caption or probe, one row each
        outputs = [text, data]
        example_loads = []  # the event that fills in a clicked example's outputs
        if examples:
            with left:  # under the Caption button
                shelf = gr.Examples(
                    examples=[[path, names[0], beam_size] for path in examples],
                    inputs=[image, choice, beam],
                    outputs=outputs,
                    fn=run_example,
                    run_on_click=True,
                    cache_examples=bool(cache_examples),
                    cache_mode="lazy" if cache_examples == "lazy" else "eager",
                    preload=False,
                    example_labels=[Path(p).stem for p in examples],
                    label="Examples (click one)",
                    elem_id="examples",
                )
                if flickr8k_notes and any(Path(p).stem == OUT_OF_DOMAIN_EXAMPLE for p in examples):
                    gr.Markdown(web_text("examples_note.md"), elem_id="examples-note")
            if cache_examples:  # the queued event that loads a cached example's outputs (can be cancelled)
                example_loads.append(shelf.load_input_event)

        # Newest action wins: Caption drops a pending example fill, a new upload or example click drops a pending
        # caption; while one caption is pending (the status tracker shows its queue position), Caption is ignored.
        model_queue = {"concurrency_limit": concurrency, "concurrency_id": "model"}  # every event that runs a model
        page_only, latest = {**model_queue, "api_visibility": "private"}, {"trigger_mode": "always_last"}
        caption_inputs = [image, beam, choice]
        captioning = button.click(
            run_page, caption_inputs, outputs, **page_only, trigger_mode="once", cancels=example_loads
        )
        # A new photo, or none, takes the old photo's results off the page at once, caption text included (no model
        # call: Caption captions it); the hidden JSON is emptied, so that the next caption, whatever it is, is a change.
        for photo_event, reason in ((image.upload, "upload"), (image.clear, "removed")):
            clear_js = f"() => {{ window.satDemo.clear('{reason}'); return ['', null]; }}"
            photo_event(None, None, outputs, js=clear_js, cancels=[captioning, *example_loads])
        if examples:
            shelf.dataset.click(None, cancels=[captioning])
        # Every caption (button or example) reaches the page once, as a change of the JSON (its nonce is new), and
        # the page draws it from there: no further request, no server rendering.
        data.change(None, [data], None, js="(data) => { if (data) window.satDemo.show(data); }", show_progress="hidden")
        # API clients: the same caption with the full per-word data (nested `alphas` lists, as /step reads them).
        gr.Button(visible=False).click(run_model, caption_inputs, outputs, api_name="caption", **model_queue)
        # API only: one word's heatmap rendered by the server, for gradio_client users (a Number has no bounds). Its
        # caption data is a component of its own, with no value: the API page shows a short example, not a caption.
        index = gr.Number(visible=False, precision=0, label="word index")
        step_data = step_data_input()
        step_heatmap = gr.Image(visible=False, type="filepath", format="jpeg", label="heatmap")
        step_chips = gr.HighlightedText(visible=False, label="words")
        gr.Button(visible=False).click(
            step,
            [index, step_data],
            [step_heatmap, step_chips],
            api_name="step",
            concurrency_limit=8,
            concurrency_id="step",
        )

        # Your own caption: the page gets the chosen model's probe (and every model's in compare mode) and shows it
        # in the viewer, stepped like a caption with no further request; /probe is the same for API clients.
        page_probing = model_thread.bind(functools.partial(page_probe, models, cache=cache))
        probe_inputs = [image, probe_text, choice, compare]
        triggers = [probe_button.click, probe_text.submit]
        probing = gr.on(triggers, page_probing, probe_inputs, [probe_data, compare_data], **page_only, **latest)
        probing.success(
            None, [probe_data], None, js="(data) => { window.satDemo.showProbe(data); }", show_progress="hidden"
        )
        api_probing = model_thread.bind(functools.partial(probe_sentence, models, cache=cache))
        gr.Button(visible=False).click(api_probing, probe_inputs[:3], probe_data, api_name="probe", **model_queue)
        # Compare mode: switching it on captions the photo with every model; while it is on, the page asks again
        # (the hidden button) whenever it shows a caption of another photo.
        run_compare = model_thread.bind(functools.partial(compare_view, models, beam_size, cache=cache))
        compare_inputs = [image, beam, compare]
        compare.change(run_compare, compare_inputs, compare_data, **page_only, **latest)
        rerun = gr.Button(visible="hidden", elem_id="compare-run")
        rerun.click(run_compare, compare_inputs, compare_data, api_name="compare", **model_queue, **latest)
        compare_data.change(
            None, [compare_data], None, js="(data) => { window.satDemo.showCompare(data); }", show_progress="hidden"
        )
        # Attention check: while the switch is on, the page asks (the hidden button) once for each caption it shows
        # and keeps the answer, so stepping words makes no request; /check is the same for API clients.
        checks = FeatureCache()  # checked captions by model, photo and words
        check_text = gr.Textbox(visible=False, label="caption to check")
        check_data = gr.JSON(visible=False, elem_id="check-data")
        run_check = model_thread.bind(functools.partial(check_caption, models, cache=cache, checks=checks))
        check_inputs = [image, check_text, choice]
        check_run = gr.Button(visible="hidden", elem_id="check-run")
        ask = "(image, text, model) => window.satDemo.checkInputs(image, text, model)"  # the caption on screen
        check_run.click(run_check, check_inputs, check_data, js=ask, **page_only, **latest)
        check_data.change(None, [check_data], None, js="(data) => { window.satDemo.showCheck(data); }")
        check.change(None, [check], None, js="(on) => { window.satDemo.toggleCheck(on); }", show_progress="hidden")
        gr.Button(visible=False).click(run_check, check_inputs, check_data, api_name="check", **model_queue)
        # Live mode: the page's script (demo.js) posts camera frames to /live one at a time, the next once this
        # one's caption is back (no backlog), in the model queue like every caption.
        frame, frame_model = gr.Textbox(visible=False, label="frame"), gr.Textbox(visible=False, label="model")
        run_live = model_thread.bind(functools.partial(live_caption, models))
        gr.Button(visible=False).click(
            run_live, [frame, frame_model], gr.JSON(visible=False), api_name="live", **model_queue
        )
    return demo


# command line


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option's help says what it does, its allowed values and its default."""
    low, high = BEAM_SIZES
    parser = argparse.ArgumentParser(description="Show, Attend and Tell captioning demo (Gradio).")
    parser.add_argument(
        "--model",
        action=Repeatable,
        metavar="DIR",
        help="model directory (config.json, wordmap.json, model.safetensors), e.g. runs/x/best, or a shipped "
        "model's name (model, model_hard); repeat it to serve several (the page offers a choice, the first is the "
        "default) (default: assets/model, the shipped soft-attention model, and assets/model_hard, the "
        "hard-attention one, when it is there)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind: 127.0.0.1 serves this machine only, 0.0.0.0 the whole network (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=7860,
        help="TCP port to serve on, 1-65535 (default: %(default)s)",
    )
    parser.add_argument(
        "--root-path",
        type=root_path,
        default="",
        metavar="PATH",
        help="the path the demo is served at behind a reverse proxy that strips it, e.g. /caption for "
        "https://example.org/caption/ (default: none, served at /)",
    )
    parser.add_argument(
        "--share",
        action="store_true",
        help="also create a temporary public *.gradio.live link (default: off; needs internet)",
    )
    parser.add_argument(
        "--auth",
        type=auth_pair,
        action=Repeatable,
        metavar="USER:PASS",
        help="require this login on the page and the API; repeat it for several users (default: none; "
        "recommended with --share)",
    )
    parser.add_argument(
        "--beam-size",
        type=int,
        default=DEFAULT_BEAM_SIZE,
        choices=range(low, high + 1),
        metavar=f"{{{low}..{high}}}",
        help=f"the page's initial beam size, {low} (greedy, fastest) to {high} (default: %(default)s)",
    )
    parser.add_argument(
        "--max-file-size",
        type=file_size,
        default="10mb",
        metavar="SIZE",
        help="largest upload accepted, a number with kb, mb or gb, e.g. 500kb (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=2,
        metavar="N",
        help="caption requests handled at once, 1 or more; their model work takes turns on one model thread "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="requests allowed to wait, 1 or more; more are refused with 'Queue is full' (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-examples",
        choices=["eager", "lazy", "off"],
        default="eager",
        help="caption the example photos at start-up (eager: the first one is on the page at once), "
        "on first click (lazy) or never (off) (default: %(default)s)",
    )
    parser.add_argument(
        "--examples",
        metavar="DIR",
        help=f"the example photos: those in DIR (jpg, jpeg, png, webp; sorted by name), or '{NO_EXAMPLES}' for no "
        "examples (default: assets/examples while the shipped models are served, else none)",
    )
    name_variables(parser, ENVIRONMENT)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the settings it leaves out taken from the environment (ENVIRONMENT)."""
    return parse_with_environment(build_parser(), argv, ENVIRONMENT, SECRET_VARIABLES)


def port_number(value: str) -> int:
    """argparse type for --port: a whole number in 1..65535."""
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError("must be at most 65535")
    return number


def root_path(value: str) -> str:
    """argparse type for --root-path: empty, a path from /, or a full http(s) URL; without its trailing /."""
    if value and not value.startswith(("/", "http://", "https://")):
        raise argparse.ArgumentTypeError("must start with / (or be a full http:// or https:// URL)")
    return value.rstrip("/")


def file_size(value: str) -> str:
    """argparse type for --max-file-size: a whole number with b, kb, mb or gb, checked as Gradio reads it."""
    try:
        size = gr.utils._parse_file_size(value)
    except ValueError:
        size = None
    if not size:
        raise argparse.ArgumentTypeError("must be a whole number with b, kb, mb or gb, e.g. 10mb")
    return value


def auth_pair(value: str) -> tuple[str, str]:
    """argparse type for --auth USER:PASS."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("must look like USER:PASS")
    return user, password


def share_warning(share: bool, auth: tuple[str, str] | None) -> str | None:
    """What to print when --share would open the demo to anyone holding the link; None when it is safe."""
    if share and auth is None:
        return (
            "warning: --share without --auth: the public link is open to anyone who has it: they can use this "
            "demo, its API and your CPU. Add --auth USER:PASS to require a login."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return serve(args)
    except KeyboardInterrupt:  # Ctrl-C before the demo was serving (loading, caching the examples)
        return interrupted(STARTUP_INTERRUPTED)


def serve(args: argparse.Namespace) -> int:
    """Load the models, start the server and block until Ctrl-C; 2 when a model or the address is unusable."""
    directories, note = ([model_directory(d) for d in args.model], None) if args.model else default_model_dirs()
    if note:
        print(note, flush=True)
    model_thread = ModelThread()  # loads the models, then runs every model call of the demo
    try:
        examples = served_examples(args.examples, directories)
        models, notes = model_thread.run(load_models, directories)
    except (ExamplesError, ModelLoadError) as error:
        print(error, file=sys.stderr)
        return 2
    for line in notes:
        print(line, flush=True)
    if warning := share_warning(args.share, args.auth):
        print(warning, file=sys.stderr, flush=True)
    cache = {"eager": True, "lazy": "lazy", "off": False}[args.cache_examples]
    # A fresh examples cache per process: gradio keys its cache by component id, not by model, so a cache left by
    # another model (or beam size) would show stale captions.
    with tempfile.TemporaryDirectory(prefix="show-attend-tell-examples-") as cache_dir:
        os.environ.setdefault("GRADIO_EXAMPLES_CACHE", cache_dir)
        demo = build_demo(
            models,
            args.beam_size,
            args.concurrency,
            examples=examples,
            cache_examples=cache,
            flickr8k_notes=serves_shipped_models_only(directories),
            model_thread=model_thread,
        )
        demo.queue(max_size=args.queue_size)
        try:
            # quiet, and what Gradio prints anyway kept to the debug log: its hints name launch() arguments, and
            # offline its share-link failure is a page of advice on antivirus software; this app's lines follow.
            gradio_output = io.StringIO()
            try:
                with contextlib.redirect_stdout(gradio_output):
                    _, local_url, share_url = demo.launch(
                        **LAUNCH_SETTINGS,
                        server_name=args.host,
                        server_port=args.port,
                        root_path=args.root_path,
                        share=args.share,
                        auth=args.auth,
                        quiet=True,
                        max_file_size=args.max_file_size,
                        prevent_thread_lock=True,
                    )
            except OSError as error:  # port taken, address not available
                print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
                return 2
            finally:
                log.debug("gradio's launch output: %s", gradio_output.getvalue().strip())
            print(f"* Running on local URL:  {local_url}", flush=True)
            if share_url:
                print(f"* Running on public URL: {share_url}", flush=True)
            elif args.share:
                print(
                    "could not create a public share link: --share needs internet (Gradio's relay, gradio.live); "
                    f"serving locally at {local_url}",
                    file=sys.stderr,
                )
            else:
                print(
                    "* To create a public link, rerun with --share (and --auth USER:PASS to require a login).",
                    flush=True,
                )
            demo.block_thread()
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
