"""The demo started as a Hugging Face Space starts it: seconds until it serves, then /caption through the API.

    python -m bench.space_start                       # the shipped models, their examples captioned at start-up
    python -m bench.space_start --calls 20 --env CAPTIONING_MODEL=model_hard

`python app.py` with no arguments, SPACE_ID, GRADIO_SERVER_NAME/PORT and a CAPTIONING_AUTH login set, in a
subprocess with its own Gradio temporary folder; the example photos are captioned with the login.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradio_client import Client, handle_file

from bench.app_latency import percentiles, timed
from captioning.shipped import example_photos

ROOT = Path(__file__).resolve().parents[1]
LOGIN = ("visitor", "bench-login-3141")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_url(app: subprocess.Popen) -> str:
    """The local URL a started `python app.py` prints once it serves (read from its stdout); exits if it stops first."""
    for line in app.stdout:
        if match := re.search(r"Running on local URL:\s+(\S+)", line):
            return match.group(1)
    sys.exit(f"the app exited ({app.wait()}) before serving")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="captions timed after the start")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="more variables")
    args = parser.parse_args()

    port, workdir = free_port(), Path(tempfile.mkdtemp(prefix="space-start-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONING_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", SPACE_ID="someone/show-attend-tell")
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), CAPTIONING_AUTH=":".join(LOGIN))
    env.update(GRADIO_TEMP_DIR=str(workdir / "gradio"), **dict(v.split("=", 1) for v in args.env))
    start = time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = served_url(app)
        print(f"start-up until serving: {time.perf_counter() - start:.1f} s")
        client = Client(url, verbose=False, auth=LOGIN, download_files=str(workdir))
        photos = itertools.cycle(example_photos())
        times = timed(
            lambda i: client.predict(handle_file(next(photos)), args.beam_size, api_name="/caption"), args.calls
        )
        print(f"/caption  {percentiles(times)}   (the example photos in turn, beam {args.beam_size}, with the login)")
        client.close()
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
