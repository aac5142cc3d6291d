"""Demo latency as a client sees it: p50/p90 of /caption and /step for a 1024x768 JPEG, plus overlay rendering.

    python -m bench.app_latency                      # serves assets/model in-process
    python -m bench.app_latency --random             # random weights, shipped-model shapes (no trained model needed)
    python -m bench.app_latency --url http://127.0.0.1:7860/

Targets on a 2-core CPU with the shipped model: /caption p50 < 1 s, /step p50 < 150 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data as skimage_data

from captioning import handlers, shipped
from captioning.cli import app, launch
from captioning.config import EncoderSpec
from captioning.model import Captioner, create_captioner
from captioning.preprocess import load_image
from captioning.visualize import render_word_overlays


def random_captioner(max_len: int) -> Captioner:
    """Random decoder with the shipped model's shapes: lite2 trunk (offline weights), 512-d, 2500 words, 448 px."""
    words = [f"w{i}" for i in range(2496)]
    word_map = {"<pad>": 0, **{w: i + 1 for i, w in enumerate(words)}}
    word_map.update({"<start>": len(word_map), "<end>": len(word_map) + 1, "<unk>": len(word_map) + 2})
    torch.manual_seed(0)
    captioner = create_captioner(EncoderSpec(), word_map, image_size=256, max_caption_len=max_len)
    return captioner.eval()  # random weights never emit <end>: every caption is max_len words


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   (n={len(ms)})"


def timed(fn, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running demo; default: start one in-process")
    parser.add_argument("--model", default=str(shipped.DEFAULT_MODEL))
    parser.add_argument("--random", action="store_true", help="random weights with the shipped model's shapes")
    parser.add_argument("--random-len", type=int, default=12, help="caption length of the random model")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--no-download", action="store_true", help="don't fetch output files (server-side time)")
    parser.add_argument("--photo", help="resized to 1024x768 (default: scikit-image's coffee photo)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="app-latency-"))
    photo = workdir / "photo_1024x768.jpg"
    source = load_image(args.photo) if args.photo else Image.fromarray(skimage_data.coffee())
    source.resize((1024, 768), Image.BICUBIC).save(photo, quality=90)
    print(f"torch threads {torch.get_num_threads()}, photo {photo} ({photo.stat().st_size // 1024} KB)")

    demo, captioner = None, None
    if args.url:
        url = args.url
    else:
        captioner = random_captioner(args.random_len) if args.random else Captioner.load(args.model)
        if note := captioner.use_fastest_encoder():  # as app.py runs it
            print(note)
        print(
            f"model: {'random weights, shipped shapes' if args.random else args.model} "
            f"({captioner.config.encoder.backbone}, {captioner.config.preprocessing.input_size} px, "
            f"decoder {captioner.config.decoder.decoder_dim}, vocab {captioner.config.vocab_size})"
        )
        demo = app.build_demo(captioner, args.beam_size, cache_examples=False)
        demo.queue(max_size=64)
        # server_port=None: gradio takes the first free port from 7860 (or $GRADIO_SERVER_PORT) on
        _, url, _ = demo.launch(**launch.LAUNCH_SETTINGS, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False, download_files=False if args.no_download else str(workdir))
    try:
        for _ in range(2):  # warm-up: first calls pay for lazy initialisation
            data = client.predict(handle_file(str(photo)), args.beam_size, api_name="/caption")[-1]
        n_words = len(data["words"])
        print(f"caption: {len(data['words'])} words, beam {args.beam_size}")
        caption_times = timed(
            lambda i: client.predict(handle_file(str(photo)), args.beam_size, api_name="/caption"), args.calls
        )
        step_times = timed(lambda i: client.predict(i % n_words, data, api_name="/step"), args.calls)
        print(
            f"/caption  {percentiles(caption_times)}   (upload + model + the per-word data; the page draws "
            "the heatmaps)"
        )
        print(f"/step     {percentiles(step_times)}   (one heatmap from the hidden JSON, no model call)")
    finally:
        if demo is not None:
            demo.close()

    step_compute = timed(lambda i: handlers.render_step(data, i % n_words), args.calls)
    print(f"step fn   {percentiles(step_compute)}   (handlers.render_step alone: the rest of /step is gradio + HTTP)")
    image = load_image(photo)
    if captioner is not None:
        # In a worker thread, as gradio runs handlers: on a busy 2-core box torch in the main thread can be
        # several times slower (OpenMP thread contention), which would misattribute time to the app.
        with ThreadPoolExecutor(1) as pool:
            model_times = pool.submit(
                timed, lambda i: captioner.caption(image, beam_size=args.beam_size), max(5, args.calls // 4)
            ).result()
        print(f"model     {percentiles(model_times)}   (captioner.caption alone, in a worker thread)")
        caption = captioner.caption(image, beam_size=args.beam_size)[0]
        render_times = timed(lambda i: render_word_overlays(image, caption), 10)
        print(f"overlays  {percentiles(render_times)}   (all {len(caption.words)} words, 1024x768 photo)")


if __name__ == "__main__":
    main()
