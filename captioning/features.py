"""Cache frozen-encoder features on disk (fp16, memory-mapped, resumable) so the decoder trains on them."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.checkpoint import atomic_write
from captioning.config import EncoderSpec
from captioning.data import PreparedData
from captioning.encoder import Encoder
from captioning.model import pixels_to_features
from captioning.precision import emulated_bf16_warning, native_cpu_bf16
from captioning.preprocess import Preprocessing

CACHE_FORMAT = 2  # 1: SPLIT_FEATURES.npy/.json with flat backbone/weights/bf16/grid keys (read, converted)


def write_progress(path: Path, progress: dict) -> None:
    """The cache's progress/metadata file, replaced atomically so a kill leaves the previous complete one."""
    text = json.dumps(progress)
    atomic_write(path, lambda p: p.write_text(text))


def cache_paths(cache_dir: str | Path, split: str, data_name: str = "") -> tuple[Path, Path]:
    """(features .npy, progress/metadata .json) of one split of one data name: SPLIT_FEATURES_<data name>.*
    (without a data name: the format-1 names SPLIT_FEATURES.*)."""
    stem = f"{PreparedData.split_key(split)}_FEATURES" + (f"_{data_name}" if data_name else "")
    cache_dir = Path(cache_dir)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def prep_to_json(prep: Preprocessing) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(prep).items()}


def upgrade_metadata(meta: dict) -> dict:
    """Format-1 metadata (flat backbone/weights/bf16/grid keys) -> the current layout; current metadata unchanged."""
    if "encoder" in meta:
        return meta
    meta = dict(meta)
    grid = int(round(meta.pop("grid", 196) ** 0.5))
    spec = EncoderSpec(backbone=meta.pop("backbone", ""), weights=meta.pop("weights", "") or "unknown",
                       input_size=meta.get("preprocessing", {}).get("input_size", 448), bf16=meta.pop("bf16", True),
                       grid_size=grid)
    meta["encoder"] = dataclasses.asdict(spec)
    meta["format"] = CACHE_FORMAT
    return meta


def read_metadata(cache_dir: str | Path, split: str, data_name: str = "") -> dict | None:
    """The cache's metadata (upgraded to the current layout), or None when there is none."""
    progress_path = cache_paths(cache_dir, split, data_name)[1]
    return upgrade_metadata(json.loads(progress_path.read_text())) if progress_path.exists() else None


def spec_of(meta: dict) -> EncoderSpec:
    return EncoderSpec.from_dict(meta["encoder"])


def cache_differences(meta: dict, wanted: dict) -> list[str]:
    """'setting: cache X vs now Y' for what differs between a cache's metadata and the header a run would write."""
    wrong = spec_of(meta).differences(spec_of(wanted), "cache", "now")
    for key in ("preprocessing", "dim", "batch_size", "data_name", "split"):
        if key in wanted and (key in meta or key not in ("data_name", "split")) and meta.get(key) != wanted[key]:
            wrong.append(f"{key}: cache {meta.get(key)!r} vs now {wanted[key]!r}")
    if meta.get("names") != wanted.get("names", meta.get("names")):
        wrong.append(f"images: cache {len(meta.get('names', []))} others than the {len(wanted['names'])} now")
    return wrong


class CacheIncomplete(RuntimeError):
    """The cache was not finished; rerunning the command that made it continues it."""


class CacheMismatch(ValueError):
    """A cache folder already holds features of this split made with other settings; nothing is overwritten."""


