"""The demo's resident memory: idle after start-up, and after 50 captions from 4 gradio_client clients at once.

    python -m bench.demo_memory                      # app.py as a user starts it: both shipped models, examples eager
    python -m bench.demo_memory --captions 100 --clients 8 -- --cache-examples off

The demo runs as its own process (`python app.py` plus any arguments after --); its memory is read from
/proc/PID/status: VmRSS (resident now) and VmHWM (the peak). The clients alternate the served models and three
photos (a 1024x768 and a 2048x1536 JPEG, and an example photo), so both models and the feature cache are used.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from bench.browser_latency import test_photos
from captioning.shipped import example_photos

REPO = Path(__file__).resolve().parents[1]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of process `pid`, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M)[1]) / 1024 for key in ("VmRSS", "VmHWM")}


def start_demo(port: int, extra: list[str]) -> tuple[subprocess.Popen, float]:
    """`python app.py --port port ...` started and serving: (process, seconds to start)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "Running on local URL" in line:
            return process, time.perf_counter() - start
    raise RuntimeError(f"the demo did not start (exit code {process.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=50, help="captions in all (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="clients at once (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7871, help="the demo's port (default: %(default)s)")
    parser.add_argument(
        "--models",
        default="model,model_hard",
        help="the served models' names, comma-separated, used in turn (default: %(default)s)",
    )
    parser.add_argument("app_args", nargs="*", help="more arguments for app.py (after --)")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    folder = Path(tempfile.mkdtemp(prefix="demo-memory-"))
    photos = test_photos(folder)[:1]
    big = folder / "big_2048x1536.jpg"
    Image.open(photos[0]).resize((2048, 1536)).save(big, quality=90)
    photos += [big, Path(example_photos()[0])]
    process, started = start_demo(args.port, args.app_args)
    try:
        url = f"http://127.0.0.1:{args.port}/"
        time.sleep(2.0)  # settle
        idle = memory_mb(process.pid)
        served = args.models.split(",")

        def client_run(c: int) -> float:
            client, first = Client(url, verbose=False), None
            for i in range(c, args.captions, args.clients):
                start = time.perf_counter()
                client.predict(
                    handle_file(str(photos[i % len(photos)])), 3, served[(i // 3) % len(served)], api_name="/caption"
                )
                first = first or time.perf_counter() - start
            return first

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client_run, range(args.clients)))
        took = time.perf_counter() - start
        time.sleep(1.0)
        after = memory_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"demo: python app.py {' '.join(args.app_args)} (models: {', '.join(served)}); started in {started:.1f} s")
    print(f"resident memory idle (after start-up)               {idle['VmRSS']:7.0f} MB")
    print(
        f"resident memory after {args.captions} captions from {args.clients} clients  {after['VmRSS']:7.0f} MB "
        f"(peak {after['VmHWM']:.0f} MB; the captions took {took:.1f} s)"
    )


if __name__ == "__main__":
    main()
