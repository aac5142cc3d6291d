"""Cache one split's encoder features, from a prepared HDF5 file (--data-dir/--data-name) or from raw
Karpathy-split images (--karpathy-json/--image-dir; --data-name still names the cache files).
Resumable: rerun the same command after an interruption. A cache made with other settings is never replaced.

    python -m captioning.cli.features --split TRAIN --cache-dir cache --data-dir data --data-name BASE
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import h5py
import numpy as np
import torch

from captioning.cli.args import (
    add_cache_dir_flag,
    add_data_flags,
    add_encoder_flags,
    add_image_size_flag,
    add_raw_data_flags,
    add_split_flag,
    add_threads_flag,
    encoder_spec,
    interrupted,
    make_parser,
    non_negative_int,
    positive_int,
)
from captioning.data import PreparedData, read_raw_split
from captioning.encoder import preprocessing_for
from captioning.features import CACHE_BATCH_SIZE, cache_features, read_metadata
from captioning.model import EncoderUnavailable, create_encoder
from captioning.precision import emulated_bf16_warning, native_cpu_bf16


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m captioning.cli.features", __doc__)
    add_split_flag(parser)
    add_cache_dir_flag(parser, required=True)
    add_data_flags(parser)
    add_raw_data_flags(parser)
    add_image_size_flag(parser)
    add_encoder_flags(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=CACHE_BATCH_SIZE,
        help="images per encoder batch; a resumed cache must keep its batch size",
    )
    parser.add_argument(
        "--finetune-stages",
        type=non_negative_int,
        default=0,
        help="make a prefix cache for train.py --finetune-encoder --finetune-stages N: the trunk's map at the input "
        "of its last N stages (1-3), so training runs only those; 0 = the frozen encoder's features",
    )
    add_threads_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 once the cache is complete, 2 on bad input or a cache made with other settings, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = args.split
    try:
        spec = encoder_spec(args)
        if args.encoder_bf16 is None:  # default: bf16 only where it is native
            spec = spec.with_changes(bf16=native_cpu_bf16())
        if spec.bf16 and (
            warning := emulated_bf16_warning(
                "the encoder's bf16 autocast",
                "--no-encoder-bf16 (fp32 features; models trained on them say encoder bf16 false)",
            )
        ):
            print(warning)  # stdout: stderr is kept for the one-line errors
        if args.karpathy_json:
            raw = read_raw_split(args.karpathy_json, args.image_dir, split)
            names, image_size = raw.names, args.image_size

            def load_pixels(start: int, stop: int) -> np.ndarray:
                return raw.load_pixels(start, stop, image_size)  # (b, 3, S, S)
        else:
            data = PreparedData(args.data_dir, args.data_name)
            image_size = data.image_size(split)
            images = h5py.File(data.images_path(split), "r")["images"]
            names = data.load_split(split).names

            def load_pixels(start: int, stop: int) -> np.ndarray:
                return images[start:stop]  # (b, 3, S, S)

        before = read_metadata(args.cache_dir, split, args.data_name, bool(args.finetune_stages))
        encoder = create_encoder(spec)
        prep = preprocessing_for(encoder, image_size, spec.input_size)
        path = cache_features(
            encoder,
            load_pixels,
            names,
            args.cache_dir,
            split,
            prep,
            args.batch_size,
            spec.bf16,
            spec.weights,
            data_name=args.data_name,
            prefix_stages=args.finetune_stages,
        )
    except KeyboardInterrupt:
        meta = read_metadata(args.cache_dir, split, args.data_name, bool(args.finetune_stages))
        done = f" at {meta['done']}/{len(meta['names'])} images" if meta else ""
        return interrupted(f"interrupted{done}; rerun the same command to continue")
    except (FileNotFoundError, ValueError, EncoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if before is not None and before["complete"]:
        print(f"{path} is already complete ({len(names)} images): nothing to do")
    else:
        print(f"features for {len(names)} images in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
