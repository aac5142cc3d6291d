"""End-to-end evaluation throughput: images/s for encoder + batched beam search, the path
`python -m captioning.cli.evaluate` takes (uint8 pixels -> Captioner.features_from_pixels -> caption_features).

    python -m bench.eval_throughput --model assets/model --images 64 --batch-size 16 --beam-size 3 --threads 2

Images are the example photos in assets/examples (resized once, cycled to --images) or, with --source random,
uniform noise. Prints images/s and the split between encoder and decoder time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from captioning.checkpoint import CheckpointError
from captioning.model import Captioner
from captioning.preprocess import load_image, resize_square

REPO = Path(__file__).resolve().parents[1]


def make_pixels(source: str, count: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 3, S, S): the example photos cycled, or random noise."""
    if source == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (count, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    paths = sorted((REPO / "assets" / "examples").glob("*.jpg"))
    if not paths:
        raise FileNotFoundError("no example images in assets/examples (use --source random)")
    photos = [resize_square(load_image(p), image_size) for p in paths]  # (3, S, S) each
    return torch.from_numpy(np.stack([photos[i % len(photos)] for i in range(count)]))  # (count, 3, S, S)


def measure(model: Captioner, pixels: torch.Tensor, batch_size: int, beam_size: int, length_penalty: float) -> dict:
    """Seconds spent encoding and decoding all images in batches, and caption statistics."""
    encode_s = decode_s = 0.0
    lengths, incomplete = [], 0
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size]  # (b, 3, S, S)
        t0 = time.perf_counter()
        features = model.features_from_pixels(batch)  # (b, 196, C)
        t1 = time.perf_counter()
        captions = model.caption_features(features, beam_size, length_penalty)
        t2 = time.perf_counter()
        encode_s, decode_s = encode_s + t1 - t0, decode_s + t2 - t1
        lengths += [len(c.words) for c in captions]
        incomplete += sum(not c.complete for c in captions)
    return {"encode_s": encode_s, "decode_s": decode_s, "mean_words": float(np.mean(lengths)), "incomplete": incomplete}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/model", help="model directory")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--length-penalty", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", choices=("examples", "random"), default="examples")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--channels-last", action="store_true", help="run the encoder in channels_last memory format")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model = Captioner.load(args.model)
        pixels = make_pixels(args.source, args.images, model.config.preprocessing.image_size)
        if args.channels_last:
            model.encoder.to(memory_format=torch.channels_last)
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.warmup:
        measure(model, pixels[: args.batch_size * args.warmup], args.batch_size, args.beam_size, args.length_penalty)
    result = measure(model, pixels, args.batch_size, args.beam_size, args.length_penalty)
    total = result["encode_s"] + result["decode_s"]
    config, decoder = model.config, model.config.decoder
    settings = ("images", "batch_size", "beam_size", "threads", "source", "channels_last")  # the run's flags
    result.update(
        {name: getattr(args, name) for name in settings},
        images_per_s=args.images / total,
        backbone=config.encoder.backbone,
        input_size=config.preprocessing.input_size,
        encoder_bf16=config.encoder.bf16,
        decoder=f"{decoder.embed_dim}/{decoder.attention_dim}/{decoder.decoder_dim}",
        vocab=config.vocab_size,
    )
    print(
        f"{args.images} images ({args.source}), batch {args.batch_size}, beam {args.beam_size}, "
        f"{args.threads} threads{', channels_last' if args.channels_last else ''}, {config.encoder.backbone} @ "
        f"{config.preprocessing.input_size}px{' bf16' if config.encoder.bf16 else ''}, decoder "
        f"{result['decoder']}, vocab {config.vocab_size}"
    )
    print(
        f"  {result['images_per_s']:.2f} images/s end-to-end  (encoder {result['encode_s']:.2f}s = "
        f"{100 * result['encode_s'] / total:.0f}%, beam search {result['decode_s']:.2f}s; "
        f"{result['mean_words']:.1f} words/caption, {result['incomplete']} cut at max length)"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
