"""The Gradio pieces the demo's page is built from: its views over assets/web/ templates, its inputs (the photo, the
controls, /step's data) and the examples shelf, and `answered`, which turns a captioning.handlers function into a
Gradio event function."""

from __future__ import annotations

import base64
import csv
import functools
import html
import io
import json
import logging
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

from captioning.familiarity import UNFAMILIAR_BELOW, UNFAMILIAR_NOTE
from captioning.handlers import EMPTY_CAPTION, NO_PHOTO, Noted, RequestError
from captioning.heatmap import HEATMAP
from captioning.payload import BEAM_SIZES
from captioning.shipped import WEB_DIR

CSV_FIELD_LIMIT = 16 * 2**20  # bytes: an examples-cache field holds a caption's per-word JSON

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


def view(elem_id: str, template: str, on_load: str, head: str, value: str = "") -> gr.HTML:
    """A view the page's script draws: an assets/web template, mounted by `on_load` (JS) once it is on the page."""
    return gr.HTML(value, elem_id=elem_id, head=head, html_template=template, js_on_load=on_load)


def allow_large_csv_fields() -> None:
    """Let Python's csv module read fields of a few MB: Gradio's examples cache is a CSV with a caption's per-word
    JSON in one field, and the module refuses fields over 128 KB by default (a detailed photo, 5 beam captions)."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))


def visitor_error(message: str, cause: BaseException | None = None) -> gr.Error:
    """A visitor's mistake as the gr.Error they read, logged as one line (with its cause, where there is one) and
    no traceback: the console's tracebacks are left to the server's own faults."""
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    log.info("refused a request: %s%s", message, detail)
    return gr.Error(message, print_exception=False)


def answered(handler):
    """A captioning.handlers function as a Gradio event function (bind its models and caches with
    functools.partial): a RequestError reaches the visitor as gr.Error, a Noted answer's notes as gr.Warning, and a
    None among several outputs leaves that output as the page has it."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            answer = handler(*args, **kwargs)
        except RequestError as error:
            raise visitor_error(str(error), error.__cause__) from None
        if isinstance(answer, Noted):
            for note in answer.notes:
                gr.Warning(note)
            answer = answer.answer
        return tuple(gr.skip() if output is None else output for output in answer) if type(answer) is tuple else answer

    return run


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


def model_choice(names: list[str]) -> gr.Radio:
    """The served models by name, the first chosen; shown only when there is a choice."""
    return gr.Radio(
        names,
        value=names[0],
        label="Model",
        elem_id="model-choice",
        info="the model directories this demo serves",
        visible=len(names) > 1,
    )


def compare_switch(names: list[str]) -> gr.Checkbox:
    """Compare mode's switch, off; shown only when there are models to compare."""
    return gr.Checkbox(
        False,
        label="Compare models",
        elem_id="compare",
        visible=len(names) > 1,
        info="caption the photo (and score your sentence) with every model, one under the other",
    )


def beam_slider(beam_size: int) -> gr.Slider:
    """The beam size, payload.BEAM_SIZES' range, starting at `beam_size`."""
    return gr.Slider(
        *BEAM_SIZES,
        value=beam_size,
        step=1,
        label="Beam size",
        info="1 = greedy (fastest); larger searches more captions",
        elem_id="beam-size",
    )


def check_switch() -> gr.Checkbox:
    """The attention check's switch, off."""
    return gr.Checkbox(
        False,
        label="Check attention",
        elem_id="check",
        info="for each word: does hiding where the model looked change it? (a few seconds per caption)",
    )


def probe_box() -> tuple[gr.Textbox, gr.Button]:
    """The box a visitor types their own caption in, and its button, in one row."""
    with gr.Row(equal_height=True):
        text = gr.Textbox(
            label="Your own caption",
            elem_id="probe-text",
            scale=4,
            min_width=240,  # narrower (a phone): the button goes under the box
            max_lines=1,
            placeholder="type a sentence, press Enter",
            info="how likely does the model find each of its words?",
        )
        return text, gr.Button("Score it", elem_id="probe-button", scale=1, min_width=90)


def examples_shelf(examples: list[str], row: list, inputs: list, outputs: list, fn, cache: bool | str) -> gr.Examples:
    """The example photos, each a row of `inputs` (photo, then `row`'s values) that `fn` captions into `outputs`
    when clicked; cache: True (at launch), "lazy" (on first use) or False."""
    return gr.Examples(
        examples=[[path, *row] for path in examples],
        inputs=inputs,
        outputs=outputs,
        fn=fn,
        run_on_click=True,
        cache_examples=bool(cache),
        cache_mode="lazy" if cache == "lazy" else "eager",
        preload=False,
        example_labels=[Path(p).stem for p in examples],
        label="Examples (click one)",
        elem_id="examples",
    )
