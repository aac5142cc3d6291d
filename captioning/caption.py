"""Caption images from the command line, optionally saving the per-word attention figure.

    python -m captioning.caption photo.jpg more/*.png
    python -m captioning.caption photo.jpg --json --out-dir attention/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from captioning import cli
from captioning.model import Caption
from captioning.preprocess import load_image
from captioning.visualize import attention_figure


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("python -m captioning.caption", __doc__)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    cli.add_model_flag(parser)
    cli.add_beam_size_flag(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of 'path: caption'")
    parser.add_argument("--out-dir", help="also write <stem>_attention.png (the per-word attention figure) here")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def caption_record(path: str, caption: Caption) -> dict:
    """What --json prints for one image."""
    return {"image": path, "caption": caption.text, "words": list(caption.words),
            "alphas_shape": list(caption.alphas.shape), "score": float(caption.score)}


def figure_path(out_dir: Path, image_path: str, taken: set[Path]) -> Path:
    """<stem>_attention.png, numbered if two inputs share a stem in this run."""
    stem = Path(image_path).stem
    path, n = out_dir / f"{stem}_attention.png", 1
    while path in taken:
        n += 1
        path = out_dir / f"{stem}_{n}_attention.png"
    taken.add(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """0 if every image was captioned, 1 if some could not be read, 2 if the model could not be loaded."""
    args = parse_args(argv)
    captioner = cli.load_captioner(args.model, fastest_encoder=True)
    if captioner is None:
        return 2
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
            caption = captioner.caption(image, beam_size=args.beam_size)[0]
            print(json.dumps(caption_record(path, caption)) if args.json else f"{path}: {caption.text}", flush=True)
            if out_dir:
                figure = attention_figure(image, caption, attention=captioner.config.attention)
                figure.savefig(figure_path(out_dir, path, written), dpi=100)
    except KeyboardInterrupt:
        return cli.interrupted("interrupted; the images above were captioned")
    return status


if __name__ == "__main__":
    sys.exit(main())
