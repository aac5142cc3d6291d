"""Record what the shipped models say through the demo's /caption, then compare a later tree's answers with it.

    python -m bench.caption_record record before.json          # on the tree before a change
    python -m bench.caption_record compare before.json         # on the tree after it: same captions and scores?
    python -m bench.caption_record record x.json --val 20 --beam-size 1

The demo runs as `python app.py` in a subprocess (the tree's own app, on a free port) and every photo goes through
gradio_client's /caption: the example photos plus the first --val Flickr8k val photos (by file name), each with
every shipped model. Recorded per photo and model: the caption, its score and every beam alternative's words and
score. compare prints each difference and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradio_client import Client, handle_file

from bench.space_start import free_port, served_url
from captioning.shipped import example_photos

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = Path("/work/shared/flickr8k")  # Karpathy split json and images/ (--flickr8k)
MODELS = ("model", "model_hard")


def val_photos(count: int, root: Path = FLICKR8K) -> list[Path]:
    """The first `count` val photos of the Karpathy split, by file name."""
    images = json.loads((root / "dataset_flickr8k.json").read_text())["images"]
    names = sorted(image["filename"] for image in images if image["split"] == "val")
    return [root / "images" / name for name in names[:count]]


def summary(text: str, data: dict) -> dict:
    """What must not change: the caption text, and every beam caption's words and score."""
    captions = [data, *data.get("alternatives", [])]
    return {"text": text, "captions": [{"words": c["words"], "score": c.get("score")} for c in captions]}


def serve(port: int, workdir: Path) -> subprocess.Popen:
    """This tree's demo on `port`, both shipped models, no examples captioned at start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTIONING_", "GRADIO_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", GRADIO_TEMP_DIR=str(workdir / "gradio"))
    command = [sys.executable, "app.py", "--port", str(port), "--cache-examples", "off", "--examples", "none"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def record(photos: list[Path], beam: int) -> dict[str, dict]:
    """{"<photo name> <model>": summary} for every photo and shipped model, through a served demo's /caption."""
    workdir = Path(tempfile.mkdtemp(prefix="caption-record-"))
    app = serve(free_port(), workdir)
    try:
        client = Client(served_url(app), verbose=False, download_files=str(workdir))
        answers, start = {}, time.perf_counter()
        for photo in photos:
            for model in MODELS:
                text, data = client.predict(handle_file(str(photo)), beam, model, api_name="/caption")
                answers[f"{photo.name} {model}"] = summary(text, data)
        print(
            f"{len(answers)} captions ({len(photos)} photos x {len(MODELS)} models, beam {beam}) "
            f"in {time.perf_counter() - start:.0f} s"
        )
        client.close()
        return answers
    finally:
        app.terminate()
        app.wait(timeout=30)


def differences(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """One line per photo and model whose answer changed, or that only one side has."""
    lines = [f"{key}: only in the record" for key in before.keys() - after.keys()]
    lines += [f"{key}: not in the record" for key in after.keys() - before.keys()]
    for key in sorted(before.keys() & after.keys()):
        if before[key] != after[key]:
            lines.append(
                f"{key}: {before[key]['text']!r} (score {before[key]['captions'][0]['score']}) -> "
                f"{after[key]['text']!r} (score {after[key]['captions'][0]['score']})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("file", type=Path, help="the record: written by record, read by compare")
    parser.add_argument("--val", type=int, default=100, help="Flickr8k val photos after the examples (default 100)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K, help="dataset_flickr8k.json and images/")
    args = parser.parse_args()
    if args.action == "compare":
        recorded = json.loads(args.file.read_text())
        photos = [Path(p) for p in recorded["photos"]]
        answers = record(photos, recorded["beam"])
        changed = differences(recorded["answers"], answers)
        print("\n".join(changed) or f"identical: all {len(answers)} captions, scores and beam alternatives")
        sys.exit(1 if changed else 0)
    photos = [*map(Path, example_photos()), *val_photos(args.val, args.flickr8k)]
    answers = record(photos, args.beam_size)
    record_file = {"beam": args.beam_size, "photos": [str(p) for p in photos], "answers": answers}
    args.file.write_text(json.dumps(record_file, indent=1))
    print(f"recorded in {args.file}")


if __name__ == "__main__":
    main()
