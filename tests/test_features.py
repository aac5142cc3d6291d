"""Feature cache: what it stores, that it equals what the model computes from pixels at evaluation time, that
changed settings start it over, that the CLI reads prepared HDF5 and raw Karpathy input alike, and that training
refuses a cache of other images. (Interrupted caches: tests/test_faults.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import data_flags

from captioning.cli import features as features_cli
from captioning.config import DecoderConfig, EncoderSpec, ModelConfig
from captioning.data import PreparedData
from captioning.encoder import Encoder, preprocessing_for
from captioning.features import (
    CacheMismatch,
    cache_features,
    cache_paths,
    encode_pixels,
    load_cached_features,
    read_metadata,
)
from captioning.model import Captioner
from captioning.precision import native_cpu_bf16
from captioning.preprocess import to_model_input

BACKBONE, INPUT_SIZE = "tf_efficientnet_lite0", 64  # offline ImageNet weights, a fast 64 px input


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(BACKBONE, "lite-wheel")


@pytest.fixture(scope="module")
def train_split(shapes_data) -> dict:
    data_dir, base = Path(shapes_data["data_dir"]), shapes_data["data_name"]
    with h5py.File(PreparedData(data_dir, base).path("IMAGES", "TRAIN"), "r") as h5:
        pixels = h5["images"][:]  # (32, 3, 32, 32) uint8
    return {"pixels": pixels, "names": json.loads(PreparedData(data_dir, base).path("NAMES", "TRAIN").read_text())}


def counting_loader(pixels: np.ndarray, calls: list):
    def load(start: int, stop: int) -> np.ndarray:
        calls.append((start, stop))
        return pixels[start:stop]

    return load


def cache_shapes_train(encoder, load_pixels, names, cache_dir, prep, **settings) -> Path:
    """cache_features for the TRAIN split of data named "shapes"; `settings` are its batch_size, bf16 and weights."""
    return cache_features(encoder, load_pixels, names, cache_dir, "TRAIN", prep, data_name="shapes", **settings)


def test_cache_layout_and_progress(encoder, train_split, tmp_path):
    prep = preprocessing_for(encoder, 32, INPUT_SIZE)
    calls = []
    load = counting_loader(train_split["pixels"], calls)
    settings = {"batch_size": 10, "bf16": True, "weights": "lite-wheel"}
    path = cache_shapes_train(encoder, load, train_split["names"], tmp_path, prep, **settings)
    assert calls == [(0, 10), (10, 20), (20, 30), (30, 32)]
    assert path == tmp_path / "TRAIN_FEATURES_shapes.npy"  # the data name is part of the file names
    stored = np.load(path, mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (32, 196, encoder.dim)
    assert np.isfinite(stored).all() and np.abs(stored).max() > 0
    progress = json.loads(cache_paths(tmp_path, "TRAIN", "shapes")[1].read_text())
    assert progress["done"] == 32 and progress["complete"] and progress["names"] == train_split["names"]
    assert progress["dim"] == encoder.dim and progress["batch_size"] == 10 and progress["data_name"] == "shapes"
    assert progress["encoder"] == {
        "backbone": BACKBONE,
        "weights": "lite-wheel",
        "input_size": INPUT_SIZE,
        "bf16": True,
        "grid_size": 14,
    }
    features, names = load_cached_features(
        tmp_path, "TRAIN", "shapes", EncoderSpec(BACKBONE, "lite-wheel", INPUT_SIZE), prep
    )
    assert names == train_split["names"] and np.array_equal(features, stored)
    with pytest.raises(FileNotFoundError):
        load_cached_features(tmp_path, "VAL", "shapes")
    for other in (EncoderSpec(BACKBONE, "lite-wheel", 448), EncoderSpec(BACKBONE, "random", INPUT_SIZE, bf16=False)):
        with pytest.raises(ValueError, match="was made with other encoder settings"):  # the whole spec is verified
            load_cached_features(tmp_path, "TRAIN", "shapes", other)


def test_cached_features_equal_what_the_model_computes_from_pixels(encoder, train_split, tmp_path):
    """Training reads the cache, evaluation and the app encode pixels: both must see the same annotation vectors."""
    prep = preprocessing_for(encoder, 32, INPUT_SIZE)
    pixels, names = train_split["pixels"][:8], train_split["names"][:8]
    cache_shapes_train(encoder, lambda a, b: pixels[a:b], names, tmp_path, prep, batch_size=4, bf16=True)
    cached = np.asarray(load_cached_features(tmp_path, "TRAIN", "shapes")[0], dtype=np.float32)  # (8, 196, C)
    config = ModelConfig(
        encoder=EncoderSpec(BACKBONE, "lite-wheel", INPUT_SIZE, bf16=True),
        encoder_dim=encoder.dim,
        vocab_size=5,
        decoder=DecoderConfig(8, 8, 8),
        preprocessing=prep,
    )
    model = Captioner(config, {"<pad>": 0, "a": 1, "<start>": 2, "<end>": 3, "<unk>": 4}).eval()
    live = model.encode(to_model_input(torch.from_numpy(pixels), prep)).numpy()  # (8, 196, C)
    np.testing.assert_allclose(cached, live, rtol=2e-3, atol=2e-3 * np.abs(live).max())  # fp16 storage only
    fp32 = encode_pixels(encoder, torch.from_numpy(pixels), prep, bf16=False).numpy()
    assert np.abs(fp32 - cached).max() > np.abs(live - cached).max()  # bf16 is a real difference, kept consistent


def test_other_settings_are_refused_and_a_complete_cache_is_kept(encoder, train_split, tmp_path):
    prep = preprocessing_for(encoder, 32, INPUT_SIZE)
    pixels, names = train_split["pixels"], train_split["names"]
    calls = []
    cache_shapes_train(encoder, counting_loader(pixels, calls), names, tmp_path, prep, batch_size=16, bf16=True)
    bf16_features = np.array(load_cached_features(tmp_path, "TRAIN", "shapes")[0])
    calls.clear()
    cache_shapes_train(encoder, counting_loader(pixels, calls), names, tmp_path, prep, batch_size=8, bf16=True)
    assert calls == []  # complete and the same spec (another batch size): nothing recomputed
    with pytest.raises(CacheMismatch, match="bf16: cache True vs now False"):
        cache_shapes_train(encoder, counting_loader(pixels, calls), names, tmp_path, prep, batch_size=16, bf16=False)
    with pytest.raises(CacheMismatch, match="images: cache 32 others than the 32 now"):
        reversed_load = counting_loader(pixels[::-1], calls)
        cache_shapes_train(encoder, reversed_load, names[::-1], tmp_path, prep, batch_size=16, bf16=True)
    assert calls == []  # nothing was encoded, nothing overwritten
    features, kept_names = load_cached_features(tmp_path, "TRAIN", "shapes")
    assert kept_names == names and np.array_equal(features, bf16_features)


def cli_args(cache_dir: Path, split: str) -> list[str]:
    """The features CLI's flags for `split` into `cache_dir`: the offline lite0 trunk at 64 px, batches of 3."""
    trunk = ["--backbone", BACKBONE, "--encoder-weights", "lite-wheel"]
    sizes = ["--image-size", "32", "--input-size", str(INPUT_SIZE)]
    return ["--split", split, "--cache-dir", str(cache_dir), *trunk, *sizes, "--batch-size", "3", "--threads", "1"]


