"""Where the demo's /caption handler runs its model, and what it costs: handlers.caption on a 1024x768 JPEG
(no feature cache: every call decodes, encodes and searches), called the ways a process can call it.

    python -m bench.model_thread                  # every way, each in its own process, twice in turn
    python -m bench.model_thread --calls 30 --beam 1

Ways: main (load and calls on the main thread: a standalone script), workers (loaded on the main thread, each call
on one of 8 pool threads in turn, as Gradio's worker threads pick up requests), model-thread (load and calls on one
captioning.model_thread.ModelThread, as the demo serves), served (the demo itself, built and launched as app.py
does; /caption called by gradio_client from another process, one call at a time; the time is /caption's handler,
taken inside the server). Target: model-thread and served within 15% of main (median).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WAYS = ("main", "workers", "model-thread", "served")


def photo(directory: Path) -> Path:
    """scikit-image's coffee as a 1024x768 JPEG (quality 90), as bench.browser_latency uploads it."""
    from PIL import Image
    from skimage import data

    path = directory / "coffee_1024x768.jpg"
    Image.fromarray(data.coffee()).convert("RGB").resize((1024, 768), Image.BICUBIC).save(path, quality=90)
    return path


def time_calls(way: str, model: str, beam: int, calls: int) -> list[float]:
    """ms of each handlers.caption call after two warm-up calls, made `way`."""
    from captioning import handlers
    from captioning.model_thread import ModelThread
    from captioning.serving import load_captioner

    path = str(photo(Path(tempfile.mkdtemp(prefix="model-thread-"))))

    def load():
        return load_captioner(model, fastest_encoder=True)[0]

    def timed_call(captioner) -> float:
        start = time.perf_counter()
        handlers.caption(captioner, path, beam)
        return (time.perf_counter() - start) * 1000

    if way == "main":
        captioner = load()
        return [timed_call(captioner) for _ in range(calls + 2)][2:]
    if way == "workers":
        captioner, pool = load(), ThreadPoolExecutor(8)
        # 8 calls at once first, so that each pool thread exists (and has called the model) before the timed ones
        list(pool.map(lambda _: timed_call(captioner), range(8)))
        threads = [ThreadPoolExecutor(1) for _ in range(8)]  # one call each in turn: a request lands on any thread
        return [threads[i % 8].submit(timed_call, captioner).result() for i in range(calls)]
    model_thread = ModelThread()
    captioner = model_thread.run(load)
    if way == "served":
        return served_calls(model_thread, captioner, path, beam, calls)
    return [model_thread.run(timed_call, captioner) for _ in range(calls + 2)][2:]


def timed_into(handler, ms: list[float]):
    """handler, each call's wall time (ms) appended to `ms` (name and signature kept: Gradio reads them)."""

    @functools.wraps(handler)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return handler(*args, **kwargs)
        finally:
            ms.append((time.perf_counter() - start) * 1000)

    return timed


def served_calls(model_thread, captioner, path: str, beam: int, calls: int) -> list[float]:
    """ms of each /caption handler call inside the demo (app.build_demo, launched as app.py launches it), the calls
    made by gradio_client in a separate process (so that the client's own work does not share this process)."""
    from captioning import handlers
    from captioning.cli import app, launch

    handler_ms: list[float] = []
    handlers.caption = timed_into(handlers.caption, handler_ms)  # build_demo binds the module's function
    demo = app.build_demo(captioner, cache_examples=False, model_thread=model_thread)
    demo.queue(max_size=64)
    _, url, _ = demo.launch(**launch.LAUNCH_SETTINGS, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = (
        "import sys\nfrom gradio_client import Client, handle_file\n"
        "client = Client(sys.argv[1], verbose=False)\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    client.predict(handle_file(sys.argv[2]), int(sys.argv[4]), api_name='/caption')\n"
    )
    try:
        command = [sys.executable, "-c", client, url, path, str(calls + 2), str(beam)]
        subprocess.run(command, check=True, capture_output=True)
    finally:
        demo.close()
    return handler_ms[2:]


def summary(ms: list[float]) -> str:
    ordered = sorted(ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):6.1f} ms   p90 {p90:6.1f} ms   (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="timed calls per process (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="processes per way, in turn (default: %(default)s)")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one process's part
    args = parser.parse_args()
    if args.way:
        print(" ".join(f"{ms:.2f}" for ms in time_calls(args.way, args.model, args.beam, args.calls)))
        return
    times = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way in WAYS:
            command = [sys.executable, "-m", "bench.model_thread", "--way", way, "--model", args.model]
            command += ["--beam", str(args.beam), "--calls", str(args.calls)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            times[way] += [float(ms) for ms in out.strip().splitlines()[-1].split()]  # the last line: the times
    print(f"handlers.caption, 1024x768 JPEG, beam {args.beam}, {args.model}")
    main_median = statistics.median(times["main"])
    for way in WAYS:
        ratio = statistics.median(times[way]) / main_median
        print(f"  {way:<13} {summary(times[way])}   x{ratio:.2f} of main")
    for way in ("model-thread", "served"):
        ratio = statistics.median(times[way]) / main_median
        print(f"target: {way} <= 1.15 x main: {'met' if ratio <= 1.15 else 'NOT met'} (x{ratio:.2f})")


if __name__ == "__main__":
    main()
