"""Cache frozen-encoder features on disk (fp16, memory-mapped, resumable) so the decoder trains on them; or, for
fine-tuning the trunk's last stages, a prefix cache: the map at the input of the first fine-tuned stage."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.checkpoint import atomic_write
from captioning.config import EncoderSpec
from captioning.data import PreparedData
from captioning.encoder import Encoder, resolve_spec
from captioning.familiarity import Familiarity, summarise
from captioning.model import pixels_to_features, pixels_to_prefix
from captioning.preprocess import Preprocessing

CACHE_BATCH_SIZE = 32  # images per encoder batch unless told (a resumed cache keeps the batch size it began with)
CACHE_FORMAT = 2  # layout version of the metadata: its "encoder" holds the EncoderSpec, files carry the data name


def write_progress(path: Path, progress: dict) -> None:
    """The cache's progress/metadata file, replaced atomically so a kill leaves the previous complete one."""
    text = json.dumps(progress)
    atomic_write(path, lambda p: p.write_text(text))


def cache_paths(cache_dir: str | Path, split: str, data_name: str, prefix: bool = False) -> tuple[Path, Path]:
    """(features .npy, progress/metadata .json) of one split of one data name: SPLIT_FEATURES_<data name>.*, or
    SPLIT_PREFIX_<data name>.* for a prefix cache (its number of stages is in the metadata); an empty data name is
    a ValueError (the name is what ties a cache to its prepared data)."""
    if not data_name:
        raise ValueError("a feature cache is named by its data name (SPLIT_FEATURES_<data name>.npy): give --data-name")
    stem = f"{PreparedData.split_key(split)}_{'PREFIX' if prefix else 'FEATURES'}_{data_name}"
    cache_dir = Path(cache_dir)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def prep_to_json(prep: Preprocessing) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(prep).items()}


def read_metadata(cache_dir: str | Path, split: str, data_name: str, prefix: bool = False) -> dict | None:
    """The cache's metadata, or None when there is none (nor without a data name, which every cache has)."""
    if not data_name:
        return None
    progress_path = cache_paths(cache_dir, split, data_name, prefix)[1]
    return json.loads(progress_path.read_text()) if progress_path.exists() else None


def spec_of(meta: dict) -> EncoderSpec:
    return EncoderSpec.from_dict(meta["encoder"])


def cache_differences(meta: dict, wanted: dict) -> list[str]:
    """'setting: cache X vs now Y' for what differs between a cache's metadata and the header a run would write."""
    wrong = spec_of(meta).differences(spec_of(wanted), "cache", "now")
    for key in ("preprocessing", "dim", "batch_size", "data_name", "split", "prefix_stages"):
        if key in wanted and meta.get(key) != wanted[key]:
            wrong.append(f"{key}: cache {meta.get(key)!r} vs now {wanted[key]!r}")
    if meta.get("names") != wanted.get("names", meta.get("names")):
        wrong.append(f"images: cache {len(meta.get('names', []))} others than the {len(wanted['names'])} now")
    return wrong


class CacheIncomplete(RuntimeError):
    """The cache was not finished; rerunning the command that made it continues it."""


class CacheMismatch(ValueError):
    """A cache folder already holds features of this split made with other settings; nothing is overwritten."""


