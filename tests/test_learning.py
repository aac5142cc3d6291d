"""The model really learns: synthetic shapes, offline pretrained lite0 features, a small decoder, a few minutes of
CPU training. Validation BLEU-4 >= 50, and for shape words the attention argmax falls inside that shape's
ground-truth box in >= 50% of cases.

Setup: 600 synthetic images (224 px) split 480 train / 120 val (the generator's 10% test part joins val, so the
attention figure rests on ~200 shape words), encoder features cached once at a 448 px input (lite0's native
14x14 map: 224 px gives only 7x7, too coarse for the shapes), two images per encoder batch (on CPU about twice as
fast as 32: the activations stay in cache), decoder embed 64 / attention 64 / LSTM 128 (dropout 0 soft, 0.2
hard), no doubly stochastic penalty (it spreads attention), CPU bf16 autocast where the CPU has native bf16
(elsewhere it is emulated, 10x slower: fp32 then), 8 epochs (soft) or 6 (hard) of batch 32, greedy validation.
The same for a hard-attention model (one sampled location per word, REINFORCE): it must learn too, and its argmax
location must fall in the box more often than chance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TorchThreads, prepare_shapes

from captioning.config import DecoderConfig, EncoderSpec
from captioning.encoder import Encoder, preprocessing_for
from captioning.features import cache_features, load_cached_features
from captioning.metrics import bleu4
from captioning.model import Caption, Captioner
from captioning.precision import native_cpu_bf16
from captioning.prepare import read_synthetic
from captioning.synthetic import COLORS, SHAPES
from captioning.training import TrainConfig, train

BACKBONE = "tf_efficientnet_lite0"
NUM_IMAGES = 600
IMAGE_SIZE = 224  # stored pixels; boxes are in these coordinates
INPUT_SIZE = 448  # encoder input: a native 14x14 map for lite0
GRID = 14
EPOCHS = 6  # the hard model's
SOFT_EPOCHS = 8  # its attention-in-box rate is noisy (0.50-0.61 over seeds): 8 epochs raise the mean a little
MIN_BLEU4 = 0.5  # a fraction, as the metric returns it: 50.0 as printed
MIN_ATTENTION_IN_BOX = 0.5
BF16 = native_cpu_bf16()  # emulated bf16 would make this test 10x slower


# train() sets the global thread count; one_thread restores it after each test
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Prepared 600-image shapes dataset with TRAIN/VAL features cached by the offline lite0 encoder."""
    root = tmp_path_factory.mktemp("learning")
    caption_set = read_synthetic(NUM_IMAGES, root / "images", seed=7, image_size=IMAGE_SIZE)
    caption_set.splits = {name: "val" if split == "test" else split for name, split in caption_set.splits.items()}
    summary = prepare_shapes(caption_set, root, IMAGE_SIZE)
    encoder = Encoder(BACKBONE, "lite-wheel")  # runs channels_last itself
    prep = preprocessing_for(encoder, IMAGE_SIZE, INPUT_SIZE)
    started = time.perf_counter()
    with TorchThreads(2):
        cache_splits(encoder, prep, root, summary.base_name)
    cache_seconds = time.perf_counter() - started
    return {
        "root": root,
        "data_dir": root / "data",
        "data_name": summary.base_name,
        "cache_dir": root / "cache",
        "images": summary.images,
        "cache_seconds": cache_seconds,
    }


def cache_splits(encoder: Encoder, prep, root, base_name: str) -> None:
    """TRAIN and VAL features of the prepared shapes data under root/cache."""
    for split in ("TRAIN", "VAL"):
        names = json.loads((root / "data" / f"{split}_NAMES_{base_name}.json").read_text())
        with h5py.File(root / "data" / f"{split}_IMAGES_{base_name}.hdf5", "r") as h5:
            cache_features(
                encoder,
                lambda a, b, images=h5["images"]: images[a:b],
                names,
                root / "cache",
                split,
                prep,
                batch_size=2,
                bf16=BF16,
                data_name=base_name,
            )


