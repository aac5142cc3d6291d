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

from captioning.checkpoint import CheckpointError
from captioning.model import Caption, Captioner
from captioning.preprocess import load_image
from captioning.visualize import attention_figure

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m captioning.caption", description="Caption images.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory; default: %(default)s")
    parser.add_argument("--beam-size", type=int, default=3, help="1 = greedy")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of 'path: caption'")
    parser.add_argument("--out-dir", help="also write <stem>_attention.png (the per-word attention figure) here")
    return parser.parse_args(argv)


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
    if args.beam_size < 1:
        print("error: --beam-size must be at least 1", file=sys.stderr)
        return 2
    try:
        captioner = Captioner.load(args.model)
    except (CheckpointError, OSError, ImportError, ValueError) as error:
        print(f"error: cannot load the model from {args.model}: {error}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    status, written = 0, set()
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
            attention_figure(image, caption).savefig(figure_path(out_dir, path, written), dpi=100)
    return status


if __name__ == "__main__":
    sys.exit(main())
