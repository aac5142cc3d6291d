"""Live camera captioning in real Chromium with a fake camera (a clip made from photos): captions shown per second,
the age of the caption on screen (from the moment its frame was taken to the frame showing it painted) p50/p90,
beside the model's own time per frame (the /live handler: decode, encode, search, payload) in the same run, and the
server's RSS before and after.

    python -m bench.live_camera                          # 5 minutes, assets/model, served in-process
    python -m bench.live_camera --seconds 60 --beam 3    # a shorter run; live frames at beam 3
    python -m bench.live_camera --seconds 10 --screenshot docs/figures/live.jpg

Targets: age p50 <= model + 80 ms, age p90 <= 2 x model + 80 ms, captions per second >= 1 / (model + 80 ms),
RSS flat over the run.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.browser_latency import CHROMIUM, CHROMIUM_ARGS
from bench.model_thread import timed_into

FAKE_CAMERA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # + the clip's file
CLIP_SIZE = (640, 480)
CLIP_FPS = 15


def camera_clip(photos: list[Path | Image.Image], path: Path, seconds_each: float = 2.0) -> Path:
    """A YUV4MPEG2 clip ('C420jpeg': full-range 4:2:0) at CLIP_SIZE and CLIP_FPS showing each photo for
    `seconds_each`, one after the other: Chromium's fake camera plays it in a loop
    (--use-file-for-fake-video-capture=PATH)."""
    width, height = CLIP_SIZE
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{CLIP_FPS}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for photo in photos:
            image = photo if isinstance(photo, Image.Image) else Image.open(photo)
            planes = image.convert("RGB").resize(CLIP_SIZE, Image.BICUBIC).convert("YCbCr").split()
            luma = np.asarray(planes[0], dtype=np.uint8)  # (H, W)
            half = (width // 2, height // 2)
            chroma = [np.asarray(p.resize(half, Image.BOX), dtype=np.uint8) for p in planes[1:]]  # 2 x (H/2, W/2)
            frame = b"FRAME\n" + luma.tobytes() + chroma[0].tobytes() + chroma[1].tobytes()
            out.write(frame * max(1, round(seconds_each * CLIP_FPS)))
    return path


def rss_mb() -> float:
    """This process's resident memory, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve(model: str, beam: int, handler_ms: list[float]):
    """The demo with `model` on a free local port, loaded and run on one ModelThread as app.py serves it, each /live
    call's handler time appended to handler_ms: (demo, url)."""
    from captioning import handlers
    from captioning.cli import app, launch
    from captioning.model_thread import ModelThread
    from captioning.serving import load_captioner

    model_thread = ModelThread()
    captioner = model_thread.run(lambda: load_captioner(model, fastest_encoder=True)[0])
    live = handlers.live if beam == handlers.LIVE_BEAM else functools.partial(handlers.live, beam=beam)
    handlers.live = timed_into(live, handler_ms)  # build_demo binds handlers.live as it finds it
    demo = app.build_demo(captioner, cache_examples=False, model_thread=model_thread)
    demo.queue(max_size=64)
    _, url, _ = demo.launch(**launch.LAUNCH_SETTINGS, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url


def photos() -> list[Image.Image]:
    """The clip's scenes: scikit-image's coffee, astronaut and chelsea (a cat)."""
    from skimage import data

    return [Image.fromarray(data.coffee()), Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]


def run(
    url: str, clip: Path, seconds: float, warmup: float, handler_ms: list[float], screenshot: Path | None = None
) -> dict:
    """Live captioning for warmup + seconds in one page; the figures of the last `seconds`. screenshot: where to
    save the page's live area once warmed up."""
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={clip}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_function("() => !!(window.satDemo && window.satDemo.state.live.root)")
        page.click("#live-start")
        page.wait_for_function("() => window.satDemo.state.live.stats.length >= 3")
        page.wait_for_timeout(warmup * 1000)
        if screenshot:
            page.locator("#live-mode").screenshot(path=str(screenshot))
        first_stat, first_call, rss_before = (
            page.evaluate("() => window.satDemo.state.live.stats.length"),
            len(handler_ms),
            rss_mb(),
        )
        t0 = time.perf_counter()
        page.wait_for_timeout(seconds * 1000)
        elapsed = time.perf_counter() - t0
        stats = page.evaluate("() => window.satDemo.state.live.stats")
        rss_after = rss_mb()
        page.click("#live-stop")
        browser.close()
    shown = stats[first_stat:] if len(stats) > first_stat else stats
    return {
        "ages": [s["shown"] - s["captured"] for s in shown],
        "per_second": len(shown) / elapsed,
        "model": handler_ms[first_call:],
        "rss": (rss_before, rss_after),
        "elapsed": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--seconds", type=float, default=300.0, help="measured live time (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=10.0, help="live time before measuring (default: %(default)s)")
    parser.add_argument("--beam", type=int, default=1, help="beam of live frames (default: %(default)s, the demo's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default")
    parser.add_argument("--screenshot", type=Path, help="save the live area after the warm-up as this PNG")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    clip = camera_clip(photos(), Path(tempfile.mkdtemp(prefix="live-camera-")) / "clip.y4m")
    handler_ms: list[float] = []
    demo, url = serve(args.model, args.beam, handler_ms)
    try:
        result = run(url, clip, args.seconds, args.warmup, handler_ms, args.screenshot)
    finally:
        demo.close()
    model, ages = statistics.median(result["model"]), result["ages"]
    p50, p90 = statistics.median(ages), percentile(ages, 0.9)
    print(f"live camera: {args.model}, beam {args.beam}, fake camera {CLIP_SIZE[0]}x{CLIP_SIZE[1]} at {CLIP_FPS} fps")
    print(f"measured {result['elapsed']:.0f} s after {args.warmup:.0f} s of warm-up")
    model_p90, calls = percentile(result["model"], 0.9), len(result["model"])
    print(f"  model per frame (/live handler)  median {model:6.1f} ms   p90 {model_p90:6.1f} ms   (n={calls})")
    print(f"  caption age on screen            p50 {p50:6.1f} ms   p90 {p90:6.1f} ms   (n={len(ages)})")
    print(f"  captions shown per second        {result['per_second']:.2f}")
    before, after = result["rss"]
    print(
        f"  server RSS                       before {before:.0f} MB   after {after:.0f} MB   ({after - before:+.0f} MB)"
    )
    print(
        "targets (same run): "
        f"age p50 - model {p50 - model:.0f} ms (<= 80: {'met' if p50 <= model + 80 else 'NOT met'}); "
        f"age p90 {p90:.0f} <= 2 x model + 80 = {2 * model + 80:.0f}: {'met' if p90 <= 2 * model + 80 else 'NOT met'}; "
        f"captions/s {result['per_second']:.2f} >= {1000 / (model + 80):.2f}: "
        f"{'met' if result['per_second'] >= 1000 / (model + 80) else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
