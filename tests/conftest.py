"""Shared fixtures: a tiny word map and a tiny model config (random lite0 encoder, 64 px input, 16-d decoder), and
a tiny saved model directory for the app / CLI / browser tests. Fixtures scoped "package" are made once for the
whole tests/ folder (every test module lives there)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from captioning.config import DecoderConfig, EncoderSpec, ModelConfig
from captioning.preprocess import Preprocessing

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "on", "left", "right", "of", "the")
DEMO_WORDS = "a cat dog sits on the mat red blue cup of coffee man woman rocket sky".split()
TINY_DECODER = DecoderConfig(embed_dim=16, attention_dim=16, decoder_dim=16, dropout=0.5)  # tiny configs' decoder


def refuse_to_train(nodeid: str):
    """An optimizer step pre-hook that fails naming the test: what a test not marked slow meets if it trains."""

    def refused(optimizer, args, kwargs):
        raise AssertionError(f"{nodeid} trains a model: mark it @pytest.mark.slow (-m 'not slow' trains nothing)")

    return refused


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """-m "not slow" trains nothing, checked: while a test not marked slow runs (its fixtures' setup included, so a
    module fixture that trains counts), every optimizer step raises: train()'s epochs, self-critical, hard
    attention and fine-tuning runs, and hand-written loops all step an optimizer."""
    if item.get_closest_marker("slow") is not None:
        yield
        return
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(refuse_to_train(item.nodeid))
    try:
        yield
    finally:
        handle.remove()


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
        decoder=TINY_DECODER,
        max_caption_len=12,
        preprocessing=Preprocessing(image_size=64, input_size=64),
    )


# --- decoder, attention, loss and model tests: a small random decoder, its inputs, a tiny hard captioner ----------

V, C, START, END = 20, 24, 17, 18  # vocabulary, channels; 0 is <pad>, 1..16 words, 19 <unk> where a test needs one


def make_decoder(seed: int = 0, dropout: float = 0.5):
    import torch

    from captioning.decoder import Decoder

    torch.manual_seed(seed)
    return Decoder(V, C, DecoderConfig(embed_dim=12, attention_dim=10, decoder_dim=14, dropout=dropout))


def make_batch(lengths: list[int], seed: int = 0):
    """captions (B, T) = <start> words <end> <pad>...; lengths include <start> and <end>."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    total = max(lengths) + 2
    captions = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        captions[b, 0] = START
        captions[b, 1 : n - 1] = torch.randint(1, 17, (n - 2,), generator=generator)
        captions[b, n - 1] = END
    return captions, torch.tensor(lengths)


def features(n: int, seed: int = 1):
    """Random annotation vectors (n, 196, C) for make_decoder's decoder."""
    import torch

    return torch.randn(n, 196, C, generator=torch.Generator().manual_seed(seed))


def hard_captioner(config, word_map, attention="hard", seed=0):
    """A tiny captioner (random lite0 encoder, 16-d decoder) without dropout, so that only sampling is random."""
    import dataclasses

    import torch

    from captioning.model import Captioner

    torch.manual_seed(seed)
    decoder = dataclasses.replace(config.decoder, attention=attention, dropout=0.0)
    return Captioner(dataclasses.replace(config, decoder=decoder), word_map).train()


def peaked(row: int, col: int, grid: int = 14) -> np.ndarray:
    """Attention grid (14, 14) with most of its mass on one cell, summing to 1."""
    alpha = np.full((grid, grid), 0.1 / (grid * grid - 1), dtype=np.float32)  # (14, 14)
    alpha[row, col] = 0.9
    return alpha


def make_tiny_model(directory: Path) -> Path:
    """Random-weights captioner saved as a model directory: fast, deterministic, garbage captions.

    Offline lite0 encoder weights (fp32: bf16 autocast is emulated, 10x slower, on CPUs without bf16 instructions;
    tests/test_precision.py covers bf16 models), a 32-d decoder whose attention is sharpened so that different
    words' heatmaps differ visibly and whose start state is scaled up so that different photos get other captions.
    """
    import torch  # here, not at the top: tests that never build a model need not import torch/timm

    from captioning.model import create_captioner

    word_map = {"<pad>": 0, **{w: i + 1 for i, w in enumerate(DEMO_WORDS)}}
    word_map.update({"<start>": len(word_map), "<end>": len(word_map) + 1, "<unk>": len(word_map) + 2})
    spec = EncoderSpec("tf_efficientnet_lite0", "lite-wheel", input_size=224, bf16=False)
    torch.manual_seed(0)
    decoder = DecoderConfig(embed_dim=32, attention_dim=32, decoder_dim=32)
    model = create_captioner(spec, word_map, 256, decoder, max_caption_len=10)
    with torch.no_grad():
        model.decoder.attention.full_att.weight.mul_(30.0)  # peaked attention, so words' heatmaps differ visibly
        model.decoder.init_h.weight.mul_(30.0)  # a start state that depends on the photo: photos get other captions
        model.decoder.init_c.weight.mul_(30.0)
    return model.save(directory, fp16=True)


