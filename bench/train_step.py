"""Decoder-only training throughput on random features: prints captions/s for fp32 and bf16 autocast.

Shapes as in issue 4: 196 x 1280 features, 512/512/512 dims, vocabulary 2500, 32 captions per step
(5 captions per image, so 7 images), caption lengths 6-17 words + 2, 2 threads.
"""

from __future__ import annotations

import argparse
import time

import torch

from captioning.decoder import Decoder
from captioning.loss import caption_loss


def make_batch(generator: torch.Generator, captions: int, per_image: int, vocab: int, dim: int):
    """Random features for ceil(captions/per_image) images and captions of Flickr8k-like lengths."""
    images = -(-captions // per_image)
    features = torch.randn(images, 196, dim, generator=generator).half().float()  # (N, 196, C) as cached
    lengths = torch.randint(6, 18, (captions,), generator=generator) + 2  # (B,)
    tokens = torch.randint(4, vocab, (captions, int(lengths.max())), generator=generator)  # (B, T)
    tokens = tokens * (torch.arange(tokens.size(1))[None] < lengths[:, None])  # (B, T) zero padding
    image_index = torch.arange(captions) // per_image  # (B,)
    return features, tokens, lengths, image_index


def measure(bf16: bool, steps: int, warmup: int, args) -> float:
    torch.manual_seed(0)
    decoder = Decoder(args.vocab, args.dim, 512, 512, 512, 0.5).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=4e-4)
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(generator, args.captions, args.per_image, args.vocab, args.dim) for _ in range(steps)]
    start = None
    for i, (features, tokens, lengths, image_index) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = decoder(features, tokens, lengths, image_index)
            loss, _, _ = caption_loss(output, tokens, attention_penalty=1.0 / 196)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 5.0)
        optimizer.step()
    return (steps - warmup) * args.captions / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--captions", type=int, default=32)
    parser.add_argument("--per-image", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=2500)
    parser.add_argument("--dim", type=int, default=1280)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        print(f"{name}: {measure(bf16, args.steps, args.warmup, args):.1f} captions/s")


if __name__ == "__main__":
    main()
