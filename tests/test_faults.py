"""Faults: a training run killed with SIGKILL (mid-epoch, half-way through writing a checkpoint file, at a random
moment) leaves only complete files under their final names, resumes with --resume from the last complete
checkpoint and ends exactly where an uninterrupted run ends. An interrupted feature cache continues where it
stopped and equals an uninterrupted one.

The deterministic kill points come from a wrapper around train.py / `python -m captioning.cli.features` that sends
SIGKILL to its own process at the chosen moment (FAULT=step:N, FAULT=write:FILE:N).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TorchThreads, cli_args, make_train_config, read_log, without_times

REPO = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 4  # per run; STEPS optimiser steps per epoch

# Runs train.py or captioning.cli.features with a self-inflicted SIGKILL at the point named by $FAULT:
#   step:N            after the N-th optimiser step of the process
#   write:NAME:N      half-way through the N-th atomic write of a file called NAME (the temporary file is left
#                     half-written, the rename never happens)
#   encode:N          before the N-th batch of the feature cache is encoded
WRAPPER = r"""
import os, signal, sys
from pathlib import Path

kind, *spec = os.environ["FAULT"].split(":")

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    import captioning.training as training
    make_optimizer, steps = training.make_optimizer, [0]

    def dying_make_optimizer(captioner, config):
        optimizer = make_optimizer(captioner, config)

        def after_step(opt, args, kwargs):
            steps[0] += 1
            if steps[0] == int(spec[0]):
                die()

        optimizer.register_step_post_hook(after_step)
        return optimizer

    training.make_optimizer = dying_make_optimizer
