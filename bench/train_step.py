"""Decoder-only training throughput on random features: captions/s for fp32 and bf16 autocast, the work per
caption (GFLOP, torch.utils.flop_counter) and the fraction of this CPU's GEMM peak, measured in the same run.

Shapes of the shipped model: 196 x 1280 features, 512/512/512 dims, vocabulary 2500, 32 captions per step
(5 captions per image, so 7 images), caption lengths 6-17 words + 2, 2 threads.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from captioning.decoder import Decoder
from captioning.loss import caption_loss
from captioning.precision import native_cpu_bf16


def make_batch(generator: torch.Generator, captions: int, per_image: int, vocab: int, dim: int):
    """Random features for ceil(captions/per_image) images and captions of Flickr8k-like lengths."""
    images = -(-captions // per_image)
    features = torch.randn(images, 196, dim, generator=generator).half().float()  # (N, 196, C) as cached
    lengths = torch.randint(6, 18, (captions,), generator=generator) + 2  # (B,)
    tokens = torch.randint(4, vocab, (captions, int(lengths.max())), generator=generator)  # (B, T)
    tokens = tokens * (torch.arange(tokens.size(1))[None] < lengths[:, None])  # (B, T) zero padding
    image_index = torch.arange(captions) // per_image  # (B,)
    return features, tokens, lengths, image_index


def make_step(decoder: Decoder, bf16: bool):
    """One training step as train_one_epoch runs it: forward + loss under autocast, backward, clipping, Adam."""
    optimizer = torch.optim.Adam(decoder.parameters(), lr=4e-4, fused=True)  # as training.make_optimizer

    def step(features, tokens, lengths, image_index) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = decoder(features, tokens, lengths, image_index)
            loss, _, _ = caption_loss(output, tokens, attention_penalty=1.0 / 196)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 5.0, foreach=True)
        optimizer.step()

    return step


def measure(bf16: bool, args) -> tuple[float, float, float]:
    """(captions/s by wall clock, by this process's CPU time / threads, GFLOP per caption fwd + bwd)."""
    torch.manual_seed(0)
    decoder = Decoder(args.vocab, args.dim).train()
    step = make_step(decoder, bf16)
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(generator, args.captions, args.per_image, args.vocab, args.dim) for _ in range(args.steps)]
    for batch in batches[: args.warmup]:
        step(*batch)
    with FlopCounterMode(display=False) as counter:
        step(*batches[0])
    gflop_per_caption = counter.get_total_flops() / 1e9 / args.captions
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches[args.warmup :]:
        step(*batch)
    captions = (args.steps - args.warmup) * args.captions
    cpu_seconds = (time.process_time() - cpu) / args.threads
    return captions / (time.perf_counter() - wall), captions / cpu_seconds, gflop_per_caption


def gemm_peak(dtype: torch.dtype, threads: int, size: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """GFLOP/s of a large square matmul, best of repeats, by wall clock and by CPU time: the step's bound."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    wall = cpu = float("inf")
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, (time.process_time() - start_cpu) / threads)
    return 2 * size**3 / wall / 1e9, 2 * size**3 / cpu / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--captions", type=int, default=32)
    parser.add_argument("--per-image", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=2500)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument(
        "--precision",
        choices=("both", "fp32", "bf16"),
        default="both",
        help="which to measure (bf16 is emulated, and slow, on CPUs without bf16 instructions)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = {"fp32": 0.50, "bf16": 0.27}  # fractions of the same-run GEMM bound
    for name, bf16 in (("fp32", False), ("bf16", True)):
        if args.precision not in ("both", name):
            continue
        peak, peak_cpu = gemm_peak(torch.bfloat16 if bf16 else torch.float32, args.threads)
        rate, rate_cpu, gflop = measure(bf16, args)
        fraction = rate * gflop / peak
        if bf16 and not native_cpu_bf16():  # the emulated bf16 GEMM is slower than the step: no meaningful bound
            verdict = "no verdict: this CPU has no native bf16, torch emulates it"
        else:
            verdict = "met" if fraction >= targets[name] else "NOT met"
        print(
            f"{name}: {rate:.1f} captions/s, {gflop:.3f} GFLOP/caption, GEMM peak {peak:.0f} GFLOP/s: "
            f"{fraction:.0%} of the bound (target {targets[name]:.0%}: {verdict}); by CPU time (for a busy "
            f"machine): {rate_cpu:.1f} captions/s, peak {peak_cpu:.0f}, {rate_cpu * gflop / peak_cpu:.0%}"
        )


if __name__ == "__main__":
    main()
