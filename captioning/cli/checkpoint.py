"""Copy a model directory, or average several epochs of one run, storing the weights in fp16 (how assets/model
is made from runs/*/best).

    python -m captioning.cli.checkpoint runs/flickr8k/best assets/model
    python -m captioning.cli.checkpoint runs/x/epoch_6 runs/x/epoch_8 assets/model

The familiarity summary (familiarity.safetensors: how the demo tells a photo unlike the training photos) is copied
from the first source; with --cache-dir and --data-name it is made from that feature cache's TRAIN and VAL splits
instead (the source may be the target, for a model trained before the summary existed):

    python -m captioning.cli.checkpoint assets/model assets/model --cache-dir cache/flickr8k_lite2 --data-name BASE
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from captioning.checkpoint import WEIGHTS_FILE, CheckpointError, read_and_average, save_model_dir
from captioning.cli.args import add_cache_dir_flag, add_data_name_flag, make_parser
from captioning.familiarity import FAMILIARITY_FILE, Familiarity
from captioning.features import CacheIncomplete, familiarity_from_cache
from captioning.serving import model_load_error


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m captioning.cli.checkpoint", __doc__)
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="source",
        help="model directory, e.g. runs/flickr8k/best; several (e.g. runs/x/epoch_6 runs/x/epoch_8) "
        "are averaged weight by weight",
    )
    parser.add_argument("target", help="output model directory, e.g. assets/model")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: store fp16)")
    add_cache_dir_flag(parser)  # with --data-name: make the familiarity summary from that cache's TRAIN and VAL
    add_data_name_flag(parser, required=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 once the target is written, 2 if a source cannot be read."""
    args = build_parser().parse_args(argv)
    try:
        config, word_map, state = read_and_average(args.sources)
    except CheckpointError as error:
        unreadable = [s for s in args.sources if not (Path(s) / WEIGHTS_FILE).is_file()]
        print(model_load_error(unreadable[0] if unreadable else args.sources[0], error), file=sys.stderr)
        return 2
    if bool(args.cache_dir) != bool(args.data_name):
        print("error: --cache-dir and --data-name go together (the feature cache of the summary)", file=sys.stderr)
        return 2
    try:
        if args.cache_dir:
            summary = familiarity_from_cache(args.cache_dir, args.data_name, config.encoder, config.preprocessing)
        else:
            summary = None if config.encoder_finetuned else Familiarity.load(args.sources[0])
    except (FileNotFoundError, ValueError, CacheIncomplete) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = save_model_dir(args.target, config, word_map, state, fp16=not args.fp32)
    size = (path / WEIGHTS_FILE).stat().st_size / 2**20
    averaged = f", the mean of {len(args.sources)} models" if len(args.sources) > 1 else ""
    print(f"wrote {path} ({size:.1f} MiB weights, {'fp32' if args.fp32 else 'fp16'}{averaged})")
    if summary is not None:
        summary_size = summary.save(path).stat().st_size / 2**20
        print(
            f"familiarity summary: {len(summary.reference)} training photos, {len(summary.val_distances)} val "
            f"distances ({summary_size:.1f} MiB)"
        )
    else:
        (path / FAMILIARITY_FILE).unlink(missing_ok=True)  # a summary left from an earlier model would mislead
    return 0


if __name__ == "__main__":
    sys.exit(main())
