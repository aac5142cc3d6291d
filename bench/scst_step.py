"""Self-critical training throughput on random features: images/s of one SCST step (sample K captions per image,
CIDEr-D rewards, leave-one-out baseline, backward, clipping, Adam), fp32 and bf16 autocast.

Shapes of the shipped model: 196 x 1280 features, 512/512/512 dims, vocabulary 2278, 8 images x 5 samples per
step, samples of at most 20 words, 5 references of 8-15 words per image (CIDEr-D idf over 6,000 such images).

    python -m bench.scst_step --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from captioning.cider import CiderD
from captioning.decoder import Decoder
from captioning.scst import caption_texts, cider_rewards, leave_one_out_advantage, policy_gradient_loss, sample_captions

PAD, START, END, UNK = 0, 1, 2, 3


def make_references(generator: torch.Generator, images: int, vocab: int) -> list[list[str]]:
    """Five captions of 8-15 words per image, words drawn from a Zipf-like distribution as in real captions."""
    weights = 1.0 / torch.arange(1, vocab - 3, dtype=torch.float64)  # (V-4,)
    references = []
    for _ in range(images):
        refs = []
        for _ in range(5):
            length = int(torch.randint(8, 16, (1,), generator=generator))
            words = torch.multinomial(weights, length, replacement=True, generator=generator) + 4  # (length,)
            refs.append(" ".join(f"w{int(w)}" for w in words))
        references.append(refs)
    return references


def measure(bf16: bool, args, scorer: CiderD, references: list[list[str]]) -> tuple[float, float]:
    """(images/s, mean sampled length) over the timed steps."""
    torch.manual_seed(0)
    decoder = Decoder(args.vocab, args.dim).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-5, fused=True)
    id_to_word = {i: f"w{i}" for i in range(args.vocab)}
    generator = torch.Generator().manual_seed(0)
    lengths, images = [], 0
    for step in range(args.steps):
        if step == args.warmup:
            started = time.perf_counter()
        features = torch.randn(args.images, 196, args.dim, generator=generator).half().float()  # (N, 196, C)
        keys = [(step * args.images + i) % len(references) for i in range(args.images)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            samples = sample_captions(decoder, features, args.samples, START, END, (PAD, START, UNK), args.max_len)
        texts = caption_texts(samples.tokens, id_to_word, END)
        rewards = cider_rewards(scorer, texts, [references[k] for k in keys], keys)  # (N, K)
        loss = policy_gradient_loss(samples, leave_one_out_advantage(rewards))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 5.0, foreach=True)
        optimizer.step()
        if step >= args.warmup:
            images += args.images
            lengths.append(float(samples.mask.sum(dim=1).float().mean()))
    return images / (time.perf_counter() - started), sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=2278)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument(
        "--precision",
        choices=("both", "fp32", "bf16"),
        default="both",
        help="which to measure (bf16 is emulated, and slow, on CPUs without bf16 instructions)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(1)
    references = make_references(generator, 6000, args.vocab)
    scorer = CiderD(references)
    for name, bf16 in (("fp32", False), ("bf16", True)):
        if args.precision not in ("both", name):
            continue
        rate, length = measure(bf16, args, scorer, references)
        print(
            f"{name}: {rate:.1f} images/s ({rate * args.samples:.0f} sampled captions/s, K={args.samples}, "
            f"mean sample length {length:.1f} words incl. <end>)"
        )


if __name__ == "__main__":
    main()
