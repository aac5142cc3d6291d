"""Demo latency as a visitor and an API client see it, beside the model's and the handler's own time in the same run:
Caption click -> caption and first heatmap painted (headless Chromium), `/caption` through gradio_client, and word
click -> that word's heatmap painted; medians (and p90) for a 1024x768 JPEG and the shipped model.

    python -m bench.browser_latency                           # serves assets/model in-process
    python -m bench.browser_latency --rounds 10 --clicks 30 --api-calls 20
    python -m bench.browser_latency --instant                 # the model answers at once: page + server + Gradio

Page times are taken inside the page (performance.now()): from the click to the first frame painted after the
caption text and the heatmap canvas show the new result. Targets, as ratios to this machine's own model time:
browser Caption <= model + 60 ms (median), gradio_client /caption <= handler + 40 ms (p50), word click <= 30 ms.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium")
# headless in a container, no background traffic (the tests launch Chromium the same way)
CHROMIUM_ARGS = (
    "--no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking --disable-component-update "
    "--disable-sync --no-first-run --disable-quic"
).split()

# In-page helpers: the heatmap's current identity, and "click, then wait until cond holds and a frame is painted".
PAGE_JS = """() => {
  window.benchHeatmap = () => {
    const canvas = document.querySelector('#heatmap canvas');
    if (canvas) return {kind: 'canvas', key: canvas.dataset.version || '', word: canvas.dataset.word ?? ''};
    const img = document.querySelector('#heatmap img');
    return {kind: 'img', key: img && img.complete && img.naturalWidth > 0 ? img.src : '', word: ''};
  };
  window.benchCaption = () => document.querySelector('#caption-text textarea')?.value || '';
  window.benchWords = () => [...document.querySelectorAll('#words [role=button], #words .token')];
  window.benchTime = (click, cond) => new Promise(resolve => {
    const t0 = performance.now();
    window.benchMarks = {click: performance.timeOrigin + t0, shows: 0};
    click();
    // checked once per frame (before it is painted): polling faster would take the page's own time; the frame
    // that first shows the result is painted before the timeout set in its callback runs
    const poll = () => cond() ? setTimeout(() => {
      window.benchMarks.painted = performance.timeOrigin + performance.now();
      resolve(performance.now() - t0);
    }, 0) : requestAnimationFrame(poll);
    requestAnimationFrame(poll);
  });
  const show = window.satDemo.show;  // when the page is handed the caption (and how often), in epoch ms
  window.satDemo.show = data => {
    const marks = window.benchMarks || {};
    marks.shows = (marks.shows || 0) + 1;
    if (!marks.show) marks.show = performance.timeOrigin + performance.now();
    return show(data);
  };
}"""

CAPTION_JS = """([before, text]) => window.benchTime(() => document.querySelector('#caption-button').click(), () => {
  const h = window.benchHeatmap();
  return window.benchCaption() === text && h.key && h.key !== before && (h.kind === 'img' || h.word === '0');
})"""

WORD_JS = """([i, before]) => window.benchTime(() => window.benchWords()[i].click(), () => {
  const h = window.benchHeatmap();
  return h.key && h.key !== before && (h.kind === 'img' || h.word === String(i));
})"""


def test_photos(directory: Path) -> list[Path]:
    """Two different 1024x768 JPEGs (scikit-image's coffee and astronaut, quality 90): alternating them makes every
    Caption click produce a new result."""
    from skimage import data

    paths = []
    for name, pixels in (("coffee", data.coffee()), ("astronaut", data.astronaut())):
        path = directory / f"{name}_1024x768.jpg"
        Image.fromarray(pixels).convert("RGB").resize((1024, 768), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def summary(ms: list[float]) -> str:
    ordered = sorted(ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):6.1f} ms   p90 {p90:6.1f} ms   (n={len(ordered)})"


def upload(page, photo: Path) -> None:
    """Put `photo` in the photo input and wait until the page shows it (the upload is done)."""
    page.locator("#image-input input[type=file]").set_input_files(str(photo))
    page.wait_for_function(
        "name => (document.querySelector('#image-input img')?.src || '').includes(name)", arg=photo.stem
    )
    page.wait_for_timeout(1000)  # a visitor takes a moment between choosing a photo and pressing Caption


class Clock:
    """Per-request timing: the server's handler wraps each /caption call (handler ms), and the model's parts called
    inside it (decoding the upload, encoding, beam search) add up to that request's model ms."""

    def __init__(self):
        self.model, self.handler, self.running = [], [], 0.0
        self.spans = []  # (start, end) of each request's handler, epoch ms: lines up with the page's marks

    def part(self, method):
        """method, its wall time added to the running request's model time."""

        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.running += (time.perf_counter() - start) * 1000

        return run

    def request(self, handler):
        """handler, its wall time and its model parts' time appended to the logs when it returns."""

        def run(*args, **kwargs):
            self.running, start, epoch = 0.0, time.perf_counter(), time.time() * 1000
            try:
                return handler(*args, **kwargs)
            finally:
                self.handler.append((time.perf_counter() - start) * 1000)
                self.model.append(self.running)
                self.spans.append((epoch, epoch + self.handler[-1]))

        return run


def measure(url: str, photos: list[Path], rounds: int, clicks: int, clock: Clock):
    """(one record per measured Caption click, word-click ms, page kind), in one headless Chromium page. A record
    holds the click's total ms, the page's marks (epoch ms: click, show, painted; shows: how often the page was
    handed the caption) and, for an in-process server, that request's model ms, handler ms and handler span."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#image-input input[type=file]", state="attached")
        page.wait_for_function("() => !!window.satDemo")
        page.evaluate(PAGE_JS)
        expected, records, word_ms = {}, [], []
        for r in range(rounds + 2):  # two warm-up rounds learn each photo's caption
            photo = photos[r % len(photos)]
            upload(page, photo)
            before = page.evaluate("() => window.benchHeatmap().key")
            if photo not in expected:
                page.click("#caption-button")
                page.wait_for_function(
                    "b => { const h = window.benchHeatmap(); return h.key && h.key !== b; }", arg=before
                )
                page.wait_for_timeout(500)
                expected[photo] = page.evaluate("() => window.benchCaption()")
                continue
            served = len(clock.handler)
            record = {"total": page.evaluate(CAPTION_JS, [before, expected[photo]])}
            page.wait_for_timeout(300)  # a second hand-over of the same caption would land by now
            record["marks"] = page.evaluate("() => window.benchMarks")
            if len(clock.handler) == served + 1:
                record.update(model=clock.model[-1], handler=clock.handler[-1], span=clock.spans[-1])
            records.append(record)
        n_words = page.evaluate("() => window.benchWords().length")
        kind = page.evaluate("() => window.benchHeatmap().kind")
        for c in range(clicks):
            i = (c + 1) % n_words
            before = page.evaluate("() => window.benchHeatmap().key")
            word_ms.append(page.evaluate(WORD_JS, [i, before]))
            page.wait_for_timeout(150)  # a visitor's pace: each click is measured on an idle page
        browser.close()
    return records, word_ms, f"{kind} heatmap, {n_words} words"


def measure_api(url: str, photos: list[Path], calls: int, clock: Clock) -> tuple[list[dict], dict]:
    """(one record per /caption call through gradio_client, one at a time, after a warm-up call per photo: the
    client's ms, and for an in-process server that call's model and handler ms; the last call's data)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for photo in photos:
        client.predict(handle_file(str(photo)), 3, api_name="/caption")
    records, data = [], None
    for c in range(calls):
        served, start = len(clock.handler), time.perf_counter()
        _, data = client.predict(handle_file(str(photos[c % len(photos)])), 3, api_name="/caption")
        record = {"total": (time.perf_counter() - start) * 1000}
        if len(clock.handler) == served + 1:
            record.update(model=clock.model[-1], handler=clock.handler[-1])
        records.append(record)
    return records, data


def measure_api_floor(photos: list[Path], calls: int, data: dict) -> list[float]:
    """gradio_client's own cost on this machine: ms per call of a Gradio app with /caption's inputs and outputs
    whose handler returns `data` at once (upload, queue, messages, client), called as measure_api calls /caption."""
    import gradio as gr
    from gradio_client import Client, handle_file

    from captioning.cli import launch

    with gr.Blocks() as floor:
        inputs = [gr.Image(type="filepath"), gr.Slider(1, 5, value=3), gr.Radio(["model"], value="model")]
        outputs = [gr.Textbox(), gr.JSON(visible=False)]
        gr.Button().click(lambda *_: (data["caption"], data), inputs, outputs, api_name="caption")
    floor.queue(max_size=64)
    _, url, _ = floor.launch(**launch.LAUNCH_SETTINGS, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        for photo in photos:
            client.predict(handle_file(str(photo)), 3, api_name="/caption")
        times = []
        for c in range(calls):
            start = time.perf_counter()
            client.predict(handle_file(str(photos[c % len(photos)])), 3, api_name="/caption")
            times.append((time.perf_counter() - start) * 1000)
        return times
    finally:
        floor.close()


class Instant:
    """A captioner that answers the bench's photos at once with the captions the real model gave them (computed
    beforehand): what is left of a Caption click is the page, the server and Gradio."""

    def __init__(self, captioner, photos: list[Path], beam: int = 3):
        from captioning.preprocess import load_image

        self.config, self.word_map, self.answers = captioner.config, captioner.word_map, {}
        for photo in photos:
            image = load_image(photo)
            features = captioner.encode(captioner.image_batch(image))  # (1, 196, C)
            self.answers[self.key(image)] = captioner.caption_pools(features, beam_size=beam)[0]

    training = False  # the encoder runs in eval mode (probe.evaluating): a stand-in has nothing to switch

    def train(self, mode: bool = True):
        return self

    eval = train

    @staticmethod
    def key(image) -> tuple:
        return image.size, image.getpixel((10, 10))

    def image_batch(self, image):
        return self.key(image)

    def encode(self, key):
        return key

    def caption_pools(self, key, beam_size: int = 3):
        return [self.answers[key]]


def serve(model: str, clock: Clock, instant_photos: list[Path] | None = None):
    """The demo with `model` on a free local port, examples off and no feature cache (every click runs the model),
    each /caption request timed by `clock`; with instant_photos, an Instant captioner: (demo, url)."""
    from captioning import handlers
    from captioning.cli import app, launch
    from captioning.model_thread import ModelThread
    from captioning.serving import load_captioner

    model_thread = ModelThread()  # as app.py serves: loaded on the thread that then runs every model call
    captioner, note = model_thread.run(load_captioner, model, fastest_encoder=True)
    if note:
        print(note)
    if instant_photos:
        captioner = model_thread.run(Instant, captioner, instant_photos)
    # the model's parts, as the handler calls them (build_demo binds the modules' functions)
    handlers.read_upload = clock.part(handlers.read_upload)
    handlers.probing.image_features = clock.part(handlers.probing.image_features)
    captioner.caption_pools = clock.part(captioner.caption_pools)
    handlers.caption = clock.request(handlers.caption)
    app.FeatureCache = functools.partial(handlers.FeatureCache, 0)  # keeps nothing: a visitor's new photo each time
    demo = app.build_demo(captioner, cache_examples=False, model_thread=model_thread)
    demo.queue(max_size=64)
    _, url, _ = demo.launch(**launch.LAUNCH_SETTINGS, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url


def standalone_ms(model: str, calls: int) -> list[float]:
    """The same handler work (handlers.caption on the same photo, beam 3) in a standalone process, loaded and
    called on its main thread (bench.model_thread's "main" way)."""
    command = [sys.executable, "-m", "bench.model_thread", "--way", "main", "--model", model, "--calls", str(calls)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [float(ms) for ms in out.strip().splitlines()[-1].split()]


def column(records: list[dict], key) -> list[float]:
    return [key(r) for r in records]


def report(
    records: list[dict], word_ms: list[float], api: list[dict], floor: list[float], kind: str, instant: bool
) -> None:
    """Print the figures side by side: totals, model and handler times, where a click's time went, the targets."""
    print(
        f"page: {kind}; photo 1024x768 JPEG, beam 3 (the page's default)"
        f"{'; instant model (captions computed beforehand)' if instant else ''}"
    )
    print(f"Caption click -> caption + first heatmap painted   {summary(column(records, lambda r: r['total']))}")
    timed = [r for r in records if "model" in r]
    if timed:
        print(f"  the model (decode, encode, search; in the server) {summary(column(timed, lambda r: r['model']))}")
        print(f"  the handler (the model + payload)                {summary(column(timed, lambda r: r['handler']))}")
        print("  where the rest went (epoch ms of page and server, same machine):")
        rows = (
            ("click -> handler starts (request, queue, preprocess)", lambda r: r["span"][0] - r["marks"]["click"]),
            ("handler outside the model (payload)", lambda r: r["handler"] - r["model"]),
            (
                "handler ends -> page is handed the data (postprocess, JSON, SSE, Svelte)",
                lambda r: r["marks"]["show"] - r["span"][1],
            ),
            ("page handed the data -> heatmap painted", lambda r: r["marks"]["painted"] - r["marks"]["show"]),
        )
        for label, key in rows:
            print(f"    {label:<74} {summary(column(timed, key))}")
    shows = column(records, lambda r: r["marks"].get("shows", 0))
    print(f"  the page was handed each caption {min(shows)}-{max(shows)} time(s)")
    print(f"word click    -> its heatmap painted               {summary(word_ms)}")
    api_timed = [r for r in api if "handler" in r]
    if api:
        print(f"/caption via gradio_client                        {summary(column(api, lambda r: r['total']))}")
    if api_timed:
        print(f"  of which the handler                            {summary(column(api_timed, lambda r: r['handler']))}")
        print(
            f"  the rest (client, HTTP, queue, Gradio)          "
            f"{summary(column(api_timed, lambda r: r['total'] - r['handler']))}"
        )
    if floor:
        print(f"  gradio_client's floor: the same call to an app that answers at once  {summary(floor)}")
    if timed and api_timed:
        page_over = statistics.median(column(timed, lambda r: r["total"] - r["model"]))
        api_over = statistics.median(column(api_timed, lambda r: r["total"] - r["handler"]))
        word = statistics.median(word_ms)
        if floor:
            print(f"  /caption's rest beyond the floor: {api_over - statistics.median(floor):.0f} ms")
        print(
            "targets (same run): "
            f"browser - model {page_over:.0f} ms (<= 60: {'met' if page_over <= 60 else 'NOT met'}); "
            f"client - handler {api_over:.0f} ms (<= 40: {'met' if api_over <= 40 else 'NOT met'}); "
            f"word {word:.0f} ms (<= 30: {'met' if word <= 30 else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running demo; default: serve --model in-process")
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--rounds", type=int, default=10, help="measured Caption clicks (default: %(default)s)")
    parser.add_argument("--clicks", type=int, default=30, help="measured word clicks (default: %(default)s)")
    parser.add_argument(
        "--api-calls", type=int, default=20, help="measured /caption calls through gradio_client (default: %(default)s)"
    )
    parser.add_argument(
        "--instant",
        action="store_true",
        help="answer with captions computed beforehand: times the page, server and Gradio alone",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the in-process server, 0 = torch's default (default: %(default)s)",
    )
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photos = test_photos(Path(tempfile.mkdtemp(prefix="browser-latency-")))
    demo, url, clock = None, args.url, Clock()
    if not url:
        demo, url = serve(args.model, clock, photos if args.instant else None)
    try:
        records, word_ms, kind = measure(url, photos, args.rounds, args.clicks, clock)
        api, data = measure_api(url, photos, args.api_calls, clock) if args.api_calls else ([], None)
    finally:
        if demo is not None:
            demo.close()
    floor = measure_api_floor(photos, args.api_calls, data) if data else []
    report(records, word_ms, api, floor, kind, args.instant)
    if not args.url and not args.instant:
        alone, served = standalone_ms(args.model, 20), [r["handler"] for r in records + api if "handler" in r]
        ratio = statistics.median(served) / statistics.median(alone)
        print(f"/caption's handler in the server (page and API calls)  {summary(served)}")
        print(f"the same work in a standalone process (main thread)     {summary(alone)}")
        verdict = "met" if ratio <= 1.15 else "NOT met"
        print(f"target (same run): in-server handler <= 1.15 x standalone: {verdict} (x{ratio:.2f})")


if __name__ == "__main__":
    main()
