"""Training loop: DDP over 2 gloo processes, exact resume through train.py (a hard-attention run's with its
baseline), run directory contents, LR decay and early stopping, the selection metric, HDF5 loading in worker
processes, CPU bf16 autocast; a saved TrainConfig loading back; conftest's guard that only tests marked slow train.

Run as a script (by torchrun, from test_ddp_ranks_end_with_identical_weights) it is one DDP rank: it trains with
the given config and saves this rank's decoder weights and the files it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TorchThreads, cli_args, make_train_config, read_log, without_times

from captioning import training
from captioning.config import EncoderSpec
from captioning.model import Captioner

REPO = Path(__file__).resolve().parents[1]


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- DDP --------------------------------------------------------------------------------------------------------


def ddp_rank_main(config_path: str, out_dir: str) -> None:
    """One torchrun rank: train, then save rank{r}.safetensors (decoder before/after) and rank{r}.json (writes)."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    import captioning.training as training

    writes, built = [], []
    atomic_write, save, build = training.atomic_write, training.Captioner.save, training.build_captioner

    def counting_atomic_write(path, write):
        writes.append(str(path))
        atomic_write(path, write)

    def counting_save(self, directory, fp16=False):
        writes.append(str(directory))
        return save(self, directory, fp16)

    def keeping_build(config, word_map, *args):
        captioner = build(config, word_map, *args)
        built.append((captioner, {k: v.clone() for k, v in captioner.decoder.state_dict().items()}))
        return captioner

    training.atomic_write, training.Captioner.save, training.build_captioner = (
        counting_atomic_write,
        counting_save,
        keeping_build,
    )
    config = training.TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    state = training.train(config)
    rank, world = dist.get_rank(), dist.get_world_size()
    captioner, initial = built[0]
    tensors = {f"final.{k}": v.contiguous() for k, v in captioner.decoder.state_dict().items()}
    tensors.update({f"initial.{k}": v.contiguous() for k, v in initial.items()})
    save_file(tensors, str(Path(out_dir) / f"rank{rank}.safetensors"))
    last = state["history"][-1]
    report = {
        "rank": rank,
        "world_size": world,
        "writes": writes,
        "epoch": state["epoch"],
        "train_loss": last.get("train_loss", last.get("train_reward")),
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["cross-entropy", "self-critical"])
def test_ddp_ranks_end_with_identical_weights(objective, tiny_train_config, tmp_path):
    from safetensors.torch import load_file

    from captioning.model import Captioner
    from captioning.training import train

    run_dir = tmp_path / "run"
    config = tiny_train_config(run_dir, max_steps_per_epoch=3, num_workers=0)
    if objective == "self-critical":  # sampled captions and CIDEr-D rewards, from a cross-entropy start
        train(tiny_train_config(tmp_path / "start", max_steps_per_epoch=1))
        config = dataclasses.replace(config, scst=True, init_from=str(tmp_path / "start" / "last"), scst_max_len=8)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).resolve()),
        "--ddp-rank",
        str(config_path),
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2] and [r["epoch"] for r in reports] == [1, 1]
    assert all(math.isfinite(r["train_loss"]) for r in reports)
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    final = [{k: v for k, v in w.items() if k.startswith("final.")} for w in weights]
    assert state_dicts_equal(final[0], final[1])  # gradients were averaged: both ranks took the same steps
    assert any(not torch.equal(weights[0][k], weights[0]["initial." + k[6:]]) for k in final[0])  # it trained
    # rank 0 alone wrote the run directory, and what it saved is what both ranks hold
    assert reports[0]["writes"] and reports[1]["writes"] == []
    assert all(Path(p).is_relative_to(run_dir) for p in reports[0]["writes"])
    saved = Captioner.load(run_dir / "last").decoder.state_dict()
    assert state_dicts_equal(saved, {k[6:]: v for k, v in final[1].items()})
    assert len(read_log(run_dir)) == 1


# --- resume, run directory ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_epoch_runs(shapes_data, tmp_path_factory):
    """Through train.py: 2 epochs straight, and 1 epoch then --resume for 1 more (same config otherwise)."""
    from captioning.cli import train as train_cli

    root = tmp_path_factory.mktemp("resume")
    straight = make_train_config(
        shapes_data, root / "straight", epochs=2, max_steps_per_epoch=4, seed=5, keep_epochs=True
    )
    with TorchThreads(2):
        assert train_cli.main(cli_args(straight)) == 0
        assert torch.get_num_threads() == 1  # the entry point set the configured thread count
        assert train_cli.main(cli_args(dataclasses.replace(straight, output_dir=str(root / "resumed"), epochs=1))) == 0
        first_epoch_log = read_log(root / "resumed")
        assert train_cli.main(["--resume", str(root / "resumed"), "--epochs", "2"]) == 0
    return {"straight": root / "straight", "resumed": root / "resumed", "first_epoch_log": first_epoch_log}


