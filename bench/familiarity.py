"""The familiarity readout of a model: how often it fires on val and on photos from outside Flickr8k, and its cost.

    python -m bench.familiarity                                  # shipped soft model, out-of-domain photos only
    python -m bench.familiarity --model assets/model_hard \\
        --cache-dir cache/flickr8k_lite2_fp32_reference --data-name flickr8k_5_cap_per_img_5_min_word_freq

Prints each photo's familiarity (percent of val photos farther from the training photos) and whether the page would
show its line (below UNFAMILIAR_BELOW): the repository's example photos, skimage's sample images (bundled with
scikit-image) and two synthesized images (a bar chart, a flat grey texture). With a VAL feature cache, also the
share of val photos that fire. Cost: the median time of the readout on given features, beside the encoder's.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from PIL import Image

from bench.probe_cost import median_ms
from captioning.familiarity import UNFAMILIAR_BELOW
from captioning.features import load_cached_features
from captioning.model import Captioner, model_directory
from captioning.shipped import example_photos

SKIMAGE = ("coffee", "rocket", "chelsea", "astronaut", "camera", "brick", "text", "page", "hubble_deep_field", "coins")


def bar_chart() -> Image.Image:
    """A rendered bar chart, 640x480."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    axis.bar(["a", "b", "c", "d", "e"], [3, 7, 2, 5, 4], color="tab:blue")
    axis.set_title("quarterly figures")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Image.open(buffer).convert("RGB")


def photos() -> dict[str, Image.Image]:
    """Name -> photo: the examples, skimage's samples (those bundled), the synthesized ones."""
    from skimage import data

    found = {f"examples/{Path(p).stem}": Image.open(p).convert("RGB") for p in example_photos()}
    for name in SKIMAGE:
        try:
            found[f"skimage/{name}"] = Image.fromarray(getattr(data, name)()).convert("RGB")
        except Exception:  # a sample that would need a download
            continue
    found["synthetic/bar_chart"] = bar_chart()
    found["synthetic/flat_grey"] = Image.new("RGB", (640, 480), (128, 128, 128))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/model")
    parser.add_argument("--cache-dir", default="", help="with --data-name: count how often val photos fire")
    parser.add_argument("--data-name", default="")
    parser.add_argument("--repeats", type=int, default=21, help="timed repeats (default: %(default)s)")
    args = parser.parse_args()
    captioner = Captioner.load(args.model)
    captioner.use_fastest_encoder()
    summary = captioner.familiarity
    if summary is None:
        raise SystemExit(f"{args.model} has no familiarity summary")
    size = (model_directory(args.model) / "familiarity.safetensors").stat().st_size / 2**20
    print(f"{args.model}: {len(summary.reference)} training photos, {len(summary.val_distances)} val ({size:.2f} MiB)")
    if args.cache_dir:
        val, _ = load_cached_features(args.cache_dir, "VAL", args.data_name)  # (V, 196, C)
        percents = [p for i in range(0, len(val), 100) for p in summary.percent(torch.from_numpy(val[i : i + 100]))]
        fired = sum(p < UNFAMILIAR_BELOW for p in percents)
        print(f"val: {fired} of {len(percents)} photos below {UNFAMILIAR_BELOW:g} ({100 * fired / len(percents):.1f}%)")
    features = {}
    for name, photo in photos().items():
        features[name] = captioner.encode(captioner.image_batch(photo))  # (1, 196, C)
        percent = captioner.familiarity.percent(features[name])[0]
        caption = captioner.caption_features(features[name])[0].text
        flag = "LINE" if percent < UNFAMILIAR_BELOW else "-"
        print(f"{name:28s} {percent:5.1f}  {flag:4s}  {caption}")
    one = next(iter(features.values()))
    readout = median_ms(lambda: captioner.familiarity.percent(one), args.repeats)
    batch = captioner.image_batch(next(iter(photos().values())))
    encoder = median_ms(lambda: captioner.encode(batch), max(3, args.repeats // 4))
    print(f"cost per photo: readout {readout:.2f} ms (median of {args.repeats}), encoder {encoder:.0f} ms")


if __name__ == "__main__":
    with torch.no_grad():
        main()
