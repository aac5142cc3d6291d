"""A model is a directory: config.json, wordmap.json and model.safetensors. Loading never unpickles code."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from captioning.config import ModelConfig

CONFIG_FILE, WORDMAP_FILE, WEIGHTS_FILE = "config.json", "wordmap.json", "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


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


def save_model_dir(directory: str | Path, config: ModelConfig, word_map: dict[str, int],
                   state: dict[str, torch.Tensor], fp16: bool = False) -> Path:
    """Write the three files atomically; fp16 halves the weights file (floating tensors only)."""
    directory = Path(directory)
    tensors = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in state.items()}
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
        raise CheckpointError(f"vocabulary size mismatch: wordmap.json has {len(word_map)} words, "
                              f"config.json says vocab_size={config.vocab_size}")
    return config, word_map, state


def check_state_matches(expected: dict[str, torch.Tensor], stored: dict[str, torch.Tensor], where: str) -> None:
    """Raise a CheckpointError naming every missing, unexpected or differently shaped tensor."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [f"{k}: weights {tuple(stored[k].shape)} vs config {tuple(v.shape)}"
              for k, v in expected.items() if k in stored and tuple(stored[k].shape) != tuple(v.shape)]
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
            raise CheckpointError(f"{directory} has another config.json than {directories[0]}: only models of one "
                                  "run (same architecture and settings) can be averaged")
        if other_word_map != word_map:
            raise CheckpointError(f"{directory} has another wordmap.json than {directories[0]}")
        states.append(other_state)
    return config, word_map, average_states(states)


def main(argv=None) -> int:
    """Copy a model directory, or average several epochs of one run, storing the weights in fp16 (how assets/model
    is made from runs/*/best)."""
    from captioning import cli

    parser = cli.make_parser("python -m captioning.checkpoint", main.__doc__)
    parser.add_argument("sources", nargs="+", metavar="source",
                        help="model directory, e.g. runs/flickr8k/best; several (e.g. runs/x/epoch_6 runs/x/epoch_8) "
                             "are averaged weight by weight")
    parser.add_argument("target", help="output model directory, e.g. assets/model")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: store fp16)")
    args = parser.parse_args(argv)
    try:
        config, word_map, state = read_and_average(args.sources)
    except CheckpointError as error:
        unreadable = [s for s in args.sources if not (Path(s) / WEIGHTS_FILE).is_file()]
        print(cli.model_load_error(unreadable[0] if unreadable else args.sources[0], error), file=sys.stderr)
        return 2
    path = save_model_dir(args.target, config, word_map, state, fp16=not args.fp32)
    size = (path / WEIGHTS_FILE).stat().st_size / 2**20
    averaged = f", the mean of {len(args.sources)} models" if len(args.sources) > 1 else ""
    print(f"wrote {path} ({size:.1f} MiB weights, {'fp32' if args.fp32 else 'fp16'}{averaged})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