def attention_in_box(captions: list[Caption], objects: list[list[dict]], image_size: int) -> dict:
    """For each generated shape word matched to one object (its shape; the preceding colour word decides between
    several), is the argmax cell's centre inside the object's box widened by half a cell? Also the chance rate:
    the share of the grid's cell centres inside that widened box (a uniformly random argmax)."""
    cell = image_size / GRID
    centres = (np.arange(GRID) + 0.5) * cell  # (14,) cell centres in stored-image pixels
    hits, chance, matched, unmatched = 0, [], 0, 0
    for caption, image_objects in zip(captions, objects):
        for i, word in enumerate(caption.words):
            if word not in SHAPES:
                continue
            candidates = [o for o in image_objects if o["shape"] == word]
            if len(candidates) > 1 and i > 0 and caption.words[i - 1] in COLORS:
                candidates = [o for o in candidates if o["color"] == caption.words[i - 1]]
            if len(candidates) != 1:  # a shape the image lacks, or ambiguous without a colour
                unmatched += 1
                continue
            x0, y0, x1, y1 = (v + d for v, d in zip(candidates[0]["box"], (-cell / 2, -cell / 2, cell / 2, cell / 2)))
            row, col = np.unravel_index(np.argmax(caption.alphas[i]), caption.alphas[i].shape)  # row = y, col = x
            x, y = centres[col], centres[row]
            hits += bool(x0 <= x <= x1 and y0 <= y <= y1)
            inside_x, inside_y = (centres >= x0) & (centres <= x1), (centres >= y0) & (centres <= y1)
            chance.append(inside_x.mean() * inside_y.mean())
            matched += 1
    return {
        "rate": hits / max(matched, 1),
        "matched": matched,
        "unmatched": unmatched,
        "chance": float(np.mean(chance)) if chance else 0.0,
    }


def test_attention_in_box_geometry():
    """The measure itself: x is the column, y the row; a peak on the box hits, elsewhere misses."""
    objects = [
        [
            {"shape": "circle", "color": "red", "box": [160, 16, 208, 64]},  # top right
            {"shape": "square", "color": "blue", "box": [16, 160, 64, 208]},
        ]
    ]  # bottom left
    alphas = np.zeros((4, GRID, GRID), dtype=np.float32)
    alphas[1, 2, 11] = 1.0  # "circle": row 2 (y ~ 40), column 11 (x ~ 184): inside the red circle's box
    alphas[3, 11, 2] = 1.0  # "square": row 11, column 2: inside the blue square's box
    caption = Caption(["red", "circle", "blue", "square"], alphas, 0.0)
    assert attention_in_box([caption], objects, 224)["rate"] == 1.0
    swapped = Caption(caption.words, alphas.transpose(0, 2, 1).copy(), 0.0)  # rows and columns exchanged
    result = attention_in_box([swapped], objects, 224)
    assert result["rate"] == 0.0 and result["matched"] == 2
    unmatched = Caption(["green", "triangle"], alphas[:2], 0.0)  # no triangle in the image
    assert attention_in_box([unmatched], objects, 224)["unmatched"] == 1


def learning_config(shapes, run_dir, **overrides) -> TrainConfig:
    """The small decoder on the cached shapes features, two threads."""
    values = dict(
        data_dir=str(shapes["data_dir"]),
        data_name=shapes["data_name"],
        output_dir=str(run_dir),
        cache_dir=str(shapes["cache_dir"]),
        encoder=EncoderSpec(BACKBONE, "lite-wheel", INPUT_SIZE, BF16),
        decoder=DecoderConfig(64, 64, 128, dropout=0.2),
        epochs=EPOCHS,
        batch_size=32,
        decoder_lr=3e-3,
        attention_penalty=0.0,
        lr_decay_patience=1,
        early_stop_patience=100,
        val_beam_size=1,
        bf16=BF16,
        threads=2,
        seed=28,
        device="cpu",
    )
    return TrainConfig(**{**values, **overrides})


def val_captions(shapes, model_dir) -> list[Caption]:
    """Greedy captions of the val images by a saved model."""
    model = Captioner.load(model_dir)
    features, _ = load_cached_features(shapes["cache_dir"], "VAL", shapes["data_name"])
    return model.caption_features(torch.from_numpy(np.asarray(features, dtype=np.float32)), beam_size=1)


def score_run(shapes, run: dict) -> dict:
    """A trained run's greedy val captions, scored: {"captions", "references", "objects", "bleu4", "attention"}."""
    captions = val_captions(shapes, run["run_dir"] / "last")
    data_dir, base = shapes["data_dir"], shapes["data_name"]
    references = json.loads((data_dir / f"VAL_REFS_{base}.json").read_text())
    objects = json.loads((data_dir / f"VAL_BOXES_{base}.json").read_text())
    return {
        "captions": captions,
        "references": references,
        "objects": objects,
        "bleu4": bleu4(dict(enumerate(references)), {i: [c.text] for i, c in enumerate(captions)}),
        "attention": attention_in_box(captions, objects, IMAGE_SIZE),
    }