elif kind == "write":
    import captioning.checkpoint as checkpoint
    import captioning.training as training
    atomic_write, seen = checkpoint.atomic_write, [0]

    def dying_atomic_write(path, write):
        if Path(path).name == spec[0]:
            seen[0] += 1
            if seen[0] == int(spec[1]):
                def half_then_die(tmp):
                    write(tmp)
                    data = Path(tmp).read_bytes()
                    Path(tmp).write_bytes(data[: len(data) // 2])
                    die()
                return atomic_write(path, half_then_die)
        return atomic_write(path, write)

    checkpoint.atomic_write = training.atomic_write = dying_atomic_write
elif kind == "encode":
    import captioning.features as features
    encode_pixels, calls = features.encode_pixels, [0]

    def dying_encode_pixels(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(spec[0]):
            die()
        return encode_pixels(*args, **kwargs)

    features.encode_pixels = dying_encode_pixels

if sys.argv[1] == "train":
    from captioning.cli import train
    sys.exit(train.main(sys.argv[2:]))
from captioning.cli import features as features_cli
features_cli.main(sys.argv[2:])
"""


def run_wrapped(fault: str, what: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "FAULT": fault, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, what, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def check_only_complete_files(run_dir: Path) -> tuple[int, list[str]]:
    """Every file under a final name loads; returns the checkpoint's epoch and the leftover temporary files."""
    from safetensors.torch import load_file

    from captioning.model import Captioner

    leftovers = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path.name.startswith(".tmp-"):
            leftovers.append(str(path.relative_to(run_dir)))
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            assert read_log(run_dir)
    for name in ("last", "best"):
        if (run_dir / name / "model.safetensors").exists():
            Captioner.load(run_dir / name)
    state = torch.load(run_dir / "last" / "train_state.pt", map_location="cpu", weights_only=True)
    assert [row["epoch"] for row in state["history"]] == list(range(1, state["epoch"] + 1))
    return state["epoch"], leftovers


@pytest.fixture(scope="module")
def fault_config(shapes_data):
    return make_train_config(shapes_data, "", epochs=EPOCHS, max_steps_per_epoch=STEPS, seed=3)


@pytest.fixture(scope="module")
def reference_run(fault_config, tmp_path_factory):
    """The same run, never interrupted (in this process)."""
    from captioning.training import train

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with TorchThreads(1):
        train(dataclasses.replace(fault_config, output_dir=str(run_dir)))
    return run_dir


def resume_to_the_end(run_dir: Path) -> None:
    """`train.py --resume` finishes the run, leaving only complete files and all epochs done."""
    from captioning.cli import train as train_cli

    with TorchThreads():  # train.py sets the configured one thread
        assert train_cli.main(["--resume", str(run_dir)]) == 0
    final_epoch, _ = check_only_complete_files(run_dir)
    assert final_epoch == EPOCHS


def resume_and_compare(run_dir: Path, reference: Path) -> None:
    """--resume finishes the run; weights, optimiser state and log equal the uninterrupted run's."""
    resume_to_the_end(run_dir)
    a = torch.load(run_dir / "last" / "train_state.pt", weights_only=True)
    b = torch.load(reference / "last" / "train_state.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert without_times(read_log(run_dir)) == without_times(read_log(reference))
    assert [int(row["epoch"]) for row in read_log(run_dir)] == list(range(1, EPOCHS + 1))
    for name in ("best", "last"):
        weights = name + "/model.safetensors"
        assert (run_dir / weights).read_bytes() == (reference / weights).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "checkpoint_epoch"),
    [
        (f"step:{STEPS + 2}", 1),  # mid-epoch 2
        ("write:train_state.pt:2", 1),  # half-way through epoch 2's training state
        ("write:model.safetensors:3", 1),  # half-way through epoch 2's last/ weights (1: last, 2: best of epoch 1)
        ("write:log.csv:2", 2),  # epoch 2's checkpoint is complete, its log row not yet written
    ],
)
def test_killed_training_resumes_exactly(fault, checkpoint_epoch, fault_config, reference_run, tmp_path):
    run_dir = tmp_path / "run"
    result = run_wrapped(fault, "train", cli_args(dataclasses.replace(fault_config, output_dir=str(run_dir))))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    epoch, leftovers = check_only_complete_files(run_dir)
    assert epoch == checkpoint_epoch
    if fault.startswith("write:"):
        name = fault.split(":")[1]
        half_written = [p for p in leftovers if Path(p).name.startswith(f".tmp-{name}-")]
        assert len(half_written) == 1  # the kill did land inside the write: its temporary file is all that broke
    resume_and_compare(run_dir, reference_run)


@pytest.mark.slow
def test_training_killed_at_a_random_moment_resumes(fault_config, reference_run, tmp_path):
    """A real external SIGKILL, soon after the first checkpoint appears (wherever the run then is)."""
    run_dir = tmp_path / "run"
    config = dataclasses.replace(fault_config, output_dir=str(run_dir), max_steps_per_epoch=0)  # full epochs
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(
        [sys.executable, "train.py", *cli_args(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last" / "train_state.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
    finally:
        returncode = process.wait(timeout=60)
    assert returncode == -signal.SIGKILL  # killed, not finished
    epoch, _ = check_only_complete_files(run_dir)
    assert 1 <= epoch < EPOCHS
    resume_to_the_end(run_dir)
    assert [int(row["epoch"]) for row in read_log(run_dir)] == list(range(1, EPOCHS + 1))


def test_resume_before_the_first_checkpoint_is_a_clear_error(fault_config, tmp_path, capsys):
    from captioning.cli import train as train_cli

    run_dir = tmp_path / "run"
    result = run_wrapped("step:2", "train", cli_args(dataclasses.replace(fault_config, output_dir=str(run_dir))))
    assert result.returncode == -signal.SIGKILL
    assert (run_dir / "train_config.json").exists() and not (run_dir / "last").exists()
    with TorchThreads():
        assert train_cli.main(["--resume", str(run_dir)]) == 2
    assert "train_state.pt" in capsys.readouterr().err


# --- feature cache ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_inputs(shapes_data):
    """The TRAIN pixels, names and a small deterministic encoder (offline lite0 weights at a 64 px input)."""
    import h5py

    from captioning.encoder import Encoder, preprocessing_for

    base, data_dir = shapes_data["data_name"], Path(shapes_data["data_dir"])
    with h5py.File(data_dir / f"TRAIN_IMAGES_{base}.hdf5", "r") as h5:
        pixels = h5["images"][:]  # (32, 3, 32, 32)
    names = json.loads((data_dir / f"TRAIN_NAMES_{base}.json").read_text())
    encoder = Encoder("tf_efficientnet_lite0", "lite-wheel")
    return {"pixels": pixels, "names": names, "encoder": encoder, "prep": preprocessing_for(encoder, 32, 64)}


def test_feature_cache_interrupted_by_an_error_continues(cache_inputs, tmp_path):
    from captioning.features import cache_features, cache_paths, load_cached_features

    pixels, names, encoder, prep = (cache_inputs[k] for k in ("pixels", "names", "encoder", "prep"))
    batch, fail_at = 4, 3  # 8 batches; the 4th load fails
    calls = []

    def failing_load(start, stop):
        calls.append(start)
        if len(calls) > fail_at:
            raise OSError("disk went away")
        return pixels[start:stop]

    def counted_load(start, stop):
        """The pixels [start, stop), each batch's start noted in calls."""
        calls.append(start)
        return pixels[start:stop]

    def cache_into(cache_dir: Path, load) -> None:
        """The TRAIN features cached in `batch`-image batches of the pixels that load(start, stop) returns."""
        cache_features(encoder, load, names, cache_dir, "TRAIN", prep, batch_size=batch, bf16=True, data_name="shapes")

    with pytest.raises(OSError):
        cache_into(tmp_path / "cache", failing_load)
    progress = json.loads(cache_paths(tmp_path / "cache", "TRAIN", "shapes")[1].read_text())
    assert progress["done"] == fail_at * batch > 0 and not progress["complete"]
    with pytest.raises(RuntimeError, match="incomplete"):
        load_cached_features(tmp_path / "cache", "TRAIN", "shapes")

    calls.clear()
    cache_into(tmp_path / "cache", counted_load)
    assert calls == list(range(fail_at * batch, len(names), batch))  # finished batches were not recomputed
    cache_into(tmp_path / "whole", counted_load)
    resumed, resumed_names = load_cached_features(tmp_path / "cache", "TRAIN", "shapes")
    whole, _ = load_cached_features(tmp_path / "whole", "TRAIN", "shapes")
    assert resumed_names == names and resumed.shape == (len(names), 196, encoder.dim)
    assert np.array_equal(resumed, whole)
    assert np.abs(resumed.astype(np.float32)).sum() > 0


@pytest.mark.slow
def test_feature_cache_cli_killed_and_restarted(shapes_data, cache_inputs, tmp_path, monkeypatch):
    import captioning.features as features
    from captioning.cli import features as features_cli

    data = ["--data-dir", shapes_data["data_dir"], "--data-name", shapes_data["data_name"]]
    trunk = ["--backbone", "tf_efficientnet_lite0", "--encoder-weights", "lite-wheel"]
    sizes = ["--image-size", "32", "--input-size", "64", "--batch-size", "4"]
    args = ["--split", "TRAIN", *data, *trunk, *sizes, "--threads", "1"]
    result = run_wrapped("encode:4", "features", ["--cache-dir", str(tmp_path / "cache"), *args])
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    progress = json.loads(features.cache_paths(tmp_path / "cache", "TRAIN", shapes_data["data_name"])[1].read_text())
    assert progress["done"] == 12 and not progress["complete"]

    encode_pixels, encoded = features.encode_pixels, []

    def counting_encode(encoder, pixels, prep, bf16, *rest):
        encoded.append(len(pixels))
        return encode_pixels(encoder, pixels, prep, bf16, *rest)

    monkeypatch.setattr(features, "encode_pixels", counting_encode)
    with TorchThreads():  # the CLI sets --threads 1
        features_cli.main(["--cache-dir", str(tmp_path / "cache"), *args])
        assert sum(encoded) == len(cache_inputs["names"]) - 12  # only the unfinished batches
        features_cli.main(["--cache-dir", str(tmp_path / "whole"), *args])
    resumed, names = features.load_cached_features(tmp_path / "cache", "TRAIN", shapes_data["data_name"])
    whole, _ = features.load_cached_features(tmp_path / "whole", "TRAIN", shapes_data["data_name"])
    assert names == cache_inputs["names"]
    assert np.array_equal(resumed, whole)