@pytest.mark.slow
def test_resume_gives_identical_weights_and_log(two_epoch_runs):
    straight, resumed = two_epoch_runs["straight"], two_epoch_runs["resumed"]
    a = torch.load(straight / "last" / "train_state.pt", weights_only=True)
    b = torch.load(resumed / "last" / "train_state.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert state_dicts_equal(a["model"], b["model"])
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, moments in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][key][name]) for name, v in moments.items())
    assert without_times(a["history"]) == without_times(b["history"])
    straight_log, resumed_log = read_log(straight), read_log(resumed)
    assert [row["epoch"] for row in resumed_log] == ["1", "2"]
    assert without_times(straight_log) == without_times(resumed_log)
    assert without_times(two_epoch_runs["first_epoch_log"]) == without_times(resumed_log[:1])  # epoch 1 kept
    for name in ("best", "last", "epoch_1", "epoch_2"):
        weights = name + "/model.safetensors"
        assert (straight / weights).read_bytes() == (resumed / weights).read_bytes()
    assert json.loads((resumed / "train_config.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_run_directory_contents(two_epoch_runs):
    from captioning.model import Captioner

    run = two_epoch_runs["straight"]
    for name in ("best", "last"):
        model = Captioner.load(run / name)
        assert model.config.encoder.backbone == "test_efficientnet" and model.config.decoder.decoder_dim == 16
        assert model.config.preprocessing.image_size == 32 and model.config.preprocessing.input_size == 64  # as stored
        assert sorted(p.name for p in (run / name).iterdir() if not p.name.startswith(".")) == sorted(
            ["config.json", "wordmap.json", "model.safetensors", "familiarity.safetensors"]
            + (["train_state.pt"] if name == "last" else [])
        )
    rows = read_log(run)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    columns = ("train_loss", "train_top5", "val_loss", "val_top5", "val_bleu4", "lr", "epoch_time", "captions_per_s")
    for column in columns:
        assert column in rows[0], column
        assert all(math.isfinite(float(row[column])) for row in rows)
    assert all(0.0 <= float(row["val_bleu4"]) <= 1.0 for row in rows)
    assert all(float(row["captions_per_s"]) > 0 for row in rows)
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["epochs"] == 2 and saved["output_dir"] == str(run)
    assert saved["encoder"]["backbone"] == "test_efficientnet"
    state = torch.load(run / "last" / "train_state.pt", weights_only=True)
    assert state["select_on"] == "cider"  # 4 val images: too few for BLEU-4
    best_epoch = max(state["history"], key=lambda r: r["val_cider"])["epoch"]  # first epoch with the top score
    assert state["best_bleu4"] == max(r["val_bleu4"] for r in state["history"])
    if best_epoch == 2:
        assert (run / "best" / "model.safetensors").read_bytes() == (run / "last" / "model.safetensors").read_bytes()
    weights = {name: (run / name / "model.safetensors").read_bytes() for name in ("epoch_1", "epoch_2", "last")}
    assert weights["epoch_2"] == weights["last"] and weights["epoch_1"] != weights["epoch_2"]  # --keep-epochs
    epoch_files = ["config.json", "familiarity.safetensors", "model.safetensors", "wordmap.json"]
    assert sorted(p.name for p in (run / "epoch_1").iterdir()) == epoch_files
    assert not [p.name for p in run.rglob(".tmp-*")]  # no temporary file left by a clean run


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    from captioning.cli import train as train_cli

    with pytest.raises(SystemExit, match="train_config.json not found"):
        train_cli.main(["--resume", str(tmp_path / "nothing")])


@pytest.mark.slow
def test_hard_training_resumes_exactly_with_its_baseline(tiny_train_config, tmp_path):
    from captioning.training import train

    def config(out, epochs=2):
        return tiny_train_config(out, attention="hard", epochs=epochs, dropout=0.0)

    whole = train(config(tmp_path / "whole"))
    train(config(tmp_path / "split", epochs=1))
    resumed = train(config(tmp_path / "split"), resume=tmp_path / "split")
    timing = {"batch_time", "data_time", "epoch_time", "captions_per_s"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in resumed["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in whole["history"]]
    assert "train_baseline" in whole["history"][0] and "train_entropy" in whole["history"][0]
    a = torch.load(tmp_path / "whole" / "last" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last" / "train_state.pt", weights_only=True)
    assert set(a["objective"]) == {"baseline", "baseline_started"} and bool(a["objective"]["baseline_started"])
    assert torch.equal(a["objective"]["baseline"], b["objective"]["baseline"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    saved = json.loads((tmp_path / "whole" / "best" / "config.json").read_text())
    assert saved["decoder"]["attention"] == "hard" and Captioner.load(tmp_path / "whole" / "best").decoder.hard


# --- learning-rate decay and early stopping -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("decay_patience", "stop_patience", "epochs_run", "decayed_from"),
    [
        (1, 2, 3, 3),  # epoch 1 sets the best; epochs 2, 3 don't improve; lr x0.8 from epoch 3; stop before epoch 4
        (2, 3, 4, 4),  # lr x0.8 after 2 epochs without improvement (epoch 4); stop after 3 (before epoch 5)
    ],
)
def test_lr_decay_and_early_stop(
    tiny_train_config,
    tmp_path,
    monkeypatch,
    one_thread,
    capsys,
    decay_patience,
    stop_patience,
    epochs_run,
    decayed_from,
):
    import captioning.training as training

    calls = []

    def constant_validate(objective, dataset, config, device):
        calls.append(1)
        return {"val_loss": 1.0, "val_top5": 50.0, "val_bleu4": 0.25}  # never improves after the first epoch

    monkeypatch.setattr(training, "validate", constant_validate)
    config = tiny_train_config(
        tmp_path / "run",
        epochs=10,
        max_steps_per_epoch=1,
        decoder_lr=1e-3,
        lr_decay_patience=decay_patience,
        early_stop_patience=stop_patience,
        select_on="bleu4",  # what the scripted validation scores
    )
    state = training.train(config)
    assert state["epoch"] == epochs_run == len(calls) == len(state["history"])
    assert state["epochs_since_improvement"] == stop_patience
    lrs = [row["lr"] for row in state["history"]]
    assert lrs == pytest.approx([1e-3] * (decayed_from - 1) + [8e-4] * (epochs_run - decayed_from + 1), rel=1e-12)
    out = capsys.readouterr().out
    assert "early stop" in out and out.count("captions_per_s=") == epochs_run  # throughput printed every epoch
    assert out.count(", val BLEU-4 25.0, ") == epochs_run  # printed in percent, as the README; log.csv keeps 0.25
    saved = torch.load(tmp_path / "run" / "last" / "train_state.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(8e-4)
    assert len(read_log(tmp_path / "run")) == epochs_run


@pytest.mark.slow
def test_lr_decays_repeatedly_while_no_improvement(tiny_train_config, tmp_path, monkeypatch, one_thread):
    import captioning.training as training

    scores = iter([0.3, 0.2, 0.2, 0.2, 0.4, 0.1])  # improves at epochs 1 and 5 only
    monkeypatch.setattr(training, "validate", lambda *a: {"val_loss": 1.0, "val_top5": 0.0, "val_bleu4": next(scores)})
    config = tiny_train_config(
        tmp_path / "run",
        epochs=6,
        max_steps_per_epoch=1,
        decoder_lr=1e-3,
        lr_decay_patience=1,
        early_stop_patience=10,
        threads=2,
        select_on="bleu4",
    )
    state = training.train(config)
    assert torch.get_num_threads() == 1  # train() leaves process state (one_thread's count) to the entry point
    lrs = [row["lr"] for row in state["history"]]
    expected = [1e-3, 1e-3, 8e-4, 6.4e-4, 5.12e-4, 5.12e-4]  # x0.8 before epochs 3, 4, 5; reset of the count at 5
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert state["best_bleu4"] == 0.4 and state["epochs_since_improvement"] == 1


# --- the batch step ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_one_epoch_runs_any_objective(tiny_train_config, tmp_path):
    """The loop only needs .loss and .log_values() from the objective: another objective (e.g. self-critical)
    plugs in unchanged, and its averages are logged under its own names, weighted as it says."""
    from dataclasses import dataclass

    from captioning.training import make_dataset, make_loader, train_one_epoch

    @dataclass
    class Result:
        loss: torch.Tensor
        reward: float

        def log_values(self):
            return {"reward": (self.reward, 2)}

    class ConstantRewardObjective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))
            self.rewards = iter([1.0, 4.0, 7.0])

        def forward(self, inputs, captions, lengths, image_index, indices):
            return Result(self.weight * inputs.float().mean(), next(self.rewards))

    config = tiny_train_config(tmp_path / "run", max_steps_per_epoch=3)
    objective = ConstantRewardObjective()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    loader = make_loader(make_dataset(config, "TRAIN", from_features=False), config, epoch=0, shuffle=True)
    row = train_one_epoch(objective, loader, optimizer, config, torch.device("cpu"), epoch=0)
    assert row["train_reward"] == pytest.approx(4.0) and "train_loss" not in row
    assert float(objective.weight.detach()) < 1.0  # it stepped on the objective's loss


# --- data loading, bf16 -------------------------------------------------------------------------------------------


def test_hdf5_loader_with_two_workers_matches_in_process(tiny_train_config, tmp_path):
    from captioning.training import make_dataset, make_loader

    config = tiny_train_config(tmp_path / "run", num_workers=0)
    dataset = make_dataset(config, "TRAIN", from_features=False)
    workers = list(make_loader(dataset, dataclasses.replace(config, num_workers=2), epoch=1, shuffle=True))
    assert dataset._images is None  # the parent never opened the HDF5 file: each worker opened its own
    serial = list(make_loader(dataset, config, epoch=1, shuffle=True))
    assert len(serial) == len(workers) == math.ceil(dataset.split.num_images / 2)
    for a, b in zip(serial, workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert serial[0][0].dtype == torch.uint8 and serial[0][0].shape[1:] == (3, 32, 32)


@pytest.mark.slow
def test_training_from_hdf5_with_two_workers(tiny_train_config, tmp_path, one_thread):
    from captioning.training import train

    state = train(tiny_train_config(tmp_path / "run", num_workers=2, max_steps_per_epoch=0, epochs=1))
    row = state["history"][0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert (tmp_path / "run" / "last" / "train_state.pt").is_file()


@pytest.mark.slow
def test_cpu_bf16_autocast_training(tiny_train_config, tmp_path, monkeypatch, one_thread):
    import captioning.loss
    import captioning.training as training

    dtypes, loss = [], captioning.loss.caption_loss

    def recording_loss(output, captions, penalty):
        dtypes.append(output.logits.dtype)
        return loss(output, captions, penalty)

    monkeypatch.setattr(captioning.loss, "caption_loss", recording_loss)
    state = training.train(
        tiny_train_config(tmp_path / "run", bf16=True, epochs=2, max_steps_per_epoch=4, decoder_lr=4e-3)
    )
    assert torch.bfloat16 in dtypes  # the decoder ran under autocast
    for row in state["history"]:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert state["history"][1]["train_loss"] < state["history"][0]["train_loss"]
    weights = torch.load(tmp_path / "run" / "last" / "train_state.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for k, v in weights.items() if v.is_floating_point())  # fp32 master weights


if __name__ == "__main__" and sys.argv[1:2] == ["--ddp-rank"]:
    ddp_rank_main(sys.argv[2], sys.argv[3])


def test_an_optimizer_step_in_a_test_not_marked_slow_fails_naming_it():
    """conftest's guard: with -m "not slow" nothing trains, and a test that would is named, not run silently."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(AssertionError, match="an_optimizer_step.*mark it @pytest.mark.slow"):
        torch.optim.SGD([parameter], lr=0.1).step()


def test_a_saved_config_loads_with_its_encoder_spec_nested_or_flat():
    """train_config.json as train() writes it, and as runs saved before the encoder spec was nested wrote it."""
    spec = EncoderSpec("tf_efficientnet_lite0", "random", 64, False)
    nested = dataclasses.asdict(training.TrainConfig(data_name="x", encoder=spec, epochs=3))
    assert training.TrainConfig.from_dict(nested) == training.TrainConfig(data_name="x", encoder=spec, epochs=3)
    flat = {"data_name": "x", "backbone": spec.backbone, "encoder_weights": "random", "input_size": 64}
    assert training.TrainConfig.from_dict({**flat, "encoder_bf16": False}).encoder == spec
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        training.TrainConfig.from_dict({**nested, "colour": "red"})


def test_selection_metric():
    many, matched, unmatched = training.SMALL_VAL_IMAGES, {"val_4gram_matches": 12}, {"val_4gram_matches": 0}
    assert training.selection_metric("auto", many, matched)[0] == "bleu4"
    assert training.selection_metric("auto", many, unmatched) == (
        "cider",
        "val BLEU-4 found no 4-gram match: it is 0 up to rounding, not a signal",
    )
    assert training.selection_metric("auto", many - 1, matched)[0] == "cider"
    assert training.selection_metric("bleu4", 3, unmatched) == ("bleu4", "--select-on bleu4")  # as asked
