"""Evaluate a model directory: caption each image once (batched beam search), score with pycocoevalcap.

Prepared split:  python -m captioning.cli.evaluate --model DIR --data-dir data --data-name BASE --split VAL
Raw data:        python -m captioning.cli.evaluate --model DIR --karpathy-json FILE --image-dir DIR --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from captioning.checkpoint import CheckpointError, atomic_write
from captioning.cli.args import (
    add_beam_size_flag,
    add_cache_dir_flag,
    add_data_flags,
    add_model_flag,
    add_raw_data_flags,
    add_split_flag,
    add_threads_flag,
    interrupted,
    load_captioner,
    make_parser,
    positive_int,
)
from captioning.data import read_raw_split
from captioning.evaluate import caption_scores, evaluate, prepared_split
from captioning.features import CacheIncomplete, load_cached_features
from captioning.search import DEFAULT_LENGTH_PENALTY


def format_percentages(metrics: dict) -> str:
    """One line of scores x100, as the README tables print them (BLEU-4 22.1, CIDEr 54.5)."""
    scores = " | ".join(f"{name} {100 * value:.1f}" for name, value in caption_scores(metrics).items())
    return f"{scores}  ({metrics['images']} images, beam {metrics['beam_size']})"


def results_record(args: argparse.Namespace, metrics: dict) -> dict:
    """What --json-out writes: the model, split and decoding as run, then the metrics as printed (fractions)."""
    return {"model": args.model, "split": args.split, "expected_context": args.expected_context, **metrics}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m captioning.cli.evaluate", __doc__)
    add_model_flag(parser)
    add_split_flag(parser)
    add_data_flags(parser, required=False)
    add_raw_data_flags(parser)
    add_cache_dir_flag(parser)
    add_beam_size_flag(parser)
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=DEFAULT_LENGTH_PENALTY,
        help="length penalty of the beam search, 0 = none (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images captioned together")
    parser.add_argument(
        "--expected-context",
        action="store_true",
        help="hard-attention model: decode with the expected (soft) context instead of the argmax "
        "cell, as the paper's code scored its hard model (no effect on soft models)",
    )
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java; a few seconds faster)")
    parser.add_argument(
        "--json-out",
        metavar="FILE",
        help="also write the run (model, split, expected context) and its metrics (fractions, as "
        "printed) to this JSON file, e.g. results/model_beam3.json",
    )
    parser.add_argument("--captions-out", help="also write {image name: caption} to this file")
    add_threads_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 once scored, 2 if the model or the data cannot be read, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.data_name or args.karpathy_json):
        parser.error("give --data-dir/--data-name (prepared data) or --karpathy-json/--image-dir (raw images)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_captioner(args.model)
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
            features, cached_names = load_cached_features(
                args.cache_dir, args.split, args.data_name or "", model.config.encoder, model.config.preprocessing
            )
            if list(cached_names) != list(names):
                raise ValueError(f"feature cache {args.cache_dir} holds other images than this split")
            load_batch = lambda a, b: torch.from_numpy(np.asarray(features[a:b], dtype=np.float32))  # noqa: E731
        metrics, captions = evaluate(
            model,
            names,
            references,
            load_batch,
            args.batch_size,
            args.beam_size,
            args.length_penalty,
            from_features,
            meteor=not args.no_meteor,
        )
    except KeyboardInterrupt:
        return interrupted("interrupted; nothing was written")
    except (CheckpointError, FileNotFoundError, ValueError, CacheIncomplete) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_percentages(metrics))
    print(json.dumps(metrics, indent=2))
    if args.json_out:
        text = json.dumps(results_record(args, metrics), indent=2)
        atomic_write(Path(args.json_out), lambda path: path.write_text(text))
    if args.captions_out:
        Path(args.captions_out).write_text(json.dumps(captions, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
