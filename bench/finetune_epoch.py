"""Seconds per training epoch, measured in one run on this machine: the decoder on a frozen feature cache, the
decoder plus the trunk's last stage fine-tuned from a prefix cache, and the design's three fine-tuned stages from
pixels (what --finetune-encoder without a cache runs). Then the encoder's time per photo when captioning (as the
demo and the CLI run it) for a frozen and a fine-tuned model, BatchNorm folded, and the fine-tuned one unfolded.

Shapes of the shipped model: tf_efficientnet_lite2 at 448 px (offline weights), a 512/512/512 decoder, vocabulary
2278, 8 photos x 5 captions a step, caption lengths 6-17 words + 2; random inputs (the time does not depend on them).

    python -m bench.finetune_epoch --steps 4 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from captioning.config import EncoderSpec
from captioning.data import collate_images
from captioning.encoder import resolve_spec
from captioning.loss import TeacherForcedLoss
from captioning.model import Captioner, create_captioner, encoder_autocast
from captioning.precision import native_cpu_bf16
from captioning.preprocess import to_model_input
from captioning.training import TrainConfig, make_optimizer, train_one_epoch

EPOCH_CAPTIONS = 30_000  # Flickr8k's 6,000 train photos x 5 captions
STORED_SIZE = 256  # prepared images are stored at 256 px


def word_map(vocab: int) -> dict[str, int]:
    words = {"<pad>": 0, **{f"w{i}": i for i in range(1, vocab - 3)}}
    return {**words, "<start>": vocab - 3, "<end>": vocab - 2, "<unk>": vocab - 1}


def make_captioner(spec: EncoderSpec, vocab: int, stages: int) -> Captioner:
    """The shipped model's shapes; stages 0 = a frozen trunk."""
    torch.manual_seed(0)
    return create_captioner(spec, word_map(vocab), STORED_SIZE, finetuned=stages > 0, finetuned_stages=stages or 3)


def make_batches(inputs: torch.Tensor, args, generator: torch.Generator) -> list[tuple]:
    """Loader batches (inputs, captions, lengths, image_index, indices) of args.images photos and 5 captions each."""
    batches = []
    for step in range(args.steps):
        items = []
        for image in range(args.images):
            lengths = torch.randint(6, 18, (5,), generator=generator) + 2  # (5,)
            captions = torch.randint(4, args.vocab - 3, (5, 19), generator=generator)  # (5, T)
            items.append((inputs[image], captions, lengths, step * args.images + image))
        batches.append(collate_images(items))
    return batches


def seconds_per_1000_captions(captioner: Captioner, inputs: torch.Tensor, cached: bool, prefix: bool, args) -> float:
    """Steps as train_one_epoch runs them (forward, backward, clipping, Adam); step time only, after a warm-up."""
    config = TrainConfig(encoder_lr=1e-5, decoder_lr=1e-5)
    objective = TeacherForcedLoss(
        captioner, captioner.batch_encoder(cached=cached, prefix=prefix), config.attention_penalty
    )
    optimizer = make_optimizer(captioner, config)
    batches = make_batches(inputs, args, torch.Generator().manual_seed(0))
    train_one_epoch(objective, batches[:1], optimizer, config, torch.device("cpu"), 0)  # warm-up
    row = train_one_epoch(objective, batches[1:], optimizer, config, torch.device("cpu"), 0)
    return 1000.0 / row["captions_per_s"]


@torch.no_grad()
def median_seconds(run, repeats: int) -> float:
    """Median wall time of run() after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unfolded_encode(captioner: Captioner, images: torch.Tensor) -> torch.Tensor:
    """Captioner.encode without BatchNorm folding: the trunk as trained, then the same pooling."""
    images = images.contiguous(memory_format=torch.channels_last)  # (1, 3, I, I)
    with encoder_autocast(captioner.encoder_bf16, images):
        return captioner.encoder.annotations(captioner.encoder.trunk.forward_features(images)).float()  # (1, 196, C)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tf_efficientnet_lite2")
    parser.add_argument("--stages", type=int, default=1, help="stages fine-tuned from the prefix cache")
    parser.add_argument("--steps", type=int, default=4, help="steps per measurement, the first a warm-up")
    parser.add_argument("--images", type=int, default=8, help="photos per step (5 captions each)")
    parser.add_argument("--vocab", type=int, default=2278)
    parser.add_argument("--repeats", type=int, default=7, help="encoder runs per model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = resolve_spec(EncoderSpec(args.backbone, bf16=native_cpu_bf16()))
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.images, 3, STORED_SIZE, STORED_SIZE), dtype=torch.uint8, generator=generator)
    frozen = make_captioner(spec, args.vocab, 0)
    features = frozen.features_from_pixels(pixels).half()  # (N, 196, C) as the feature cache stores them
    tail = make_captioner(spec, args.vocab, args.stages)
    with torch.no_grad():
        prefixes = tail.encoder.prefix(to_model_input(pixels, tail.config.preprocessing), args.stages).half()
    print(
        f"{args.backbone} at {spec.input_size} px, bf16 {spec.bf16}, {args.images} photos x 5 captions a step, "
        f"{args.steps - 1} timed steps, {torch.get_num_threads()} threads; prefix {tuple(prefixes.shape[1:])} "
        f"({prefixes[0].numel() * 2 / 1024:.0f} KiB a photo in fp16)"
    )
    rows = [
        ("frozen trunk, feature cache", seconds_per_1000_captions(frozen, features, True, False, args)),
        (
            f"{args.stages} stage(s) fine-tuned, prefix cache",
            seconds_per_1000_captions(tail, prefixes, True, True, args),
        ),
        (
            "3 stages fine-tuned, pixels",
            seconds_per_1000_captions(make_captioner(spec, args.vocab, 3), pixels, False, False, args),
        ),
    ]
    base = rows[0][1]
    print(f"{'training':<36} {'s / 1000 captions':>18} {'s / epoch (30k)':>16} {'x frozen':>9}")
    for name, seconds in rows:
        print(f"{name:<36} {seconds:>18.1f} {seconds * EPOCH_CAPTIONS / 1000:>16.0f} {seconds / base:>9.2f}")
    photo = to_model_input(pixels[:1], frozen.config.preprocessing)  # (1, 3, I, I)
    for captioner in (frozen, tail):
        captioner.eval()
        captioner.use_fastest_encoder()  # as the demo and the CLI load a model
    encoder_rows = [
        ("frozen, BatchNorm folded", median_seconds(lambda: frozen.encode(photo), args.repeats)),
        (f"{args.stages} stage(s) fine-tuned, folded", median_seconds(lambda: tail.encode(photo), args.repeats)),
        (
            f"{args.stages} stage(s) fine-tuned, not folded",
            median_seconds(lambda: unfolded_encode(tail, photo), args.repeats),
        ),
    ]
    print(f"{'encoder per photo (captioning)':<36} {'ms':>18} {'x frozen':>16}")
    for name, seconds in encoder_rows:
        print(f"{name:<36} {1000 * seconds:>18.0f} {seconds / encoder_rows[0][1]:>16.2f}")


if __name__ == "__main__":
    main()
