"""Train a captioning model on what prepare_data.py wrote. Every TrainConfig field is a flag.

Trained on a feature cache, the encoder settings are read from the cache (state them once, when caching).

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

from captioning.checkpoint import TRAIN_CONFIG_FILE
from captioning.cli.args import (
    add_cache_dir_flag,
    add_data_flags,
    add_encoder_flags,
    add_threads_flag,
    encoder_spec,
    interrupted,
    make_parser,
)
from captioning.features import CacheIncomplete, read_metadata, spec_of
from captioning.model import EncoderUnavailable
from captioning.precision import emulated_bf16_warning
from captioning.training import SCORES, TrainConfig, existing_run, train

SHARED = {"data_dir", "data_name", "cache_dir", "threads"}  # flags defined once in captioning.cli.args


def flag_fields(config: TrainConfig) -> list[tuple[dataclasses.Field, object]]:
    """Every TrainConfig field with its value, the nested decoder config's fields in its place (its flags are flat:
    --embed-dim, not --decoder-embed-dim)."""
    pairs = []
    for field in dataclasses.fields(config):
        if field.name == "decoder":
            pairs += [(f, getattr(config.decoder, f.name)) for f in dataclasses.fields(config.decoder)]
        else:
            pairs.append((field, getattr(config, field.name)))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field (booleans get --flag / --no-flag), the shared ones from captioning.cli.args."""
    parser = make_parser("python train.py", __doc__)
    add_data_flags(parser, required=False)  # required unless --resume: checked in main
    add_cache_dir_flag(parser)
    add_threads_flag(parser)
    add_encoder_flags(parser)
    defaults = TrainConfig()
    for field, default in flag_fields(defaults):
        if field.name in SHARED or "help" not in field.metadata:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=field.metadata["help"]
            )
        else:
            parser.add_argument(flag, type=type(default), default=default, help=field.metadata["help"])
    parser.add_argument("--resume", help=f"run directory to continue (its {TRAIN_CONFIG_FILE}, then the flags given)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --output-dir that already holds one (its files are replaced as the new run "
        "writes them); without it such a directory is refused",
    )
    return parser


def given_flags(argv: list[str] | None) -> argparse.Namespace:
    """Only the flags on the command line (every default suppressed), so a resumed run keeps its saved values."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    args = parser.parse_args(argv)
    for name in ("resume", "backbone", "encoder_weights", "input_size", "encoder_bf16"):
        setattr(args, name, getattr(args, name, None))
    args.overwrite = getattr(args, "overwrite", False)
    return args


def command_line(config: TrainConfig) -> list[str]:
    """The train.py flags that reproduce a TrainConfig (build_parser's inverse; booleans as --x / --no-x)."""
    values = dataclasses.asdict(config)
    spec = values.pop("encoder")
    values.update(
        backbone=spec["backbone"],
        encoder_weights=spec["weights"],
        input_size=spec["input_size"],
        encoder_bf16=spec["bf16"],
    )
    values.update(values.pop("decoder"))
    args = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the resumed run's saved config, then the flags given on this command line. The encoder spec
    starts from the feature cache's (when training on one) unless the run being resumed already has one."""
    values = dataclasses.asdict(TrainConfig())
    if args.resume:
        saved = Path(args.resume) / TRAIN_CONFIG_FILE
        if not saved.exists():
            raise SystemExit(f"error: {saved} not found: is {args.resume} a training run directory?")
        values.update(dataclasses.asdict(TrainConfig(**json.loads(saved.read_text()))))
        values["output_dir"] = str(args.resume)
    values.update({k: v for k, v in vars(args).items() if k in values and k != "encoder" and v is not None})
    values["decoder"].update({k: v for k, v in vars(args).items() if k in values["decoder"] and v is not None})
    config = TrainConfig(**values)
    if config.cache_dir and not args.resume:
        made = read_metadata(config.cache_dir, "TRAIN", config.data_name, prefix=config.finetune_encoder)
        if made is not None:
            config = dataclasses.replace(config, encoder=spec_of(made))
    return dataclasses.replace(config, encoder=encoder_spec(args, config.encoder))


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)  # --help, usage errors
    args = given_flags(argv)
    config = resolve_config(args)
    if config.bf16 and config.device in ("", "cpu"):
        if warning := emulated_bf16_warning("--bf16", "--no-bf16 (fp32)"):
            print(warning)  # stdout: stderr is kept for the one-line errors
    if not config.data_name:
        print("error: --data-name is required (the base name printed by prepare_data.py)", file=sys.stderr)
        return 2
    if not args.resume and not args.overwrite and (held := existing_run(config.output_dir)):
        out = config.output_dir
        print(
            f"error: {out} already holds a training run ({held}); continue it with --resume {out}, or start over "
            "in it with --overwrite (or choose another --output-dir)",
            file=sys.stderr,
        )
        return 2
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        state = train(config, resume=args.resume)
    except KeyboardInterrupt:
        return interrupted(
            f"interrupted; python train.py --resume {config.output_dir} continues after the last finished epoch"
        )
    except (FileNotFoundError, ValueError, CacheIncomplete, EncoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metric = SCORES["val_" + state.get("select_on", "bleu4")]
    best = state["best_score"] if "select_on" in state else state["best_bleu4"]
    print(f"done: {state['epoch']} epochs, best {metric} {100 * best:.1f}; model in {config.output_dir}/best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
