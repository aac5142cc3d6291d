"""Shared fixtures: a tiny word map and a tiny model config (random lite0 encoder, 64 px input, 16-d decoder), and
a tiny saved model directory for the app / CLI / browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioning.config import EncoderSpec, ModelConfig
from captioning.preprocess import Preprocessing

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "on", "left", "right", "of", "the")
DEMO_WORDS = "a cat dog sits on the mat red blue cup of coffee man woman rocket sky".split()


@pytest.fixture
def word_map() -> dict[str, int]:
    """<pad>=0, words from 1, then <start>, <end>, <unk> (the layout of vocab.build_word_map)."""
    mapping = {"<pad>": 0}
    mapping.update((w, i) for i, w in enumerate(WORDS, start=1))
    for token in ("<start>", "<end>", "<unk>"):
        mapping[token] = len(mapping)
    return mapping


@pytest.fixture
def tiny_config(word_map) -> ModelConfig:
    """Fast on CPU: a 64 px input gives a 2x2 trunk map, pooled up to the 14x14 grid (fine for tests)."""
    return ModelConfig(
        encoder=EncoderSpec("tf_efficientnet_lite0", "random", input_size=64, bf16=False),
        encoder_dim=1280,
        vocab_size=len(word_map),
        embed_dim=16,
        attention_dim=16,
        decoder_dim=16,
        max_caption_len=12,
        preprocessing=Preprocessing(image_size=64, input_size=64),
    )


def make_tiny_model(directory: Path) -> Path:
    """Random-weights captioner saved as a model directory: fast, deterministic, garbage captions.

    Offline lite0 encoder weights (bf16 like the real feature cache), a 32-d decoder whose attention is sharpened
    so that different words' heatmaps differ visibly.
    """
    import torch  # here, not at the top: tests that never build a model need not import torch/timm

    from captioning.model import create_captioner

    word_map = {"<pad>": 0, **{w: i + 1 for i, w in enumerate(DEMO_WORDS)}}
    word_map.update({"<start>": len(word_map), "<end>": len(word_map) + 1, "<unk>": len(word_map) + 2})
    spec = EncoderSpec("tf_efficientnet_lite0", "lite-wheel", input_size=224, bf16=True)
    torch.manual_seed(0)
    model = create_captioner(spec, word_map, image_size=256, embed_dim=32, attention_dim=32, decoder_dim=32,
                             max_caption_len=10)
    with torch.no_grad():
        model.decoder.attention.full_att.weight.mul_(30.0)  # peaked attention, so words' heatmaps differ visibly
    return model.save(directory, fp16=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """One tiny random model directory (make_tiny_model) shared by every test of the session."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# --- training / evaluation / fault tests: a tiny prepared shapes dataset and tiny training configs ---------------

SHAPES_IMAGES = 40  # 32 train / 4 val / 4 test
SHAPES_IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> dict:
    """A tiny synthetic shapes dataset written by the real pipeline: {"data_dir", "data_name", "image_dir",
    "images": {split: count}}; 40 images of 32 px, 5 captions each, every word kept."""
    from captioning.prepare import prepare_dataset, read_synthetic

    root = tmp_path_factory.mktemp("shapes")
    caption_set = read_synthetic(SHAPES_IMAGES, root / "images", seed=11, image_size=SHAPES_IMAGE_SIZE)
    summary = prepare_dataset(caption_set, root / "data", "synthetic", captions_per_image=5, min_word_freq=0,
                              image_size=SHAPES_IMAGE_SIZE, progress=False)
    return {"data_dir": str(root / "data"), "data_name": summary.base_name, "image_dir": str(root / "images"),
            "images": dict(summary.images)}


@pytest.fixture
def tiny_train_config(shapes_data):
    """Factory: a TrainConfig that trains in about a second on shapes_data (timm's random `test_efficientnet`, 64 px
    input, 16-d decoder, one thread, 3 steps per epoch); keyword arguments override fields."""
    from captioning.training import TrainConfig

    def make(output_dir, **overrides):
        values = dict(data_dir=shapes_data["data_dir"], data_name=shapes_data["data_name"], output_dir=str(output_dir),
                      backbone="test_efficientnet", encoder_weights="random", input_size=64, embed_dim=16,
                      attention_dim=16, decoder_dim=16, dropout=0.5, epochs=1, batch_size=10, max_steps_per_epoch=3,
                      val_max_images=4, threads=1, seed=28, device="cpu")
        values.update(overrides)
        return TrainConfig(**values)

    return make


@pytest.fixture
def restore_torch_threads():
    """train() sets torch's global thread count; put it back for the tests that follow."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(restore_torch_threads):
    """One torch thread for this test (steady timings on 2 cores), restored afterwards."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def coco_style_data(shapes_data, tmp_path_factory) -> dict:
    """Shapes images laid out like COCO (`image_dir/val2014/NAME`, Karpathy entries with a `filepath`), prepared
    at 32 px: {"data_dir", "data_name", "image_dir", "karpathy_json"}; 6 train, 2 val, 2 test images."""
    import json
    import shutil

    from captioning.prepare import prepare_dataset, read_karpathy

    root = tmp_path_factory.mktemp("coco-style")
    (root / "images" / "val2014").mkdir(parents=True)
    sources = sorted(Path(shapes_data["image_dir"]).glob("*.png"))[:10]
    entries = []
    for i, source in enumerate(sources):
        shutil.copy(source, root / "images" / "val2014" / source.name)
        split = "restval" if i < 3 else "train" if i < 6 else "val" if i < 8 else "test"
        entries.append({"filepath": "val2014", "filename": source.name, "split": split,
                        "sentences": [{"raw": "A red circle."}, {"raw": "a blue square left of a red circle"}]})
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    summary = prepare_dataset(read_karpathy(root / "dataset_coco.json", root / "images", "coco"), root / "data",
                              "coco", captions_per_image=2, min_word_freq=0, image_size=32, progress=False)
    return {"data_dir": str(root / "data"), "data_name": summary.base_name, "image_dir": str(root / "images"),
            "karpathy_json": str(root / "dataset_coco.json")}
