"""Evaluate a model directory: caption each image once (batched beam search), score with pycocoevalcap.

Prepared split:  python -m captioning.evaluate --model DIR --data-dir data --data-name BASE --split VAL
Raw data:        python -m captioning.evaluate --model DIR --karpathy-json FILE --image-dir DIR --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from captioning import cli
from captioning.checkpoint import CheckpointError
from captioning.data import PreparedData, read_raw_split
from captioning.features import CacheIncomplete, load_cached_features
from captioning.metrics import broken_ending_share, coco_metrics
from captioning.model import Caption, Captioner


def caption_all(model: Captioner, count: int, load_batch: Callable[[int, int], torch.Tensor], batch_size: int,
                beam_size: int, length_penalty: float = 0.0,
                to_features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[Caption]:
    """Caption images [0, count) in batches; load_batch gives what to_features (default: the model's pixel
    encoder, Captioner.batch_encoder) turns into features: uint8 pixels (b, 3, S, S) or cached features."""
    to_features = to_features or model.features_from_pixels
    captions = []
    for start in tqdm(range(0, count, batch_size), desc=f"captioning (beam {beam_size})", unit="batch"):
        features = to_features(load_batch(start, min(start + batch_size, count)))  # (b, 196, C)
        captions.extend(model.caption_features(features, beam_size, length_penalty))
    return captions


def prepared_split(data_dir: str, data_name: str, split: str, image_size: int):
    """(names, references, pixel loader) of a split written by prepare_data.py."""
    data = PreparedData(data_dir, data_name)
    captions = data.load_split(split)
    images = h5py.File(data.images_path(split), "r")["images"]
    if images.shape[-1] != image_size:
        raise ValueError(f"prepared images are {images.shape[-1]} px, the model expects {image_size} px")
    return captions.names, captions.references, lambda a, b: torch.from_numpy(images[a:b])


def evaluate(model: Captioner, names: Sequence[str], references: Sequence[list[str]], load_batch, batch_size: int,
             beam_size: int, length_penalty: float = 0.0, from_features: bool = False, meteor: bool = True):
    """Metrics dict (with image count and beam size) and the generated captions by image name."""
    to_features = model.batch_encoder(cached=from_features)  # chosen once for the whole split
    captions = caption_all(model, len(names), load_batch, batch_size, beam_size, length_penalty, to_features)
    hypotheses = {i: [c.text] for i, c in enumerate(captions)}
    metrics = coco_metrics({i: list(r) for i, r in enumerate(references)}, hypotheses, meteor=meteor)
    metrics.update(images=len(names), beam_size=beam_size, length_penalty=length_penalty,
                   function_word_endings=broken_ending_share([c.text for c in captions]))
    return metrics, {name: c.text for name, c in zip(names, captions)}


METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def format_percentages(metrics: dict) -> str:
    """One line of scores x100, as the README tables print them (BLEU-4 22.1, CIDEr 54.5)."""
    scores = " | ".join(f"{name} {100 * metrics[name]:.1f}" for name in METRIC_NAMES if name in metrics)
    return f"{scores}  ({metrics['images']} images, beam {metrics['beam_size']})"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("python -m captioning.evaluate", __doc__)
    cli.add_model_flag(parser)
    cli.add_split_flag(parser)
    cli.add_data_flags(parser, required=False)
    cli.add_raw_data_flags(parser)
    cli.add_cache_dir_flag(parser)
    cli.add_beam_size_flag(parser)
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="length penalty of the beam search, 0 = none")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32, help="images captioned together")
    parser.add_argument("--expected-context", action="store_true",
                        help="hard-attention model: decode with the expected (soft) context instead of the argmax "
                             "cell, as the paper's code scored its hard model (no effect on soft models)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java; a few seconds faster)")
    parser.add_argument("--json-out", help="also write the metrics (fractions, as printed in JSON) to this file")
    parser.add_argument("--captions-out", help="also write {image name: caption} to this file")
    cli.add_threads_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.data_name or args.karpathy_json):
        parser.error("give --data-dir/--data-name (prepared data) or --karpathy-json/--image-dir (raw images)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = cli.load_captioner(args.model)
    if model is None:
        return 2
    if args.expected_context:
        model.use_expected_context()
    try:
        image_size = model.config.preprocessing.image_size
        if args.data_name:
            names, references, load_batch = prepared_split(args.data_dir, args.data_name, args.split, image_size)
        else:
            raw = read_raw_split(args.karpathy_json, args.image_dir, args.split)
            names, references = raw.names, raw.references

            def load_batch(a: int, b: int) -> torch.Tensor:
                return torch.from_numpy(raw.load_pixels(a, b, image_size))  # (b, 3, S, S)
        from_features = bool(args.cache_dir)
        if from_features:
            features, cached_names = load_cached_features(args.cache_dir, args.split, args.data_name or "",
                                                          model.config.encoder, model.config.preprocessing)
            if list(cached_names) != list(names):
                raise ValueError(f"feature cache {args.cache_dir} holds other images than this split")
            load_batch = lambda a, b: torch.from_numpy(np.asarray(features[a:b], dtype=np.float32))  # noqa: E731
        metrics, captions = evaluate(model, names, references, load_batch, args.batch_size, args.beam_size,
                                     args.length_penalty, from_features, meteor=not args.no_meteor)
    except KeyboardInterrupt:
        return cli.interrupted("interrupted; nothing was written")
    except (CheckpointError, FileNotFoundError, ValueError, CacheIncomplete) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_percentages(metrics))
    print(json.dumps(metrics, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(metrics, indent=2))
    if args.captions_out:
        Path(args.captions_out).write_text(json.dumps(captions, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
