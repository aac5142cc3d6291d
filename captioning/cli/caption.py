"""Caption images from the command line, optionally saving the per-word attention figure.

python -m captioning.cli.caption photo.jpg more/*.png
python -m captioning.cli.caption photo.jpg --json --out-dir attention/
python -m captioning.cli.caption photo.jpg --probe "a dog runs on the grass"   # how likely, word by word
python -m captioning.cli.caption photo.jpg --check     # does each word depend on where the model looked?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.attention_check import AttentionCheck, check_attention
from captioning.cli.args import add_beam_size_flag, add_model_flag, interrupted, load_captioner, make_parser
from captioning.model import Caption
from captioning.payload import check_scores, gate_values, probe_scores
from captioning.preprocess import load_image
from captioning.probe import Probe, image_features, probe, tokenize_probe
from captioning.visualize import attention_figure


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m captioning.cli.caption", __doc__)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    add_model_flag(parser)
    add_beam_size_flag(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of 'path: caption'")
    parser.add_argument("--out-dir", help="also write <stem>_attention.png (the per-word attention figure) here")
    parser.add_argument(
        "--probe",
        metavar="TEXT",
        help="also score this sentence on each image, read word by word as in training: each word's "
        "probability and rank, and the total log-probability beside the caption's (default: off)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also check each word of the caption: its probability with the cells holding half its attention "
        "hidden in the photo, with as many cells hidden elsewhere, and the share of its gradient in those cells "
        "(default: off; 1 + 4 encoder passes per word)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def caption_record(path: str, caption: Caption) -> dict:
    """What --json prints for one image."""
    return {
        "image": path,
        "caption": caption.text,
        "words": list(caption.words),
        "alphas_shape": list(caption.alphas.shape),
        "score": float(caption.score),
    }


def probe_record(text: str, probed: Probe) -> dict:
    """What --json adds for --probe: the typed text and how the model read it, word by word (no maps)."""
    return {
        "text": text,
        "words": list(probed.words),
        **probe_scores(probed),
        "gates": gate_values(probed.to_caption()),
    }


def probe_lines(path: str, probed: Probe, caption: Caption) -> list[str]:
    """What --probe prints for one image: the total beside the caption's, then one line per word and <end>."""
    lines = [f'{path}: probe "{probed.text}": log p = {probed.total_log_prob:.2f} (the caption: {caption.score:.2f})']
    width = max(len(word) for word in [*probed.words, "<end>"])
    for word, prob, rank, unknown in zip(probed.words, probed.probs, probed.ranks, probed.unknown):
        mark = "  <unk>: not in the vocabulary" if unknown else ""
        lines.append(f"  {word:<{width}}  p={prob:.4f}  rank {rank}{mark}")
    lines.append(f"  {'<end>':<{width}}  p={np.exp(probed.end_log_prob):.4f}  rank {probed.end_rank}")
    return lines


def report(path: str, caption: Caption, as_json: bool, text: str | None = None, probed: Probe | None = None) -> str:
    """What is printed for one image: 'path: caption' and the probe's lines, or one JSON line."""
    if as_json:
        record = caption_record(path, caption)
        return json.dumps({**record, "probe": probe_record(text, probed)} if probed else record)
    return "\n".join([f"{path}: {caption.text}", *(probe_lines(path, probed, caption) if probed else [])])


def check_lines(path: str, checked: AttentionCheck) -> list[str]:
    """What --check prints for one image: one line per word."""
    lines = [f"{path}: attention check (p as is -> with its attended cells hidden, -> with as many hidden elsewhere)"]
    width = max(len(word) for word in checked.words)
    for word, p, here, elsewhere, cells, share in zip(
        checked.words,
        checked.probs,
        checked.probs_hidden_here,
        checked.probs_hidden_elsewhere,
        checked.hidden_cells,
        checked.gradient_share,
    ):
        lines.append(
            f"  {word:<{width}}  p {p:.2f} -> {here:.2f} hidden here, -> {elsewhere:.2f} hidden elsewhere "
            f"({len(cells)} cells; {share:.0%} of the positive gradient in them)"
        )
    return lines


def figure_path(out_dir: Path, image_path: str, taken: set[Path]) -> Path:
    """<stem>_attention.png, numbered if two inputs share a stem in this run."""
    stem = Path(image_path).stem
    path, n = out_dir / f"{stem}_attention.png", 1
    while path in taken:
        n += 1
        path = out_dir / f"{stem}_{n}_attention.png"
    taken.add(path)
    return path


def check_caption(captioner, path: str, image, caption: Caption, features) -> AttentionCheck | None:
    """--check of one image's caption; None (with a note) for a caption that cannot be checked."""
    try:
        return check_attention(captioner, image, caption.text, features=features)
    except ValueError as error:
        print(f"{path}: --check: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    """0 if every image was captioned, 1 if some could not be read, 2 if the model could not be loaded."""
    args = parse_args(argv)
    captioner = load_captioner(args.model, fastest_encoder=True)
    if captioner is None:
        return 2
    if args.probe is not None:
        try:
            tokens = tokenize_probe(args.probe, captioner.word_map, captioner.config.max_caption_len)
        except ValueError as error:
            print(f"error: --probe: {error}", file=sys.stderr)
            return 2
        if tokens.truncated:
            print(
                f"note: --probe: only the first {len(tokens.words)} words are scored (the model's maximum caption "
                "length)",
                file=sys.stderr,
            )
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    status, written = 0, set()
    try:
        for path in args.images:
            try:
                image = load_image(path)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                print(f"{path}: cannot read image: {error}", file=sys.stderr)
                status = 1
                continue
            features = image_features(captioner, image)  # (1, 196, C) encoded once, for the caption and the probe
            caption = captioner.caption_features(features, beam_size=args.beam_size)[0]
            probed = probe(captioner, features, args.probe)[0] if args.probe is not None else None
            checked = check_caption(captioner, path, image, caption, features) if args.check else None
            if args.json:
                record = json.loads(report(path, caption, True, args.probe, probed))
                if checked is not None:
                    record["check"] = check_scores(checked)
                print(json.dumps(record), flush=True)
            else:
                print(report(path, caption, False, args.probe, probed), flush=True)
                if checked is not None:
                    print("\n".join(check_lines(path, checked)), flush=True)
            if out_dir:
                figure = attention_figure(image, caption, attention=captioner.config.decoder.attention)
                figure.savefig(figure_path(out_dir, path, written), dpi=100)
    except KeyboardInterrupt:
        return interrupted("interrupted; the images above were captioned")
    return status


if __name__ == "__main__":
    sys.exit(main())
