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
import tempfile
import time
from pathlib import Path

from PIL import Image

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

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
    click();
    const poll = () => cond() ? requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - t0), 0))
                              : setTimeout(poll, 0);
    poll();
  });
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
    page.wait_for_function("name => (document.querySelector('#image-input img')?.src || '').includes(name)",
                           arg=photo.stem)
    page.wait_for_timeout(1000)  # a visitor takes a moment between choosing a photo and pressing Caption


def measure(url: str, photos: list[Path], rounds: int, clicks: int, log: list[float], handler_log: list[float]):
    """(caption ms, model ms and handler ms of each of those captions, word-click ms, page kind), in one headless
    Chromium page; log / handler_log collect the server's model / handler times (empty for a --url server)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#image-input input[type=file]", state="attached")
        page.evaluate(PAGE_JS)
        expected, caption_ms, model_ms, handler_ms, word_ms = {}, [], [], [], []
        for r in range(rounds + 2):  # two warm-up rounds learn each photo's caption
            photo = photos[r % len(photos)]
            upload(page, photo)
            before = page.evaluate("() => window.benchHeatmap().key")
            if photo not in expected:
                page.click("#caption-button")
                page.wait_for_function("b => { const h = window.benchHeatmap(); return h.key && h.key !== b; }",
                                       arg=before)
                page.wait_for_timeout(500)
                expected[photo] = page.evaluate("() => window.benchCaption()")
                continue
            calls, handled = len(log), len(handler_log)
            caption_ms.append(page.evaluate(CAPTION_JS, [before, expected[photo]]))
            model_ms.extend(log[calls:][:1])
            handler_ms.extend(handler_log[handled:][:1])
        n_words = page.evaluate("() => window.benchWords().length")
        kind = page.evaluate("() => window.benchHeatmap().kind")
        for c in range(clicks):
            i = (c + 1) % n_words
            before = page.evaluate("() => window.benchHeatmap().key")
            word_ms.append(page.evaluate(WORD_JS, [i, before]))
            page.wait_for_timeout(150)  # a visitor's pace: each click is measured on an idle page
        browser.close()
    return caption_ms, model_ms, handler_ms, word_ms, f"{kind} heatmap, {n_words} words"


def measure_api(url: str, photos: list[Path], calls: int, log: list[float], handler_log: list[float]):
    """(client ms, model ms, handler ms) of `calls` /caption calls through gradio_client, one at a time, after one
    warm-up call per photo; each call's own model and handler times come from the server's logs."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for photo in photos:
        client.predict(handle_file(str(photo)), api_name="/caption")
    client_ms, model_ms, handler_ms = [], [], []
    for c in range(calls):
        models, handled = len(log), len(handler_log)
        start = time.perf_counter()
        client.predict(handle_file(str(photos[c % len(photos)])), api_name="/caption")
        client_ms.append((time.perf_counter() - start) * 1000)
        model_ms.extend(log[models:][:1])
        handler_ms.extend(handler_log[handled:][:1])
    return client_ms, model_ms, handler_ms


class Clock:
    """Per-request timing: the server's handler wraps each /caption call (handler ms), and the model's parts called
    inside it (decoding the upload, encoding, beam search) add up to that request's model ms."""

    def __init__(self):
        self.model, self.handler, self.running = [], [], 0.0

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
            self.running, start = 0.0, time.perf_counter()
            try:
                return handler(*args, **kwargs)
            finally:
                self.handler.append((time.perf_counter() - start) * 1000)
                self.model.append(self.running)
        return run


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
    from captioning.cli import app
    from captioning.model import Captioner

    captioner = Captioner.load(model)
    if note := captioner.use_fastest_encoder():  # as app.py runs it
        print(note)
    if instant_photos:
        captioner = Instant(captioner, instant_photos)
    # the model's parts, as the handler calls them (build_demo binds the module's functions)
    app.read_upload, app.encode_photo = clock.part(app.read_upload), clock.part(app.encode_photo)
    captioner.caption_pools = clock.part(captioner.caption_pools)
    app.caption_image = clock.request(app.caption_image)
    app.FeatureCache = functools.partial(app.FeatureCache, 0)  # keeps nothing: a visitor's new photo each time
    demo = app.build_demo(captioner, cache_examples=False)
    demo.queue(max_size=64)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running demo; default: serve --model in-process")
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--rounds", type=int, default=10, help="measured Caption clicks (default: %(default)s)")
    parser.add_argument("--clicks", type=int, default=30, help="measured word clicks (default: %(default)s)")
    parser.add_argument("--api-calls", type=int, default=20,
                        help="measured /caption calls through gradio_client (default: %(default)s)")
    parser.add_argument("--instant", action="store_true",
                        help="answer with captions computed beforehand: times the page, server and Gradio alone")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the in-process server, 0 = torch's default (default: %(default)s)")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    photos = test_photos(Path(tempfile.mkdtemp(prefix="browser-latency-")))
    demo, url, clock = None, args.url, Clock()
    log, handler_log = clock.model, clock.handler
    if not url:
        demo, url = serve(args.model, clock, photos if args.instant else None)
    try:
        caption_ms, model_ms, handler_ms, word_ms, kind = measure(url, photos, args.rounds, args.clicks, log,
                                                                 handler_log)
        api = measure_api(url, photos, args.api_calls, log, handler_log) if args.api_calls else None
    finally:
        if demo is not None:
            demo.close()
    print(f"page: {kind}; photo 1024x768 JPEG, beam 3 (the page's default)"
          f"{'; instant model (captions computed beforehand)' if args.instant else ''}")
    print(f"Caption click -> caption + first heatmap painted   {summary(caption_ms)}")
    if len(model_ms) == len(caption_ms):
        overhead = [total - model for total, model in zip(caption_ms, model_ms)]
        print(f"  of which the model (timed in the server)         {summary(model_ms)}")
        print(f"  the rest (page, server, transfers) per click     {summary(overhead)}")
    if len(handler_ms) == len(caption_ms):
        server = [handler - model for handler, model in zip(handler_ms, model_ms)]
        outside = [total - handler for total, handler in zip(caption_ms, handler_ms)]
        print(f"    handler outside the model (decode, JSON data)  {summary(server)}")
        print(f"    outside the handler (queue, transfer, page)    {summary(outside)}")
    print(f"word click    -> its heatmap painted               {summary(word_ms)}")
    if api:
        client_ms, api_model_ms, api_handler_ms = api
        print(f"/caption via gradio_client                        {summary(client_ms)}")
        if len(api_handler_ms) == len(client_ms):
            print(f"  of which the handler                            {summary(api_handler_ms)}")
            print(f"  the rest (client, HTTP, queue, Gradio)          "
                  f"{summary([c - h for c, h in zip(client_ms, api_handler_ms)])}")
    if len(model_ms) == len(caption_ms) and api and len(api[2]) == len(api[0]):
        page_over = statistics.median(t - m for t, m in zip(caption_ms, model_ms))
        api_over = statistics.median(c - h for c, h in zip(api[0], api[2]))
        word = statistics.median(word_ms)
        print("targets (same run): "
              f"browser - model {page_over:.0f} ms (<= 60: {'met' if page_over <= 60 else 'NOT met'}); "
              f"client - handler {api_over:.0f} ms (<= 40: {'met' if api_over <= 40 else 'NOT met'}); "
              f"word {word:.0f} ms (<= 30: {'met' if word <= 30 else 'NOT met'})")


if __name__ == "__main__":
    main()