@pytest.fixture(scope="module")
def runs(shapes, tmp_path_factory) -> dict:
    """The module's trainings, one after the other on two threads (two processes at once on the two cores ran
    several times slower, not faster): the soft model, one self-critical epoch from it, and the hard-attention
    model. {"soft" | "scst" | "hard": {"run_dir", "state", "seconds"}}."""
    root = tmp_path_factory.mktemp("runs")
    no_dropout = DecoderConfig(64, 64, 128, dropout=0.0)
    configs = {
        "soft": learning_config(shapes, root / "soft", decoder=no_dropout, epochs=SOFT_EPOCHS),
        "scst": learning_config(
            shapes,
            root / "scst",
            decoder=no_dropout,
            epochs=1,
            batch_size=16,
            decoder_lr=5e-4,
            scst=True,
            init_from=str(root / "soft" / "last"),
            select_on="cider",
            scst_max_len=12,
        ),
        "hard": learning_config(shapes, root / "hard", decoder=DecoderConfig(64, 64, 128, 0.2, "hard")),
    }
    results = {}
    for name, config in configs.items():
        started = time.perf_counter()
        state = train(config)
        results[name] = {"run_dir": Path(config.output_dir), "state": state, "seconds": time.perf_counter() - started}
    return results


def test_model_learns_captions_and_where_to_look(shapes, runs):
    state, train_seconds = runs["soft"]["state"], runs["soft"]["seconds"]
    assert state["epoch"] == SOFT_EPOCHS
    scored = score_run(shapes, runs["soft"])
    captions, val_bleu4, attention = scored["captions"], scored["bleu4"], scored["attention"]
    assert len(captions) == len(scored["references"]) == len(scored["objects"]) == shapes["images"]["val"] == 120
    print(
        f"\nlearning: cache {shapes['cache_seconds']:.0f}s, train {train_seconds:.0f}s "
        f"({train_seconds / state['epoch']:.1f}s/epoch), val BLEU-4 {100 * val_bleu4:.1f} "
        f"(log: {100 * state['history'][-1]['val_bleu4']:.1f}), attention in box {attention['rate']:.3f} "
        f"of {attention['matched']} shape words (chance {attention['chance']:.3f}, "
        f"unmatched {attention['unmatched']})"
    )
    losses = [row["train_loss"] for row in state["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert val_bleu4 >= MIN_BLEU4
    assert state["history"][-1]["val_bleu4"] >= MIN_BLEU4
    assert attention["matched"] >= 150 and attention["unmatched"] <= 0.2 * attention["matched"]
    assert attention["rate"] >= MIN_ATTENTION_IN_BOX
    assert attention["rate"] >= 3 * attention["chance"]


def test_hard_attention_model_learns_and_looks_at_the_shape(shapes, runs):
    """Xu et al.'s hard attention on the same data: one location per word, sampled in training (the soft context
    in half of the steps), trained by REINFORCE; decoded with the most likely location."""
    state, train_seconds = runs["hard"]["state"], runs["hard"]["seconds"]
    assert state["epoch"] == EPOCHS
    scored = score_run(shapes, runs["hard"])
    captions, val_bleu4, attention = scored["captions"], scored["bleu4"], scored["attention"]
    last = state["history"][-1]
    print(
        f"\nhard attention: train {train_seconds:.0f}s, val BLEU-4 {100 * val_bleu4:.1f}, argmax in box "
        f"{attention['rate']:.3f} of {attention['matched']} shape words (chance {attention['chance']:.3f}), "
        f"final baseline {last['train_baseline']:.3f}, entropy {last['train_entropy']:.2f}"
    )
    assert all(set(np.unique(c.alphas)) <= {0.0, 1.0} for c in captions)  # one location per word
    assert val_bleu4 >= MIN_BLEU4
    assert attention["matched"] >= 100
    assert attention["rate"] > 2 * attention["chance"]


def test_one_self_critical_epoch_raises_val_cider(runs):
    """SCST from the cross-entropy model: K = 5 samples per image, CIDEr-D reward, leave-one-out baseline; one epoch
    must raise the val CIDEr of greedy decoding (what the reward optimises) above the start's."""
    start = runs["soft"]["state"]["history"][-1]["val_cider"]  # greedy val CIDEr of the start (its last epoch)
    row = runs["scst"]["state"]["history"][0]
    print(
        f"\nself-critical: val CIDEr {100 * start:.1f} -> {100 * row['val_cider']:.1f}, mean train reward "
        f"{row['train_reward']:.3f}, {row['epoch_time']:.0f}s"
    )
    assert row["val_cider"] > start
