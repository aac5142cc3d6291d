"""The Gradio demo: caption a photo, then step through the words to see where the model looked for each one.

    python app.py                       # serves assets/model and assets/model_hard on http://127.0.0.1:7860
    python app.py --model runs/x/best --model runs/y/best --host 0.0.0.0 --auth me:secret

Gradio wiring only: the command line is built from captioning.cli.args, the page's pieces from captioning.cli.page,
and what each endpoint computes is captioning.handlers' function of the same name (/caption -> handlers.caption);
the page's HTML, style and script are in assets/web/.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr

from captioning import handlers, serving
from captioning.cli import page
from captioning.cli.args import (
    CONCURRENCY,
    add_address_flags,
    add_beam_size_flag,
    add_examples_flags,
    add_load_flags,
    add_model_flag,
    interrupted,
    make_parser,
)
from captioning.cli.environment import name_variables, parse_with_environment
from captioning.cli.launch import launch, share_warning
from captioning.handlers import FeatureCache, Models, as_models
from captioning.model import model_directory
from captioning.model_thread import ModelThread
from captioning.payload import BEAM_SIZES
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.shipped import OUT_OF_DOMAIN_EXAMPLE, example_photos

# Gradio writes uploads and /step's heatmaps to its temp folder: every 30 min, delete this app's files older than 1 h.
DELETE_CACHE = (1800, 3600)
STARTUP_INTERRUPTED = "interrupted during start-up; nothing is being served"  # Ctrl-C before the demo serves
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


def build_demo(
    models: Models,
    beam_size: int = DEFAULT_BEAM_SIZE,
    concurrency: int = CONCURRENCY,
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
    page.allow_large_csv_fields()
    beams = {"default_beam": beam_size}  # the beam a request without one gets
    cache = FeatureCache()  # this demo's encoded photos: a probe of a captioned photo skips the encoder

    def endpoint(handler, **bound):
        """A captioning.handlers function as an event function with the models (and `bound`) bound, on model_thread."""
        return model_thread.bind(functools.partial(page.answered(handler), models, **bound))

    caption = endpoint(handlers.caption, **beams, cache=cache)  # (path, beam, model) -> (text, data)
    page_caption = functools.partial(caption, for_page=True)  # the same, with the page's copy of the data

    def run_example(path: str | None, model: str | None = None, beam: float | None = None) -> tuple[str, dict]:
        """An example row (photo, model, beam size): what the examples cache stores, and what /load_example returns
        to API clients (the full data, as /caption's). Clicking an example sets the page's model and beam slider to
        the row's, so the slider shows the beam its cached caption used."""
        return caption(path, beam, model)

    # The first example is part of the page itself (the components' initial values, computed once here), not filled
    # in by a page-load event: on a busy server such an event lands late and replaces the visitor's own photo.
    first_text, first_data = page_caption(examples[0]) if examples and cache_examples is True else (None, None)
    head = page.page_head()
    with gr.Blocks(title="Show, Attend and Tell", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(page.web_text("intro.md"))
        with gr.Row():
            with gr.Column(scale=1) as left:
                image = page.photo_input(
                    value=examples[0] if first_data else None,
                    sources=["upload", "clipboard"],
                    label="Photo",
                    elem_id="image-input",
                )
                page.view("live-mode", page.web_text("live.html"), "window.satDemo.mountLive(element);", head)
                choice, compare_on = page.model_choice(names), page.compare_switch(names)
                beam, check_on = page.beam_slider(beam_size), page.check_switch()
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=1):
                page.view("familiarity", page.familiarity_html(), "window.satDemo.mountFamiliarity(element);", head)
                text = gr.Textbox(first_text, label="Caption", interactive=False, elem_id="caption-text")
                probe_text, probe_button = page.probe_box()
                # The first caption rides in the viewer's own value (read once when it mounts); later ones come
                # through the hidden JSON's change event, in the page.
                first = json.dumps(first_data) if first_data else ""
                page.view("viewer", page.viewer_html(), "window.satDemo.mount(element, props.value);", head, first)
                page.view("compare-view", page.web_text("compare.html"), "window.satDemo.mountCompare(element);", head)
        page.view("gallery-view", page.web_text("gallery.html"), "window.satDemo.mountGallery(element);", head)
        data = gr.JSON(first_data, visible=False, elem_id="attention-data")
        probe_data = gr.JSON(visible=False, elem_id="probe-data")  # a typed sentence's per-word data
        compare_data = gr.JSON(visible=False, elem_id="compare-data")  # every model's caption or probe, one row each
        outputs = [text, data]
        example_loads = []  # the event that fills in a clicked example's outputs
        if examples:
            with left:  # under the Caption button
                row, inputs = [names[0], beam_size], [image, choice, beam]
                shelf = page.examples_shelf(examples, row, inputs, outputs, run_example, cache_examples)
                if flickr8k_notes and any(Path(p).stem == OUT_OF_DOMAIN_EXAMPLE for p in examples):
                    gr.Markdown(page.web_text("examples_note.md"), elem_id="examples-note")
            if cache_examples:  # the queued event that loads a cached example's outputs (can be cancelled)
                example_loads.append(shelf.load_input_event)

        # Newest action wins: Caption drops a pending example fill, a new upload or example click drops a pending
        # caption; while one caption is pending (the status tracker shows its queue position), Caption is ignored.
        model_queue = {"concurrency_limit": concurrency, "concurrency_id": "model"}  # every event that runs a model
        page_only, latest = {**model_queue, "api_visibility": "private"}, {"trigger_mode": "always_last"}
        caption_inputs = [image, beam, choice]
        captioning = button.click(
            page_caption, caption_inputs, outputs, **page_only, trigger_mode="once", cancels=example_loads
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
        gr.Button(visible=False).click(caption, caption_inputs, outputs, api_name="caption", **model_queue)
        # API only: one word's heatmap rendered by the server, for gradio_client users (a Number has no bounds). Its
        # caption data is a component of its own, with no value: the API page shows a short example, not a caption.
        index = gr.Number(visible=False, precision=0, label="word index")
        step_data = page.step_data_input()
        step_heatmap = gr.Image(visible=False, type="filepath", format="jpeg", label="heatmap")
        step_chips = gr.HighlightedText(visible=False, label="words")
        step = functools.partial(page.answered(handlers.step), folder=gr.utils.get_upload_folder())
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
        page_probe = endpoint(handlers.page_probe, cache=cache)
        probe_inputs = [image, probe_text, choice, compare_on]
        triggers = [probe_button.click, probe_text.submit]
        probing = gr.on(triggers, page_probe, probe_inputs, [probe_data, compare_data], **page_only, **latest)
        probing.success(
            None, [probe_data], None, js="(data) => { window.satDemo.showProbe(data); }", show_progress="hidden"
        )
        probe = endpoint(handlers.probe, cache=cache)
        gr.Button(visible=False).click(probe, probe_inputs[:3], probe_data, api_name="probe", **model_queue)
        # Compare mode: switching it on captions the photo with every model; while it is on, the page asks again
        # (the hidden button) whenever it shows a caption of another photo.
        compare = endpoint(handlers.compare, **beams, cache=cache)
        compare_inputs = [image, beam, compare_on]
        compare_on.change(compare, compare_inputs, compare_data, **page_only, **latest)
        rerun = gr.Button(visible="hidden", elem_id="compare-run")
        rerun.click(compare, compare_inputs, compare_data, api_name="compare", **model_queue, **latest)
        compare_data.change(
            None, [compare_data], None, js="(data) => { window.satDemo.showCompare(data); }", show_progress="hidden"
        )
        # Attention check: while the switch is on, the page asks (the hidden button) once for each caption it shows
        # and keeps the answer, so stepping words makes no request; /check is the same for API clients.
        checks = FeatureCache()  # checked captions by model, photo and words
        check_text = gr.Textbox(visible=False, label="caption to check")
        check_data = gr.JSON(visible=False, elem_id="check-data")
        check = endpoint(handlers.check, cache=cache, checks=checks)
        check_inputs = [image, check_text, choice]
        check_run = gr.Button(visible="hidden", elem_id="check-run")
        ask = "(image, text, model) => window.satDemo.checkInputs(image, text, model)"  # the caption on screen
        check_run.click(check, check_inputs, check_data, js=ask, **page_only, **latest)
        check_data.change(None, [check_data], None, js="(data) => { window.satDemo.showCheck(data); }")
        check_on.change(
            None, [check_on], None, js="(on) => { window.satDemo.toggleCheck(on); }", show_progress="hidden"
        )
        gr.Button(visible=False).click(check, check_inputs, check_data, api_name="check", **model_queue)
        # Live mode: the page's script (demo.js) posts camera frames to /live one at a time, the next once this
        # one's caption is back (no backlog), in the model queue like every caption.
        frame, frame_model = gr.Textbox(visible=False, label="frame"), gr.Textbox(visible=False, label="model")
        live = endpoint(handlers.live)
        gr.Button(visible=False).click(
            live, [frame, frame_model], gr.JSON(visible=False), api_name="live", **model_queue
        )
    return demo


# command line


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option's help says what it does, its allowed values, its default and its variable."""
    parser = make_parser("python app.py", "Show, Attend and Tell captioning demo (Gradio).")
    add_model_flag(parser, several=True)
    add_address_flags(parser)
    add_beam_size_flag(parser, BEAM_SIZES)
    add_load_flags(parser)
    add_examples_flags(parser)
    name_variables(parser, ENVIRONMENT)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the settings it leaves out taken from the environment (ENVIRONMENT)."""
    return parse_with_environment(build_parser(), argv, ENVIRONMENT, SECRET_VARIABLES)


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
    directories, note = ([model_directory(d) for d in args.model], None) if args.model else serving.default_model_dirs()
    if note:
        print(note, flush=True)
    model_thread = ModelThread()  # loads the models, then runs every model call of the demo
    try:
        examples = serving.served_examples(args.examples, directories)
        models, notes = model_thread.run(serving.load_models, directories)
    except (serving.ExamplesError, serving.ModelLoadError) as error:
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
            flickr8k_notes=serving.serves_shipped_models_only(directories),
            model_thread=model_thread,
        )
        demo.queue(max_size=args.queue_size)
        return launch(demo, args)


if __name__ == "__main__":
    sys.exit(main())
