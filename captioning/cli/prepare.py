"""Prepare captioning data: images -> HDF5, captions -> fixed-length JSON, plus word map, references and names.

python prepare_data.py --dataset flickr8k --karpathy-json dataset_flickr8k.json --image-dir images/
python prepare_data.py --dataset csv --captions-file captions.csv --image-dir images/
python prepare_data.py --dataset synthetic --num-images 1000
"""

from __future__ import annotations

import argparse
import os
import sys

from captioning import prepare
from captioning.cli.args import (
    add_data_dir_flag,
    add_image_size_flag,
    add_raw_data_flags,
    interrupted,
    make_parser,
    non_negative_int,
    positive_int,
)
from captioning.prepare import DataError

DATASETS = (*prepare.KARPATHY_DATASETS, "csv", "synthetic")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python prepare_data.py", __doc__)
    parser.add_argument("--dataset", required=True, choices=DATASETS, help=f"what to read: {', '.join(DATASETS)}")
    add_raw_data_flags(parser)
    parser.add_argument("--captions-file", help="CSV with rows image,caption[,split] (--dataset csv)")
    parser.add_argument("--num-images", type=positive_int, default=1000, help="images to generate (synthetic)")
    add_data_dir_flag(parser)
    parser.add_argument(
        "--captions-per-image",
        type=positive_int,
        default=prepare.CAPTIONS_PER_IMAGE,
        help="captions stored per image (a random subset, or random repeats when fewer)",
    )
    parser.add_argument(
        "--min-word-freq",
        type=non_negative_int,
        default=prepare.MIN_WORD_FREQ,
        help="keep words seen more than this many times; rarer words become <unk>",
    )
    parser.add_argument(
        "--max-len",
        type=positive_int,
        default=prepare.MAX_CAPTION_WORDS,
        help="most words a caption may have; longer captions are excluded, never truncated",
    )
    add_image_size_flag(parser)
    parser.add_argument(
        "--vocab-splits",
        choices=prepare.VOCAB_SPLITS,
        default=prepare.VOCAB_SPLITS[0],
        help="count words over the train split only, or over every split (train | all)",
    )
    parser.add_argument(
        "--seed", type=int, default=prepare.PREPARE_SEED, help="caption sampling (and synthetic generation) seed"
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_inputs(args: argparse.Namespace) -> None:
    """Raise DataError for a missing or absent input path, before any work is done."""
    needed = {"csv": ("captions_file", "image_dir"), "synthetic": ()}.get(args.dataset, ("karpathy_json", "image_dir"))
    for attr in needed:
        flag = "--" + attr.replace("_", "-")
        path = getattr(args, attr)
        if not path:
            raise DataError(f"--dataset {args.dataset} needs {flag}")
        exists = os.path.isdir(path) if attr == "image_dir" else os.path.isfile(path)
        if not exists:
            raise DataError(f"{flag} not found: {path}")


def read_captions(args: argparse.Namespace):
    """The CaptionSet for --dataset."""
    if args.dataset == "csv":
        return prepare.read_csv_captions(args.captions_file, args.image_dir)
    if args.dataset == "synthetic":
        return prepare.read_synthetic(args.num_images, os.path.join(args.data_dir, "synthetic_images"), seed=args.seed)
    return prepare.read_karpathy(args.karpathy_json, args.image_dir, args.dataset)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
        caption_set = read_captions(args)
        summary = prepare.prepare_dataset(
            caption_set,
            args.data_dir,
            args.dataset,
            captions_per_image=args.captions_per_image,
            min_word_freq=args.min_word_freq,
            max_len=args.max_len,
            image_size=args.image_size,
            vocab_splits=args.vocab_splits,
            seed=args.seed,
        )
    except DataError as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(
            "interrupted; nothing was written (files are renamed into place only when all are "
            "complete); rerun the same command"
        )
    print(prepare.format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