@torch.no_grad()
def encode_pixels(
    encoder: Encoder, pixels: torch.Tensor, prep: Preprocessing, bf16: bool, prefix_stages: int = 0
) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> encoder features (B, 196, C) in fp32 as the model computes them, without autograd;
    with prefix_stages, the map at the input of the last that many stages (B, C_k, H_k, W_k) instead."""
    if prefix_stages:
        return pixels_to_prefix(encoder, pixels, prep, bf16, prefix_stages)  # (B, C_k, H_k, W_k)
    return pixels_to_features(encoder, pixels, prep, bf16)  # (B, 196, C)


def cache_features(
    encoder: Encoder,
    load_pixels: Callable[[int, int], np.ndarray],
    names: Sequence[str],
    cache_dir: str | Path,
    split: str,
    prep: Preprocessing,
    batch_size: int = CACHE_BATCH_SIZE,
    bf16: bool = True,
    weights: str = "",
    *,
    data_name: str,
    prefix_stages: int = 0,
) -> Path:
    """Encode images [0, N) in fixed batches into an fp16 memmap; a restart continues after the last full batch.

    The metadata records the encoder spec (weights: what the encoder was loaded with, "" = the backbone's default),
    preprocessing and image names; a cache of this split made with anything else is refused (CacheMismatch), never
    overwritten, and a complete cache is returned as it is. prefix_stages N > 0 makes a prefix cache instead: the
    map at the input of the trunk's last N stages, (N_images, C_k, H_k, W_k), for fine-tuning those stages.
    """
    features_path, progress_path = cache_paths(cache_dir, split, data_name, bool(prefix_stages))
    features_path.parent.mkdir(parents=True, exist_ok=True)
    grid = encoder.grid_size
    spec = resolve_spec(EncoderSpec(encoder.backbone, weights, prep.input_size, bf16, grid))  # "": trunk's default
    item_shape = (spec.cells, encoder.dim)
    if prefix_stages:  # the prefix's shape, from one blank image
        probe = torch.zeros(1, 3, prep.image_size, prep.image_size, dtype=torch.uint8)  # (1, 3, S, S)
        item_shape = tuple(encode_pixels(encoder, probe, prep, bf16, prefix_stages).shape[1:])  # (C_k, H_k, W_k)
    header = {
        "format": CACHE_FORMAT,
        "data_name": data_name,
        "split": PreparedData.split_key(split),
        "names": list(names),
        "dim": encoder.dim,
        "batch_size": batch_size,
        "encoder": dataclasses.asdict(spec),
        "preprocessing": prep_to_json(prep),
        **({"prefix_stages": prefix_stages, "prefix_shape": list(item_shape)} if prefix_stages else {}),
    }
    progress = read_metadata(cache_dir, split, data_name, bool(prefix_stages))
    if progress is not None and features_path.exists():
        wrong = cache_differences(progress, header)
        if wrong and not (progress["complete"] and all(w.startswith("batch_size") for w in wrong)):
            raise CacheMismatch(
                f"{features_path} already holds {split} features made with other settings "
                f"({'; '.join(wrong)}); use another --cache-dir, the same settings, or delete "
                f"{features_path.name} and {progress_path.name} to start over"
            )
    else:
        shape = (len(names), *item_shape)
        np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float16, shape=shape).flush()
        progress = {**header, "done": 0, "complete": False}
        write_progress(progress_path, progress)
    if progress["complete"]:
        return features_path
    store = np.load(features_path, mmap_mode="r+")  # (N, 196, C) or (N, C_k, H_k, W_k)
    encoder.eval()
    with tqdm(total=len(names), initial=progress["done"], desc=f"features {split}", unit="img") as bar:
        for start in range(progress["done"], len(names), batch_size):
            stop = min(start + batch_size, len(names))
            pixels = torch.from_numpy(np.ascontiguousarray(load_pixels(start, stop)))  # (b, 3, S, S)
            encoded = encode_pixels(encoder, pixels, prep, bf16, prefix_stages)  # (b, 196, C) or (b, C_k, H_k, W_k)
            store[start:stop] = encoded.numpy().astype(np.float16)
            store.flush()
            progress["done"] = stop
            write_progress(progress_path, progress)
            bar.update(stop - start)
    progress["complete"] = True
    write_progress(progress_path, progress)
    return features_path


def load_cached_features(
    cache_dir: str | Path,
    split: str,
    data_name: str,
    spec: EncoderSpec | None = None,
    prep: Preprocessing | None = None,
    prefix_stages: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Memory-mapped (N, 196, C) fp16 features and their image names; refuses an unfinished cache and, when spec /
    prep are given, a cache made with any other encoder spec or preprocessing (the difference is named). With
    prefix_stages N, the prefix cache for fine-tuning N stages (N, C_k, H_k, W_k) instead, refused if made for
    another N."""
    features_path, progress_path = cache_paths(cache_dir, split, data_name, bool(prefix_stages))
    progress = read_metadata(cache_dir, split, data_name, bool(prefix_stages))
    if progress is None:
        stages = f" --finetune-stages {prefix_stages}" if prefix_stages else ""
        raise FileNotFoundError(
            f"no feature cache {progress_path.name} in {cache_dir}; make it with python -m captioning.cli.features"
            f"{stages}"
        )
    if not progress["complete"]:
        done = f"{progress['done']}/{len(progress['names'])}"
        raise CacheIncomplete(
            f"feature cache {features_path} is incomplete ({done}); rerun the "
            "python -m captioning.cli.features command that made it to finish it"
        )
    wrong = spec_of(progress).differences(spec, "cache", "model") if spec is not None else []
    if prep is not None and progress.get("preprocessing") != prep_to_json(prep):
        wrong.append(f"preprocessing: cache {progress.get('preprocessing')} vs model {prep_to_json(prep)}")
    if progress.get("prefix_stages", 0) != prefix_stages:
        wrong.append(f"prefix_stages: cache {progress.get('prefix_stages', 0)} vs model {prefix_stages}")
    if wrong:
        raise ValueError(f"feature cache {features_path} was made with other encoder settings ({'; '.join(wrong)})")
    return np.load(features_path, mmap_mode="r"), progress["names"]


def familiarity_from_cache(
    cache_dir: str | Path, data_name: str, spec: EncoderSpec, prep: Preprocessing, seed: int = 0
) -> Familiarity | None:
    """A model's familiarity summary (captioning.familiarity) from the TRAIN and VAL caches of its encoder spec and
    preprocessing (a cache made otherwise is refused, as for training)."""
    train, _ = load_cached_features(cache_dir, "TRAIN", data_name, spec, prep)  # (N, 196, C) fp16 memmap
    val, _ = load_cached_features(cache_dir, "VAL", data_name, spec, prep)  # (V, 196, C)

    def reader(store: np.ndarray):
        return lambda indices: torch.from_numpy(np.asarray(store[indices], dtype=np.float32))  # (b, 196, C)

    return summarise(reader(train), len(train), reader(val), len(val), seed)
