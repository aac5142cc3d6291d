"""`python -m captioning.cli.evaluate`: metrics and captions for a prepared split, for raw Karpathy-format input (the
same images give the same captions and scores), from cached features, with METEOR (Java), and clear errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import TorchThreads, data_flags

from captioning.cli import evaluate
from captioning.config import DecoderConfig, EncoderSpec
from captioning.metrics import coco_metrics
from captioning.model import Captioner

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")

pytestmark = pytest.mark.slow  # every test reads a model trained for a few seconds (model_dir)


@pytest.fixture(scope="module")
def model_dir(shapes_data, tmp_path_factory):
    """A tiny model trained for a few seconds on the shapes data (its preprocessing matches the stored 32 px)."""
    from captioning.training import TrainConfig, train

    run = tmp_path_factory.mktemp("evaluate") / "run"
    data = {"data_dir": shapes_data["data_dir"], "data_name": shapes_data["data_name"]}
    trunk = {"encoder": EncoderSpec("test_efficientnet", "random", input_size=64)}
    schedule = {"epochs": 4, "batch_size": 10, "decoder_lr": 1e-2, "val_max_images": 4, "seed": 1}
    decoder = DecoderConfig(16, 16, 32, dropout=0.1)
    with TorchThreads(1):
        train(TrainConfig(**data, output_dir=str(run), **trunk, decoder=decoder, **schedule, device="cpu"))
    return run / "best"


@pytest.fixture
def counted_images(monkeypatch):
    """How many images Captioner.caption_features decoded, call by call."""
    calls = []
    caption_features = Captioner.caption_features

    def counting(self, features, *args, **kwargs):
        calls.append(features.size(0))
        return caption_features(self, features, *args, **kwargs)

    monkeypatch.setattr(Captioner, "caption_features", counting)
    return calls


def split_names_refs(shapes_data, split: str) -> tuple[list[str], list[list[str]]]:
    data_dir, base = Path(shapes_data["data_dir"]), shapes_data["data_name"]
    names = json.loads((data_dir / f"{split}_NAMES_{base}.json").read_text())
    return names, json.loads((data_dir / f"{split}_REFS_{base}.json").read_text())


def fixture_flags(data: dict) -> list[str]:
    """--data-dir and --data-name of a prepared dataset fixture (shapes_data, coco_style_data)."""
    return data_flags(data["data_dir"], data["data_name"])


def raw_flags(karpathy_json: str | Path, image_dir: str) -> list[str]:
    """The flags that read raw Karpathy-format input instead of a prepared split."""
    return ["--karpathy-json", str(karpathy_json), "--image-dir", image_dir]


def evaluate_args(model_dir: Path, source: list[str], split: str, beam_size: int, *more: str) -> list[str]:
    """The evaluate CLI's flags: the model, where its images come from, the split and beam size, then `more`."""
    return ["--model", str(model_dir), *source, "--split", split, "--beam-size", str(beam_size), *more]