def raw_flags(karpathy_json: str | Path, image_dir: str, data_name: str) -> list[str]:
    """The features CLI's flags that read raw Karpathy-format input, its cache named `data_name`."""
    return ["--karpathy-json", str(karpathy_json), "--image-dir", image_dir, "--data-name", data_name]


def test_cli_prepared_and_raw_karpathy_input_give_the_same_cache(shapes_data, tmp_path, capsys):
    data_dir, base = Path(shapes_data["data_dir"]), shapes_data["data_name"]
    names = json.loads(PreparedData(data_dir, base).path("NAMES", "TEST").read_text())
    references = json.loads(PreparedData(data_dir, base).path("REFS", "TEST").read_text())
    features_cli.main([*cli_args(tmp_path / "prepared", "TEST"), *data_flags(data_dir, base)])
    entries = [
        {"filename": n, "split": "test", "sentences": [{"raw": r} for r in refs]} for n, refs in zip(names, references)
    ]
    first_train = json.loads(PreparedData(data_dir, base).path("NAMES", "TRAIN").read_text())[0]
    entries.append({"filename": first_train, "split": "train", "sentences": [{"raw": "a red circle"}]})
    karpathy = tmp_path / "dataset.json"
    karpathy.write_text(json.dumps({"images": entries}))
    features_cli.main([*cli_args(tmp_path / "raw", "TEST"), *raw_flags(karpathy, shapes_data["image_dir"], base)])
    assert f"features for {len(names)} images" in capsys.readouterr().out
    prepared, prepared_names = load_cached_features(tmp_path / "prepared", "TEST", base)
    raw, raw_names = load_cached_features(tmp_path / "raw", "TEST", base)
    assert prepared_names == raw_names == names
    assert np.array_equal(prepared, raw)  # one preprocessing path: resize_square, then to_model_input
    progress = json.loads(cache_paths(tmp_path / "raw", "TEST", base)[1].read_text())
    assert progress["encoder"]["weights"] == "lite-wheel" and progress["preprocessing"]["input_size"] == INPUT_SIZE


