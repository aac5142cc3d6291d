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
from captioning.config import ENCODER_FLAGS, DecoderConfig
from captioning.features import CacheIncomplete, read_metadata, spec_of
from captioning.model import EncoderUnavailable
from captioning.precision import emulated_bf16_warning
from captioning.training import SCORES, TrainConfig, existing_run, train


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


def add_field_flag(parser: argparse.ArgumentParser, field: dataclasses.Field, default) -> None:
    """--field-name with the field's default and help text (booleans get --flag / --no-flag)."""
    flag, help_text = "--" + field.name.replace("_", "-"), field.metadata["help"]
    if isinstance(default, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    else:
        parser.add_argument(flag, type=type(default), default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """A flag per TrainConfig field with a help text; the fields without one (data, cache, threads, encoder spec)
    take the flags every tool shares, from captioning.cli.args (their defaults are the fields' own)."""
    parser = make_parser("python train.py", __doc__)
    add_data_flags(parser, required=False)  # required unless --resume: checked in main
    add_cache_dir_flag(parser)
    add_threads_flag(parser)
    add_encoder_flags(parser)
    for field, default in flag_fields(TrainConfig()):
        if "help" in field.metadata:
            add_field_flag(parser, field, default)
    parser.add_argument("--resume", help=f"run directory to continue (its {TRAIN_CONFIG_FILE}, then the flags given)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --output-dir that already holds one (its files are replaced as the new run "
        "writes them); without it such a directory is refused",
    )
    return parser


def given_flags(argv: list[str] | None) -> dict[str, object]:
    """The flags on the command line, {destination: value}; a flag left out is absent, not its default, so a
    resumed run keeps its saved value. Parsing handles --help and usage errors too."""
    parser = build_parser()
    left_out = object()
    given = vars(parser.parse_args(argv, argparse.Namespace(**{a.dest: left_out for a in parser._actions})))
    return {name: value for name, value in given.items() if value is not left_out}


def command_line(config: TrainConfig) -> list[str]:
    """The train.py flags that reproduce a TrainConfig (build_parser's inverse; booleans as --x / --no-x)."""
    values = dataclasses.asdict(config)
    spec = values.pop("encoder")
    values.update({flag: spec[field] for flag, field in ENCODER_FLAGS.items()})
    values.update(values.pop("decoder"))
    args = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def saved_config(run_dir: str) -> TrainConfig:
    """The config a run saved (its train_config.json), continuing in run_dir."""
    saved = Path(run_dir) / TRAIN_CONFIG_FILE
    if not saved.exists():
        raise SystemExit(f"error: {saved} not found: is {run_dir} a training run directory?")
    return dataclasses.replace(TrainConfig.from_dict(json.loads(saved.read_text())), output_dir=str(run_dir))


def resolve_config(given: dict[str, object]) -> TrainConfig:
    """The run's config from the flags given (given_flags), in this order (docs/training.md tabulates it):

    1. the start: TrainConfig's defaults; with --resume the run's saved config, --output-dir the resumed directory;
    2. each flag given replaces its field, with --resume too (e.g. --epochs 40 trains a finished run longer);
    3. the encoder spec: with --resume the saved one; else the feature cache's, when --cache-dir holds one for
       this data, else EncoderSpec's defaults; then the encoder flags given replace its fields.

    --init-from sets no field from the model it names: it only starts the run's model from its weights."""
    resume = given.get("resume")
    start = saved_config(resume) if resume else TrainConfig()
    fields, decoder_fields = ({f.name for f in dataclasses.fields(c)} for c in (TrainConfig, DecoderConfig))
    config = dataclasses.replace(
        start,
        **{name: value for name, value in given.items() if name in fields},
        decoder=start.decoder.with_changes(**{name: value for name, value in given.items() if name in decoder_fields}),
    )
    if config.cache_dir and not resume:
        made = read_metadata(config.cache_dir, "TRAIN", config.data_name, prefix=config.finetune_encoder)
        if made is not None:
            config = dataclasses.replace(config, encoder=spec_of(made))
    encoder_flags = argparse.Namespace(**{dest: given.get(dest) for dest in ENCODER_FLAGS})
    return dataclasses.replace(config, encoder=encoder_spec(encoder_flags, config.encoder))


def main(argv: list[str] | None = None) -> int:
    given = given_flags(argv)
    resume = given.get("resume")
    config = resolve_config(given)
    if config.bf16 and config.device in ("", "cpu"):
        if warning := emulated_bf16_warning("--bf16", "--no-bf16 (fp32)"):
            print(warning)  # stdout: stderr is kept for the one-line errors
    if not config.data_name:
        print("error: --data-name is required (the base name printed by prepare_data.py)", file=sys.stderr)
        return 2
    if not resume and not given.get("overwrite") and (held := existing_run(config.output_dir)):
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
        state = train(config, resume=resume)
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