@torch.no_grad()
def encode_pixels(encoder: Encoder, pixels: torch.Tensor, prep: Preprocessing, bf16: bool) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> encoder features (B, 196, C) in fp32 as the model computes them, without autograd."""
    return pixels_to_features(encoder, pixels, prep, bf16)  # (B, 196, C)


def cache_features(
    encoder: Encoder,
    load_pixels: Callable[[int, int], np.ndarray],
    names: Sequence[str],
    cache_dir: str | Path,
    split: str,
    prep: Preprocessing,
    batch_size: int = 32,
    bf16: bool = True,
    weights: str = "",
    data_name: str = "",
) -> Path:
    """Encode images [0, N) in fixed batches into an fp16 memmap; a restart continues after the last full batch.

    The metadata records the encoder spec (weights: what the encoder was loaded with, "" = the backbone's default),
    preprocessing and image names; a cache of this split made with anything else is refused (CacheMismatch), never
    overwritten, and a complete cache is returned as it is.
    """
    features_path, progress_path = cache_paths(cache_dir, split, data_name)
    features_path.parent.mkdir(parents=True, exist_ok=True)
    grid = encoder.grid_size
    spec = EncoderSpec(encoder.backbone, weights, prep.input_size, bf16, grid)
    header = {"format": CACHE_FORMAT, "data_name": data_name, "split": PreparedData.split_key(split),
              "names": list(names), "dim": encoder.dim, "batch_size": batch_size,
              "encoder": dataclasses.asdict(spec), "preprocessing": prep_to_json(prep)}
    progress = read_metadata(cache_dir, split, data_name)
    if progress is not None and features_path.exists():
        wrong = cache_differences(progress, header)
        if wrong and not (progress["complete"] and all(w.startswith("batch_size") for w in wrong)):
            raise CacheMismatch(f"{features_path} already holds {split} features made with other settings "
                                f"({'; '.join(wrong)}); use another --cache-dir, the same settings, or delete "
                                f"{features_path.name} and {progress_path.name} to start over")
    else:
        shape = (len(names), spec.cells, encoder.dim)
        np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float16, shape=shape).flush()
        progress = {**header, "done": 0, "complete": False}
        write_progress(progress_path, progress)
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
            write_progress(progress_path, progress)
            bar.update(stop - start)
    progress["complete"] = True
    write_progress(progress_path, progress)
    return features_path


def load_cached_features(cache_dir: str | Path, split: str, data_name: str = "", spec: EncoderSpec | None = None,
                         prep: Preprocessing | None = None) -> tuple[np.ndarray, list[str]]:
    """Memory-mapped (N, 196, C) fp16 features and their image names; refuses an unfinished cache and, when spec /
    prep are given, a cache made with any other encoder spec or preprocessing (the difference is named)."""
    features_path, progress_path = cache_paths(cache_dir, split, data_name)
    progress = read_metadata(cache_dir, split, data_name)
    if progress is None:
        legacy = cache_paths(cache_dir, split)[1]
        hint = (f"; {legacy.name} there has the old unnamed layout: adopt it with python -m captioning.features "
                f"--adopt-legacy --cache-dir {cache_dir} --split {split} --data-name {data_name}"
                if data_name and legacy.exists() else "; make it with python -m captioning.features")
        raise FileNotFoundError(f"no feature cache {progress_path.name} in {cache_dir}{hint}")
    if not progress["complete"]:
        done = f"{progress['done']}/{len(progress['names'])}"
        raise CacheIncomplete(f"feature cache {features_path} is incomplete ({done}); rerun the "
                              "python -m captioning.features command that made it to finish it")
    wrong = spec_of(progress).differences(spec, "cache", "model") if spec is not None else []
    if prep is not None and progress.get("preprocessing") != prep_to_json(prep):
        wrong.append(f"preprocessing: cache {progress.get('preprocessing')} vs model {prep_to_json(prep)}")
    if wrong:
        raise ValueError(f"feature cache {features_path} was made with other encoder settings ({'; '.join(wrong)})")
    return np.load(features_path, mmap_mode="r"), progress["names"]


def adopt_legacy_cache(cache_dir: str | Path, split: str, data_name: str) -> Path:
    """Rename a format-1 cache (SPLIT_FEATURES.npy/.json) to SPLIT_FEATURES_<data name>.* and rewrite its metadata
    in the current layout (same features, nothing re-encoded)."""
    old_features, old_meta = cache_paths(cache_dir, split)
    new_features, new_meta = cache_paths(cache_dir, split, data_name)
    if not old_meta.exists() or not old_features.exists():
        raise FileNotFoundError(f"no old-layout cache {old_features.name} / {old_meta.name} in {cache_dir}")
    if new_meta.exists() or new_features.exists():
        raise FileExistsError(f"{new_features.name} or {new_meta.name} already exists in {cache_dir}")
    meta = upgrade_metadata(json.loads(old_meta.read_text()))
    meta.update(data_name=data_name, split=PreparedData.split_key(split))
    os.replace(old_features, new_features)
    write_progress(new_meta, meta)
    old_meta.unlink()
    return new_features


def build_parser():
    from captioning import cli

    parser = cli.make_parser("python -m captioning.features", main.__doc__)
    cli.add_split_flag(parser)
    cli.add_cache_dir_flag(parser, required=True)
    cli.add_data_flags(parser)
    cli.add_raw_data_flags(parser)
    cli.add_image_size_flag(parser)
    cli.add_encoder_flags(parser)
    parser.add_argument("--batch-size", type=cli.positive_int, default=32,
                        help="images per encoder batch; a resumed cache must keep its batch size")
    cli.add_threads_flag(parser)
    parser.add_argument("--adopt-legacy", action="store_true",
                        help="only rename an old-layout SPLIT_FEATURES.npy/.json in --cache-dir to this data name's "
                             "files and rewrite its metadata (nothing is encoded)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Cache one split's encoder features, from a prepared HDF5 file (--data-dir/--data-name) or from raw
    Karpathy-split images (--karpathy-json/--image-dir; --data-name still names the cache files).
    Resumable: rerun the same command after an interruption. A cache made with other settings is never replaced."""
    import h5py

    from captioning import cli
    from captioning.data import read_raw_split
    from captioning.encoder import preprocessing_for
    from captioning.model import EncoderUnavailable, create_encoder

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = args.split
    features_path, progress_path = cache_paths(args.cache_dir, split, args.data_name)
    try:
        if args.adopt_legacy:
            path = adopt_legacy_cache(args.cache_dir, split, args.data_name)
            print(f"adopted: {path} (metadata rewritten in the current layout, features untouched)")
            return 0
        spec = cli.encoder_spec(args)
        if args.encoder_bf16 is None:  # default: bf16 only where it is native
            spec = spec.with_changes(bf16=native_cpu_bf16())
        if spec.bf16 and (warning := emulated_bf16_warning("the encoder's bf16 autocast", "--no-encoder-bf16 (fp32 "
                                                         "features; models trained on them say encoder bf16 false)")):
            print(warning)  # stdout: stderr is kept for the one-line errors
        if args.karpathy_json:
            raw = read_raw_split(args.karpathy_json, args.image_dir, split)
            names, image_size = raw.names, args.image_size

            def load_pixels(start: int, stop: int) -> np.ndarray:
                return raw.load_pixels(start, stop, image_size)  # (b, 3, S, S)
        else:
            data = PreparedData(args.data_dir, args.data_name)
            image_size = data.image_size(split)
            images = h5py.File(data.images_path(split), "r")["images"]
            names = data.load_split(split).names

            def load_pixels(start: int, stop: int) -> np.ndarray:
                return images[start:stop]  # (b, 3, S, S)

        before = read_metadata(args.cache_dir, split, args.data_name)
        encoder = create_encoder(spec)
        prep = preprocessing_for(encoder, image_size, spec.input_size)
        path = cache_features(encoder, load_pixels, names, args.cache_dir, split, prep, args.batch_size, spec.bf16,
                              spec.weights, args.data_name)
    except KeyboardInterrupt:
        meta = read_metadata(args.cache_dir, split, args.data_name)
        done = f" at {meta['done']}/{len(meta['names'])} images" if meta else ""
        return cli.interrupted(f"interrupted{done}; rerun the same command to continue")
    except (FileNotFoundError, FileExistsError, ValueError, EncoderUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if before is not None and before["complete"]:
        print(f"{path} is already complete ({len(names)} images): nothing to do")
    else:
        print(f"features for {len(names)} images in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
