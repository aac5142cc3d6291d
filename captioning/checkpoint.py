"""A model is a directory: config.json, wordmap.json and model.safetensors. Loading never unpickles code."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from captioning.config import ModelConfig

CONFIG_FILE, WORDMAP_FILE, WEIGHTS_FILE = "config.json", "wordmap.json", "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
# a training run directory: its settings, its two model folders (best on val, last written) and the resume state
TRAIN_CONFIG_FILE, BEST_DIR, LAST_DIR, TRAIN_STATE_FILE = "train_config.json", "best", "last", "train_state.pt"


class CheckpointError(ValueError):
    """A model directory that cannot be loaded, with the reason in words."""


def atomic_write(path: Path, write) -> None:
    """Call write(temp_path) then rename over path, so a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model_dir(
    directory: str | Path,
    config: ModelConfig,
    word_map: dict[str, int],
    state: dict[str, torch.Tensor],
    fp16: bool = False,
) -> Path:
    """Write the three files atomically; fp16 halves the weights file (floating tensors only)."""
    directory = Path(directory)
    tensors = {
        k: (v.half() if fp16 and v.is_floating_point() else v).detach().contiguous().cpu() for k, v in state.items()
    }
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(directory / WORDMAP_FILE, lambda p: p.write_text(json.dumps(word_map)))
    atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(config.to_json()))
    return directory


def read_model_dir(directory: str | Path) -> tuple[ModelConfig, dict[str, int], dict[str, torch.Tensor]]:
    """Config, word map and tensors of a model directory, with clear errors for anything missing or unsafe."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found {pickles}: pickle files are refused because loading them can run code)" if pickles else ""
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}{hint}")
    for name in (CONFIG_FILE, WORDMAP_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} has no {name}")
    try:
        config = ModelConfig.load(directory / CONFIG_FILE)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid model config: {error}") from error
    try:
        word_map = json.loads((directory / WORDMAP_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{directory / WORDMAP_FILE} is not valid JSON: {error}") from error
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} is not a safetensors file ({error}); pickles are never loaded") from error
    if len(word_map) != config.vocab_size:
        raise CheckpointError(
            f"vocabulary size mismatch: wordmap.json has {len(word_map)} words, "
            f"config.json says vocab_size={config.vocab_size}"
        )
    return config, word_map, state


def check_state_matches(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], where: str) -> None:
    """Raise a CheckpointError naming every missing, unexpected or differently shaped tensor."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{k}: weights {tuple(stored[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in stored and tuple(stored[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(f"{where}: config.json does not match the weights: " + ", ".join(problems))


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform mean of several weight sets of one model (checkpoint averaging: smooths epoch-to-epoch noise)."""
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        check_state_matches(first, state, f"model {index + 1} of {len(states)}")
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            averaged[key] = torch.stack([s[key].float() for s in states]).mean(0)  # same shape as tensor, fp32
        elif all(torch.equal(s[key], tensor) for s in states):
            averaged[key] = tensor
        else:
            raise CheckpointError(f"integer tensor {key} differs between the models: they cannot be averaged")
    return averaged


def read_and_average(directories: list[str | Path]) -> tuple[ModelConfig, dict[str, int], dict[str, torch.Tensor]]:
    """One model directory, or the weight average of several that share config and word map (e.g. epochs of a run)."""
    config, word_map, state = read_model_dir(directories[0])
    if len(directories) == 1:
        return config, word_map, state
    states = [state]
    for directory in directories[1:]:
        other_config, other_word_map, other_state = read_model_dir(directory)
        if other_config != config:
            raise CheckpointError(
                f"{directory} has another config.json than {directories[0]}: only models of one "
                "run (same architecture and settings) can be averaged"
            )
        if other_word_map != word_map:
            raise CheckpointError(f"{directory} has another wordmap.json than {directories[0]}")
        states.append(other_state)
    return config, word_map, average_states(states)