def test_training_uses_the_cache_and_refuses_one_of_other_images(shapes_data, tiny_train_config, encoder, tmp_path):
    from captioning.training import make_dataset

    data_dir, base = Path(shapes_data["data_dir"]), shapes_data["data_name"]
    names = json.loads(PreparedData(data_dir, base).path("NAMES", "VAL").read_text())
    with h5py.File(PreparedData(data_dir, base).path("IMAGES", "VAL"), "r") as h5:
        pixels = h5["images"][:]
    prep = preprocessing_for(encoder, 32, INPUT_SIZE)
    cache_features(
        encoder, lambda a, b: pixels[a:b], names, tmp_path / "good", "VAL", prep, batch_size=4, data_name=base
    )
    spec = {"backbone": BACKBONE, "encoder_weights": "lite-wheel", "input_size": INPUT_SIZE, "encoder_bf16": True}
    config = tiny_train_config(tmp_path / "run", cache_dir=str(tmp_path / "good"), **spec)
    dataset = make_dataset(config, "VAL", from_features=True)
    image, captions, lengths, index = dataset[1]
    assert image.dtype == torch.float32 and image.shape == (196, encoder.dim) and index == 1
    assert captions.shape[0] == lengths.shape[0] == 5
    cached = load_cached_features(tmp_path / "good", "VAL", base)[0]
    assert torch.equal(image, torch.from_numpy(np.asarray(cached[1], dtype=np.float32)))
    reversed_pixels = pixels[::-1]
    cache_features(
        encoder,
        lambda a, b: reversed_pixels[a:b],
        names[::-1],
        tmp_path / "other",
        "VAL",
        prep,
        batch_size=4,
        data_name=base,
    )
    with pytest.raises(ValueError, match="other VAL images"):
        make_dataset(
            tiny_train_config(tmp_path / "run", cache_dir=str(tmp_path / "other"), **spec), "VAL", from_features=True
        )
    with pytest.raises(ValueError, match="input_size: cache 64 vs model 448"):
        bigger = tiny_train_config(tmp_path / "run", cache_dir=str(tmp_path / "good"), **{**spec, "input_size": 448})
        make_dataset(bigger, "VAL", from_features=True)


def test_cli_raw_coco_names_match_the_prepared_split(coco_style_data, tiny_train_config, tmp_path):
    """COCO entries have a `filepath` (val2014/...): the raw-input cache names its images as prepare_data.py does,
    so training accepts it."""
    from captioning.training import make_dataset

    data_dir, base = Path(coco_style_data["data_dir"]), coco_style_data["data_name"]
    raw_input = raw_flags(coco_style_data["karpathy_json"], coco_style_data["image_dir"], base)
    features_cli.main([*cli_args(tmp_path / "raw", "TRAIN"), *raw_input])
    features_cli.main([*cli_args(tmp_path / "prepared", "TRAIN"), *data_flags(data_dir, base)])
    prepared_names = json.loads(PreparedData(data_dir, base).path("NAMES", "TRAIN").read_text())
    raw, raw_names = load_cached_features(tmp_path / "raw", "TRAIN", base)
    assert raw_names == prepared_names and len(raw_names) == 6 and raw_names[0].startswith("val2014/")
    assert np.array_equal(raw, load_cached_features(tmp_path / "prepared", "TRAIN", base)[0])
    config = tiny_train_config(
        tmp_path / "run",
        data_dir=str(data_dir),
        data_name=base,
        cache_dir=str(tmp_path / "raw"),
        backbone=BACKBONE,
        encoder_weights="lite-wheel",
        input_size=INPUT_SIZE,
        encoder_bf16=native_cpu_bf16(),
    )  # the CLI's default
    assert len(make_dataset(config, "TRAIN", from_features=True)) == 6


def test_a_cache_is_named_by_its_data_name(tmp_path):
    """Every cache file carries the data name it was made for: without one there is no cache to read or write."""
    assert cache_paths(tmp_path, "val", "flickr8k") == (
        tmp_path / "VAL_FEATURES_flickr8k.npy",
        tmp_path / "VAL_FEATURES_flickr8k.json",
    )
    with pytest.raises(ValueError, match="a feature cache is named by its data name .*give --data-name"):
        cache_paths(tmp_path, "VAL", "")
    with pytest.raises(ValueError, match="give --data-name"):
        load_cached_features(tmp_path, "VAL", "")
    assert read_metadata(tmp_path, "VAL", "") is None
