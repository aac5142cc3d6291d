"""Prepare captioning data: images -> HDF5, captions -> fixed-length JSON, plus word map, references and names.

    python prepare_data.py --dataset flickr8k --karpathy-json dataset_flickr8k.json --image-dir images/
    python prepare_data.py --dataset csv --captions-file captions.csv --image-dir images/
    python prepare_data.py --dataset synthetic --num-images 1000
"""

from __future__ import annotations

import argparse
import os
import sys

from captioning.prepare import (
    KARPATHY_DATASETS,
    DataError,
    format_summary,
    prepare_dataset,
    read_csv_captions,
    read_karpathy,
    read_synthetic,
)

DATASETS = (*KARPATHY_DATASETS, "csv", "synthetic")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--karpathy-json", help="Karpathy split file (flickr8k | flickr30k | coco)")
    parser.add_argument("--image-dir", help="folder the image file names are relative to (not for synthetic)")
    parser.add_argument("--captions-file", help="CSV with rows image,caption[,split] (csv)")
    parser.add_argument("--num-images", type=positive_int, default=1000, help="images to generate (synthetic)")
    parser.add_argument("--output-dir", default="data/")
    parser.add_argument("--captions-per-image", type=positive_int, default=5)
    parser.add_argument("--min-word-freq", type=non_negative_int, default=5,
                        help="keep words seen more than this many times; rarer words become <unk>")
    parser.add_argument("--max-len", type=positive_int, default=50,
                        help="most words a caption may have; longer captions are excluded, never truncated")
    parser.add_argument("--image-size", type=positive_int, default=256, help="stored square image side")
    parser.add_argument("--vocab-splits", choices=("train", "all"), default="train",
                        help="count words over the train split only (default) or over every split")
    parser.add_argument("--seed", type=int, default=123, help="caption sampling (and synthetic generation) seed")
    return parser.parse_args(argv)


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
        return read_csv_captions(args.captions_file, args.image_dir)
    if args.dataset == "synthetic":
        return read_synthetic(args.num_images, os.path.join(args.output_dir, "synthetic_images"), seed=args.seed)
    return read_karpathy(args.karpathy_json, args.image_dir, args.dataset)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
        caption_set = read_captions(args)
        summary = prepare_dataset(
            caption_set, args.output_dir, args.dataset, captions_per_image=args.captions_per_image,
            min_word_freq=args.min_word_freq, max_len=args.max_len, image_size=args.image_size,
            vocab_splits=args.vocab_splits, seed=args.seed)
    except DataError as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