def make_hard_model(soft_dir: Path, directory: Path) -> Path:
    """A second model directory: the tiny model with other output biases (so it writes other captions), marked
    as a hard-attention model in its config (attention="hard"; it decodes as saved, no training needed)."""
    import dataclasses

    import torch

    from captioning.model import Captioner

    captioner = Captioner.load(soft_dir)
    captioner.config = dataclasses.replace(
        captioner.config, decoder=dataclasses.replace(captioner.config.decoder, attention="hard")
    )
    with torch.no_grad():
        torch.manual_seed(1)
        captioner.decoder.fc.bias.add_(torch.randn_like(captioner.decoder.fc.bias) * 5.0)
    return captioner.save(directory, fp16=True)


@pytest.fixture(scope="package")
def tiny_model_dir(tmp_path_factory) -> Path:
    """One tiny random model directory (make_tiny_model) shared by every test of the run."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# --- training / evaluation / fault tests: a tiny prepared shapes dataset and tiny training configs ---------------

SHAPES_IMAGES = 40  # 32 train / 4 val / 4 test
SHAPES_IMAGE_SIZE = 32


@pytest.fixture(scope="package")
def shapes_data(tmp_path_factory) -> dict:
    """A tiny synthetic shapes dataset written by the real pipeline: {"data_dir", "data_name", "image_dir",
    "images": {split: count}}; 40 images of 32 px, 5 captions each, every word kept."""
    from captioning.prepare import read_synthetic

    root = tmp_path_factory.mktemp("shapes")
    caption_set = read_synthetic(SHAPES_IMAGES, root / "images", seed=11, image_size=SHAPES_IMAGE_SIZE)
    summary = prepare_shapes(caption_set, root, SHAPES_IMAGE_SIZE)
    return {
        "data_dir": str(root / "data"),
        "data_name": summary.base_name,
        "image_dir": str(root / "images"),
        "images": dict(summary.images),
    }


def prepare_shapes(caption_set, root: Path, image_size: int):
    """A synthetic caption set prepared under root/data: 5 captions per image, every word kept, no progress bar."""
    from captioning.prepare import prepare_dataset

    options = dict(captions_per_image=5, min_word_freq=0, image_size=image_size, progress=False)
    return prepare_dataset(caption_set, root / "data", "synthetic", **options)


def prepare(caption_set, out: Path, name: str, **options):
    """prepare_dataset without the progress bar."""
    from captioning.prepare import prepare_dataset

    return prepare_dataset(caption_set, out, name, progress=False, **options)


def make_train_config(shapes_data: dict, output_dir, **overrides):
    """A TrainConfig that trains in about a second on shapes_data (timm's random `test_efficientnet`, 64 px input,
    16-d decoder, one thread, 3 steps per epoch); keyword arguments override fields, the decoder's ones (embed_dim,
    attention_dim, decoder_dim, dropout, attention) and the encoder spec's (as flags name them: backbone,
    encoder_weights, input_size, encoder_bf16) given flat."""
    import dataclasses

    from captioning.config import ENCODER_FLAGS
    from captioning.training import TrainConfig

    decoder_names = {f.name for f in dataclasses.fields(DecoderConfig)}
    decoder = TINY_DECODER.with_changes(**{k: overrides.pop(k) for k in list(overrides) if k in decoder_names})
    trunk = dict(backbone="test_efficientnet", encoder_weights="random", input_size=64)
    trunk.update({flag: overrides.pop(flag) for flag in ENCODER_FLAGS if flag in overrides})
    encoder = EncoderSpec().with_changes(**{field: trunk.get(flag) for flag, field in ENCODER_FLAGS.items()})
    data = dict(data_dir=shapes_data["data_dir"], data_name=shapes_data["data_name"], output_dir=str(output_dir))
    run = dict(epochs=1, batch_size=10, max_steps_per_epoch=3, val_max_images=4, threads=1, seed=28, device="cpu")
    return TrainConfig(**{**data, "encoder": encoder, "decoder": decoder, **run, **overrides})


@pytest.fixture
def tiny_train_config(shapes_data):
    """Factory: make_train_config(output_dir, **overrides) on shapes_data."""
    import functools

    return functools.partial(make_train_config, shapes_data)


class TorchThreads:
    """`with TorchThreads(1):` runs a block with one torch thread, `with TorchThreads():` leaves the count to an
    entry point inside (train.py, evaluate's main); either way the count is restored afterwards. Thread counts are
    process state that entry points set: a test must not leak them into the tests that follow."""

    def __init__(self, count: int | None = None):
        self.count = count

    def __enter__(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        if self.count:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc_info) -> None:
        import torch

        torch.set_num_threads(self.saved)


@pytest.fixture
def one_thread():
    """One torch thread for this test (steady timings on 2 cores), restored afterwards."""
    with TorchThreads(1):
        yield


TIME_COLUMNS = ("batch_time", "data_time", "epoch_time", "captions_per_s")  # log columns that differ between runs


def cli_args(config) -> list[str]:
    """train.py flags that reproduce a TrainConfig (every field is a flag; booleans as --x / --no-x)."""
    from captioning.cli import train as train_cli

    return train_cli.command_line(config)


def without_times(rows: list[dict]) -> list[dict]:
    """Log rows (or history entries) without the timing columns, which differ between identical runs."""
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows]


def read_log(run_dir: Path) -> list[dict]:
    """A run directory's log.csv as rows of strings."""
    import csv

    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="package")
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
        entries.append(
            {
                "filepath": "val2014",
                "filename": source.name,
                "split": split,
                "sentences": [{"raw": "A red circle."}, {"raw": "a blue square left of a red circle"}],
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    summary = prepare_dataset(
        read_karpathy(root / "dataset_coco.json", root / "images", "coco"),
        root / "data",
        "coco",
        captions_per_image=2,
        min_word_freq=0,
        image_size=32,
        progress=False,
    )
    return {
        "data_dir": str(root / "data"),
        "data_name": summary.base_name,
        "image_dir": str(root / "images"),
        "karpathy_json": str(root / "dataset_coco.json"),
    }


# --- the demo server and a headless browser (app / robustness / browser tests) -----------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def launch_demo():
    """launch_demo(demo, **launch_kwargs) -> local URL: serves a built demo on 127.0.0.1 at a free port (unless
    server_port is given), launched as the app launches it, without blocking; the caller closes it (demo.close())."""

    def launch(demo, **launch_kwargs) -> str:
        from captioning.cli.launch import LAUNCH_SETTINGS

        settings = dict(
            LAUNCH_SETTINGS, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
        )
        _, url, _ = demo.launch(**{**settings, **launch_kwargs})
        return url

    return launch


@pytest.fixture(scope="package")
def serve_demo(launch_demo):
    """`with serve_demo(demo) as url:` the built demo queued (max_size requests may wait) and served as launch_demo
    serves it, closed on leaving."""

    @contextlib.contextmanager
    def serve(demo, max_size: int = 8, **launch_kwargs):
        demo.queue(max_size=max_size)
        url = launch_demo(demo, **launch_kwargs)
        try:
            yield url
        finally:
            demo.close()

    return serve


def run_main(argv: list[str], monkeypatch, tmp_path, port: int, on_serve) -> int:
    """app.main(argv) with block_thread replaced by on_serve(local_url): the server is up, checks run, main exits."""
    import gradio as gr

    from captioning.cli import app

    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda demo: on_serve(demo.local_url))
    return app.main([*argv, "--port", str(port), "--cache-examples", "off"])


@pytest.fixture
def local_port() -> int:
    """A free port on 127.0.0.1, for tests that start the server through app.main (--port)."""
    return free_port()


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (playwright) for one test module: $CHROMIUM_PATH, else Debian's /usr/lib/chromium."""
    import os

    from playwright.sync_api import sync_playwright

    path = Path(os.environ.get("CHROMIUM_PATH", "/usr/lib/chromium/chromium"))
    assert path.is_file(), (
        f"Chromium not found at {path}: install it (apt-get install chromium) "
        "or point CHROMIUM_PATH at a Chromium binary"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_demo_page(browser, url: str, timeout_ms: int = 20_000, size: tuple[int, int] = (1280, 1000), **options):
    """`with open_demo_page(chromium, url) as page:` a new page on the demo, ready for an upload, closed on leaving;
    size: the window's (width, height) in CSS px."""

    @contextlib.contextmanager
    def opened():
        page = browser.new_page(viewport={"width": size[0], "height": size[1]}, **options)
        page.set_default_timeout(timeout_ms)
        page.goto(url)
        page.wait_for_selector("#image-input input[type=file]", state="attached")
        try:
            yield page
        finally:
            page.close()

    return opened()


def data_flags(data_dir: str | Path, data_name: str) -> list[str]:
    """--data-dir and --data-name: which prepared data a tool reads."""
    return ["--data-dir", str(data_dir), "--data-name", data_name]


def write_captions_csv(root: Path, num_images: int = 30, seed: int = 4) -> Path:
    """A user's own captions: `num_images` synthetic photos in root/my_images and root/captions.csv with 3 captions
    each (image,caption rows, no split column); returns the CSV's path."""
    import csv

    from captioning.prepare import read_synthetic

    shapes = read_synthetic(num_images, root / "my_images", seed=seed, image_size=32)
    by_image: dict[str, list[str]] = {}
    for name, tokens in shapes.captions:
        by_image.setdefault(name, []).append(" ".join(tokens))
    with open(root / "captions.csv", "w", newline="") as file:
        csv.writer(file).writerows((name, caption) for name, captions in by_image.items() for caption in captions[:3])
    return root / "captions.csv"
