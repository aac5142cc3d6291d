"""Does a word depend on where the model looked? The attention check (captioning.attention_check) over the first
val photos of Flickr8k's Karpathy split, for each model, on its own caption (beam 3): the mean drop of a word's
probability when its attended cells are hidden vs when as many cells elsewhere are, for content and function words,
and the share of the word's positive gradient mass inside its attended cells (beside the share of the grid they
cover, what a map blind to the word would give).

    python -m bench.attention_check_study --images 40 --out runs/check_study.jsonl      # check (resumable)
    python -m bench.attention_check_study --out runs/check_study.jsonl --summary        # the tables only
    python -m bench.attention_check_study --figure model:1731546544_9fbf14617b.jpg:2 --figure-dir docs/figures

One JSON line per photo and model is appended to --out as it is done, so a long run can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from captioning.attention_check import check_attention, drops, hidden_picture
from captioning.heatmap import word_overlay
from captioning.model import Captioner
from captioning.preprocess import load_image

KARPATHY_JSON = "/work/shared/flickr8k/dataset_flickr8k.json"
IMAGE_DIR = "/work/shared/flickr8k/images"
# Words that carry grammar rather than something to see: articles, prepositions, auxiliaries, conjunctions,
# pronouns. Every other word counts as a content word.
FUNCTION_WORDS = frozenset(
    "a an the is are was be being of in on at to into onto with without while and or by for from up down over under "
    "near through across along behind beside next his her its their he she they it this that there as".split()
)


def val_photos(karpathy_json: str, image_dir: str, count: int) -> list[Path]:
    """The first `count` val photos in the split file's order."""
    images = json.loads(Path(karpathy_json).read_text())["images"]
    return [Path(image_dir) / entry["filename"] for entry in images if entry["split"] == "val"][:count]


def check_row(captioner: Captioner, model: str, photo: Path) -> dict:
    """One photo's check of the model's own caption, per word, as a JSON-safe row."""
    checked = check_attention(captioner, photo)
    here, elsewhere = drops(checked)
    return {
        "model": model,
        "photo": photo.name,
        "words": checked.words,
        "probs": checked.probs.round(6).tolist(),
        "drop_here": here.round(6).tolist(),
        "drop_elsewhere": elsewhere.round(6).tolist(),
        "cells": [len(cells) for cells in checked.hidden_cells],
        "gradient_share": [None if np.isnan(s) else round(float(s), 4) for s in checked.gradient_share],
    }


def summary(rows: list[dict]) -> str:
    """Markdown table: per model and word kind, words, mean drop hidden here / elsewhere, the share of words whose
    drop here is larger, mean gradient share in the attended cells and the cells' share of the grid (area)."""
    lines = [
        "| model | words | n | photos | drop here | drop elsewhere | here > elsewhere | gradient in cells | area |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model]
        for kind in ("content", "function", "all"):
            picked = [
                (h, e, s, c)
                for row in mine
                for w, h, e, s, c in zip(
                    row["words"], row["drop_here"], row["drop_elsewhere"], row["gradient_share"], row["cells"]
                )
                if kind == "all" or (w in FUNCTION_WORDS) == (kind == "function")
            ]
            if not picked:
                continue
            here, elsewhere = np.array([p[0] for p in picked]), np.array([p[1] for p in picked])
            shares = np.array([p[2] for p in picked if p[2] is not None])
            area = np.mean([p[3] / 196 for p in picked])
            lines.append(
                f"| {model} | {kind} | {len(picked)} | {len(mine)} | {here.mean():.3f} | {elsewhere.mean():.3f} | "
                f"{(here > elsewhere).mean():.2f} | {shares.mean():.2f} | {area:.3f} |"
            )
    return "\n".join(lines)


PANEL_WIDTH = 240  # px per panel of a figure
TITLE_HEIGHT = 22


def check_figure(captioner: Captioner, photo: Path, index: int) -> Image.Image:
    """One word's check as a strip: its attention, its gradient map (positive part), the photo with its attended
    cells hidden and with the first draw elsewhere hidden; the numbers above."""
    image = load_image(photo)
    checked = check_attention(captioner, image)
    shown = image.resize((PANEL_WIDTH, round(PANEL_WIDTH * image.height / image.width)), Image.BILINEAR)
    grid, mean = checked.gradient.shape[-1], captioner.config.preprocessing.mean
    attention = captioner.config.decoder.attention
    panels = [
        word_overlay(shown, checked.alphas[index], attention),
        word_overlay(shown, np.clip(checked.gradient[index], 0.0, None), "soft"),
        Image.fromarray(hidden_picture(np.asarray(shown), checked.hidden_cells[index], grid, mean)),
        Image.fromarray(hidden_picture(np.asarray(shown), checked.elsewhere_cells[index][0], grid, mean)),
    ]
    labels = ["attention", "gradient map", "hidden here", "hidden elsewhere (1 of 4)"]
    figure = Image.new("RGB", (4 * PANEL_WIDTH, 2 * TITLE_HEIGHT + shown.height), "white")
    draw = ImageDraw.Draw(figure)
    word, p = checked.words[index], checked.probs[index]
    here, elsewhere = checked.probs_hidden_here[index], checked.probs_hidden_elsewhere[index]
    draw.text(
        (6, 4),
        f'"{" ".join(checked.words)}"  -  {word}: p {p:.2f} -> {here:.2f} hidden here, -> {elsewhere:.2f} hidden '
        f"elsewhere; {checked.gradient_share[index]:.0%} of its positive gradient in the hidden cells",
        fill="black",
    )
    for i, (panel, label) in enumerate(zip(panels, labels)):
        figure.paste(panel, (i * PANEL_WIDTH, 2 * TITLE_HEIGHT))
        draw.text((i * PANEL_WIDTH + 6, TITLE_HEIGHT + 4), label, fill="black")
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["model", "model_hard"], help="model directories or names")
    parser.add_argument("--images", type=int, default=40, help="first N val photos (default: %(default)s)")
    parser.add_argument("--karpathy-json", default=KARPATHY_JSON)
    parser.add_argument("--image-dir", default=IMAGE_DIR)
    parser.add_argument("--out", default="runs/attention_check_study.jsonl", help="JSON lines, appended")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="print the tables of --out and stop")
    parser.add_argument("--figure", action="append", metavar="MODEL:PHOTO:WORD", help="draw this word's check, stop")
    parser.add_argument("--figure-dir", default="docs/figures")
    args = parser.parse_args()
    if args.figure:
        torch.set_num_threads(args.threads)
        for spec in args.figure:
            model, photo, index = spec.split(":")
            captioner = Captioner.load(model)
            captioner.use_fastest_encoder()
            path = Path(args.figure_dir) / f"check_{model}_{Path(photo).stem}_{index}.jpg"
            check_figure(captioner, Path(args.image_dir) / photo, int(index)).save(path, quality=80)
            print(path)
        return

    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not args.summary:
        torch.set_num_threads(args.threads)
        out.parent.mkdir(parents=True, exist_ok=True)
        done = {(row["model"], row["photo"]) for row in rows}
        photos = val_photos(args.karpathy_json, args.image_dir, args.images)
        captioners = {model: Captioner.load(model) for model in args.models}
        for captioner in captioners.values():
            captioner.use_fastest_encoder()  # as the demo runs it
        for photo in photos:  # photo by photo, every model: a stopped run holds the same photos for each
            for model, captioner in captioners.items():
                if (model, photo.name) in done:
                    continue
                row = check_row(captioner, model, photo)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
                print(model, photo.name, " ".join(row["words"]), flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
