"""What probing a typed sentence costs in the demo, beside captioning the same photo: medians over repeats.

    python -m bench.probe_cost                    # shipped soft model, a 1024x768 JPEG, a 12-word sentence
    python -m bench.probe_cost --model assets/model_hard --repeats 15

Rows: /caption's work on a new photo (decode, encode, beam 3); /probe's on a photo the demo has already encoded (its
features come from the feature cache: only the decoder runs); /probe's on a new photo (decode and encode once, then
the decoder); and the decoder's teacher-forced pass alone (captioning.probe.probe on given features).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.browser_latency import test_photos
from captioning import handlers
from captioning.model import Captioner
from captioning.probe import probe

SENTENCE = "two dogs are playing with a ball on the green grass outside"  # 12 words


def median_ms(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cost_arguments(description: str, repeats: int) -> argparse.Namespace:
    """The cost benches' flags: --model and --repeats."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per row (default: %(default)s)")
    return parser.parse_args()


def captioned_photo(model: str) -> tuple[Captioner, str, handlers.FeatureCache]:
    """The model loaded as app.py serves it, a 1024x768 JPEG, and a feature cache holding that photo's features
    (the photo captioned once, as a visitor's photo is before they probe or check it)."""
    captioner = Captioner.load(model)
    if note := captioner.use_fastest_encoder():
        print(note)
    photo = str(test_photos(Path(tempfile.mkdtemp(prefix="cost-")))[0])
    cache = handlers.FeatureCache()
    handlers.caption(captioner, photo, 3, cache=cache)
    return captioner, photo, cache


def main() -> None:
    args = cost_arguments(__doc__.splitlines()[0], repeats=11)
    captioner, photo, cache = captioned_photo(args.model)
    features = handlers.encoded_photo(captioner, "model", photo, cache).features  # (1, 196, C)
    rows = {
        "/caption, new photo (decode + encode + beam 3)": lambda: handlers.caption(captioner, photo, 3),
        "/probe, photo already captioned (features cached)": lambda: handlers.probe_models(
            captioner, ["model"], photo, SENTENCE, cache
        ),
        "/probe, new photo (decode + encode + decoder)": lambda: handlers.probe_models(
            captioner, ["model"], photo, SENTENCE, None
        ),
        "the decoder's teacher-forced pass alone": lambda: probe(captioner, features, [SENTENCE]),
    }
    words = len(SENTENCE.split())
    print(f"model {args.model}; photo 1024x768 JPEG; sentence of {words} words; medians of {args.repeats}")
    for label, run in rows.items():
        print(f"{label:<52} {median_ms(run, args.repeats):7.1f} ms")


if __name__ == "__main__":
    main()
