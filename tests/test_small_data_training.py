"""Training on a few hundred captions through train.py, as the README's own-captions recipe does: selection on
CIDEr when val is small, said in the log, and a run directory that is never trained over silently (the selection
rule itself: tests/test_training.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TorchThreads, read_log, write_captions_csv

from captioning.cli import prepare
from captioning.cli import train as train_cli

CSV_NAME = "csv_3_cap_per_img_1_min_word_freq"
TINY = [
    *("--backbone", "test_efficientnet", "--encoder-weights", "random", "--input-size", "64"),
    *("--embed-dim", "16", "--attention-dim", "16", "--decoder-dim", "16", "--batch-size", "12"),
    *("--max-steps-per-epoch", "2", "--threads", "1", "--device", "cpu", "--decoder-lr", "3e-3"),
]


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> Path:
    """30 synthetic photos with 3 captions each, as a captions CSV without a split column (80/10/10: 3 val images),
    prepared by prepare_data.py."""
    root = tmp_path_factory.mktemp("csv-data")
    write_captions_csv(root)
    flags = ["--dataset", "csv", "--captions-file", str(root / "captions.csv"), "--image-dir", str(root / "my_images")]
    flags += [
        "--data-dir",
        str(root / "data"),
        "--captions-per-image",
        "3",
        "--min-word-freq",
        "1",
        "--image-size",
        "32",
    ]
    assert prepare.main(flags) == 0
    return root / "data"


def train(csv_data: Path, run: Path, *extra: str) -> int:
    with TorchThreads():
        return train_cli.main(
            ["--data-dir", str(csv_data), "--data-name", CSV_NAME, "--output-dir", str(run), *TINY, *extra]
        )


@pytest.mark.slow
def test_small_val_selects_on_cider_and_says_why(csv_data, tmp_path, capsys):
    assert train(csv_data, tmp_path / "run", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "selecting on val CIDEr: val has 3 images, fewer than 100" in out
    assert "best val CIDEr" in out.splitlines()[-1]
    rows = read_log(tmp_path / "run")
    best = max(rows, key=lambda row: float(row["val_cider"]))  # the first epoch with the top CIDEr
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file() and rows
    assert all(row["val_4gram_matches"].isdigit() for row in rows)
    if best["epoch"] == rows[-1]["epoch"]:
        best_bytes = (tmp_path / "run" / "best" / "model.safetensors").read_bytes()
        assert best_bytes == (tmp_path / "run" / "last" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_finished_run_is_refused_without_resume_or_overwrite(csv_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(csv_data, run, "--epochs", "1") == 0
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert train(csv_data, run, "--epochs", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--resume {run}" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before  # nothing lost
    assert train(csv_data, run, "--epochs", "2", "--overwrite") == 0
    assert [row["epoch"] for row in read_log(run)] == ["1", "2"]
    assert train_cli.main(["--resume", str(run), "--epochs", "3"]) == 0  # --resume is never refused