def output_flags(json_out: Path, captions_out: Path) -> list[str]:
    """The flags that write the metrics and the captions to these files."""
    return ["--json-out", str(json_out), "--captions-out", str(captions_out)]


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    with TorchThreads():  # main sets --threads 1
        code = evaluate.main([*args, "--threads", "1"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prepared_split_metrics_and_captions(model_dir, shapes_data, tmp_path, capsys, counted_images):
    names, references = split_names_refs(shapes_data, "VAL")
    outputs = output_flags(tmp_path / "metrics.json", tmp_path / "captions.json")
    args = evaluate_args(model_dir, fixture_flags(shapes_data), "VAL", 3, "--batch-size", "3", "--no-meteor", *outputs)
    code, out, _ = run_main(args, capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {
        **json.loads(out[out.index("{") :]),
        "model": str(model_dir),
        "split": "VAL",
        "expected_context": False,
    } == metrics  # printed and written alike, with the run's settings
    assert metrics["images"] == len(names) == shapes_data["images"]["val"] and metrics["beam_size"] == 3
    assert "METEOR" not in metrics
    for key in METRICS:
        assert 0.0 <= metrics[key] <= (10.0 if key == "CIDEr" else 1.0), key
    assert counted_images == [3, len(names) - 3]  # every image decoded exactly once, in batches of 3
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert list(captions) == names and all(isinstance(c, str) for c in captions.values())
    assert all(set(c.split()) & {"circle", "square", "triangle"} for c in captions.values())  # it learnt some words
    # the scores are those of exactly these captions against the split's references
    rescored = coco_metrics(dict(enumerate(references)), {i: [captions[n]] for i, n in enumerate(names)}, meteor=False)
    assert {k: metrics[k] for k in METRICS} == pytest.approx({k: rescored[k] for k in METRICS})


def test_results_file_records_the_run(model_dir, shapes_data, tmp_path, capsys):
    """--json-out: the run (model as given, split, decoding) and the metrics as the fractions printed."""
    results = tmp_path / "results" / "val.json"  # its folder is made
    settings = ["--no-meteor", "--expected-context", "--json-out", str(results)]
    code, out, _ = run_main(evaluate_args(model_dir, fixture_flags(shapes_data), "val", 2, *settings), capsys)
    assert code == 0
    printed = json.loads(out[out.index("{") :])
    assert json.loads(results.read_text()) == {
        "model": str(model_dir),
        "split": "VAL",
        "expected_context": True,
        **printed,
    }
    assert printed["beam_size"] == 2 and printed["images"] == shapes_data["images"]["val"]
    assert set(METRICS) <= set(printed) and "METEOR" not in printed
    assert [path.name for path in results.parent.iterdir()] == ["val.json"]  # no temporary file left


def test_raw_karpathy_input_equals_the_prepared_split(model_dir, shapes_data, tmp_path, capsys, counted_images):
    names, references = split_names_refs(shapes_data, "TEST")
    train_name = split_names_refs(shapes_data, "TRAIN")[0][0]
    entries = [
        {"filename": name, "split": "test", "sentences": [{"raw": r, "tokens": r.split()} for r in refs]}
        for name, refs in zip(names, references)
    ]
    entries.insert(1, {"filename": train_name, "split": "train", "sentences": [{"raw": "a red circle"}]})
    karpathy = tmp_path / "dataset_tiny.json"
    karpathy.write_text(json.dumps({"images": entries, "dataset": "tiny"}))

    raw_input = raw_flags(karpathy, shapes_data["image_dir"])
    outputs = output_flags(tmp_path / "raw.json", tmp_path / "raw_c.json")
    code, _, _ = run_main(evaluate_args(model_dir, raw_input, "test", 2, "--no-meteor", *outputs), capsys)
    assert code == 0
    raw = json.loads((tmp_path / "raw.json").read_text())
    raw_captions = json.loads((tmp_path / "raw_c.json").read_text())
    assert raw["images"] == len(names) == sum(counted_images)  # the train entry was left out
    assert list(raw_captions) == names

    outputs = output_flags(tmp_path / "prepared.json", tmp_path / "prepared_c.json")
    code, _, _ = run_main(
        evaluate_args(model_dir, fixture_flags(shapes_data), "TEST", 2, "--no-meteor", *outputs), capsys
    )
    assert code == 0
    assert json.loads((tmp_path / "prepared_c.json").read_text()) == raw_captions  # same pixels, same captions
    assert json.loads((tmp_path / "prepared.json").read_text()) == pytest.approx(raw)


def test_cached_features(model_dir, shapes_data, tmp_path, capsys):
    import h5py

    from captioning.features import cache_features

    model = Captioner.load(model_dir)
    data_dir, base = Path(shapes_data["data_dir"]), shapes_data["data_name"]
    names, _ = split_names_refs(shapes_data, "VAL")
    cache_dir, spec, prep = tmp_path / "cache", model.config.encoder, model.config.preprocessing
    settings = {"batch_size": 4, "bf16": spec.bf16, "weights": spec.weights, "data_name": base}
    with h5py.File(data_dir / f"VAL_IMAGES_{base}.hdf5", "r") as h5:
        images = h5["images"]
        cache_features(model.encoder, lambda a, b: images[a:b], names, cache_dir, "VAL", prep, **settings)
    data = fixture_flags(shapes_data)
    common = ["--model", str(model_dir), *data, "--no-meteor", "--beam-size", "1", "--cache-dir", str(cache_dir)]
    code, _, _ = run_main([*common, "--split", "VAL", "--captions-out", str(tmp_path / "c.json")], capsys)
    assert code == 0
    assert list(json.loads((tmp_path / "c.json").read_text())) == names
    code, _, err = run_main([*common, "--split", "TEST"], capsys)  # a cache of other images is refused
    assert code == 2 and "error:" in err


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor(model_dir, shapes_data, capsys):
    started = time.perf_counter()
    code, out, _ = run_main(evaluate_args(model_dir, fixture_flags(shapes_data), "VAL", 3), capsys)
    assert code == 0
    metrics = json.loads(out[out.index("{") :])
    assert 0.0 <= metrics["METEOR"] <= 1.0 and all(key in metrics for key in METRICS)
    print(f"evaluate with METEOR: {time.perf_counter() - started:.1f}s")


def test_errors_are_one_line(model_dir, shapes_data, tmp_path, capsys):
    code, _, err = run_main(["--model", str(tmp_path / "missing"), *fixture_flags(shapes_data)], capsys)
    assert code == 2 and err.startswith("error:") and "does not exist" in err
    code, _, err = run_main(
        ["--model", str(model_dir), "--data-dir", shapes_data["data_dir"], "--data-name", "nope"], capsys
    )
    assert code == 2 and "prepare_data.py" in err
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--model", str(model_dir)])  # no data given
    assert exit_info.value.code == 2


def test_raw_coco_names_keep_their_filepath(model_dir, coco_style_data, tmp_path, capsys):
    """Raw COCO input names its images like the prepared split (val2014/NAME) and captions them alike."""
    data_dir, base = Path(coco_style_data["data_dir"]), coco_style_data["data_name"]
    common = ["--model", str(model_dir), "--split", "VAL", "--beam-size", "2", "--no-meteor"]
    raw_input = raw_flags(coco_style_data["karpathy_json"], coco_style_data["image_dir"])
    code, _, _ = run_main([*common, *raw_input, "--captions-out", str(tmp_path / "raw.json")], capsys)
    assert code == 0
    prepared_input = fixture_flags(coco_style_data)
    code, _, _ = run_main([*common, *prepared_input, "--captions-out", str(tmp_path / "prepared.json")], capsys)
    assert code == 0
    raw, prepared = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("raw", "prepared"))
    assert raw == prepared and list(raw) == json.loads((data_dir / f"VAL_NAMES_{base}.json").read_text())
    assert all(name.startswith("val2014/") for name in raw)
