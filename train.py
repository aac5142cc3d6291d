"""Train a captioning model on what prepare_data.py wrote. Every TrainConfig field is a flag.

CPU:        python train.py --data-dir data --data-name BASE --cache-dir cache --bf16
Many GPUs:  torchrun --nproc_per_node=N train.py --data-dir data --data-name BASE
Resume:     python train.py --resume runs/default   (same flags are read back from train_config.json)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from captioning.training import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field (booleans get --flag / --no-flag)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=None, help=f"default: {default!r}")
    parser.add_argument("--resume", help="run directory to continue (uses its train_config.json + flags given)")
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the resumed run's saved config, then the flags given on this command line."""
    values = dataclasses.asdict(TrainConfig())
    if args.resume:
        saved = Path(args.resume) / "train_config.json"
        if not saved.exists():
            raise SystemExit(f"error: {saved} not found: is {args.resume} a training run directory?")
        values.update(json.loads(saved.read_text()))
        values["output_dir"] = str(args.resume)
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    if not config.data_name:
        raise SystemExit("error: --data-name is required (the base name printed by prepare_data.py)")
    if config.threads:
        torch.set_num_threads(config.threads)  # process state: set here, by the entry point, not inside train()
    try:
        state = train(config, resume=args.resume)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = state["best_bleu4"]
    print(f"done: {state['epoch']} epochs, best val BLEU-4 {best:.4f}; model in {config.output_dir}/best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
