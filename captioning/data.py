"""Reading what prepare_data.py wrote: one split's captions plus either cached features or HDF5 pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from captioning.preprocess import load_image, resize_square
from captioning.vocab import decode, invert_word_map, load_word_map


@dataclass
class RawSplit:
    """One split of a Karpathy-format file read straight from its images (no prepare_data.py run)."""

    names: list[str]  # as prepare_data.py names them (COCO: val2014/x.jpg)
    paths: list[Path]
    references: list[list[str]]  # per image: its raw reference captions

    def load_pixels(self, start: int, stop: int, image_size: int) -> np.ndarray:
        """uint8 (b, 3, S, S) of images [start, stop), resized exactly as prepare_data.py stores them."""
        return np.stack([resize_square(load_image(p), image_size) for p in self.paths[start:stop]])


def read_raw_split(karpathy_json: str | Path, image_dir: str | Path, split: str) -> RawSplit:
    """Images of one split in file order; restval counts as train."""
    wanted = {"train": ("train", "restval")}.get(split.lower(), (split.lower(),))
    entries = [e for e in json.loads(Path(karpathy_json).read_text())["images"] if e["split"] in wanted]
    if not entries:
        raise ValueError(f"{karpathy_json} has no {split!r} images")
    names = [str(Path(e.get("filepath", "")) / e["filename"]) for e in entries]
    return RawSplit(names, [Path(image_dir) / name for name in names],
                    [[s["raw"] for s in e["sentences"]] for e in entries])


def split_file(data_dir: str | Path, kind: str, split: str, data_name: str) -> Path:
    """Path of one prepared file, e.g. TRAIN_CAPTIONS_<base>.json (the tutorial's naming)."""
    suffix = "hdf5" if kind == "IMAGES" else "json"
    return Path(data_dir) / f"{split.upper()}_{kind}_{data_name}.{suffix}"


@dataclass
class SplitCaptions:
    """Encoded captions (N*cpi, T), lengths (N*cpi,), references and names of one prepared split."""

    captions: torch.Tensor
    lengths: torch.Tensor
    captions_per_image: int
    references: list[list[str]]  # per image: reference captions as space-joined words
    names: list[str]

    @property
    def num_images(self) -> int:
        return len(self.captions) // self.captions_per_image


def load_split(data_dir: str | Path, data_name: str, split: str) -> SplitCaptions:
    """Captions, lengths and references of one split; references fall back to the decoded encoded captions."""
    captions_path = split_file(data_dir, "CAPTIONS", split, data_name)
    if not captions_path.exists():
        raise FileNotFoundError(f"{captions_path} not found: run prepare_data.py first (data name {data_name!r})")
    captions = torch.tensor(json.loads(captions_path.read_text()), dtype=torch.long)  # (N*cpi, T)
    lengths = torch.tensor(json.loads(split_file(data_dir, "CAPLENS", split, data_name).read_text()))  # (N*cpi,)
    with h5py.File(split_file(data_dir, "IMAGES", split, data_name), "r") as h5:
        cpi = int(h5.attrs["captions_per_image"])
        num_images = len(h5["images"])
    if len(captions) != num_images * cpi:
        raise ValueError(f"{split}: {len(captions)} captions for {num_images} images x {cpi} captions each")
    refs_path = split_file(data_dir, "REFS", split, data_name)
    if refs_path.exists():
        references = json.loads(refs_path.read_text())
    else:
        inverse = invert_word_map(load_word_map(Path(data_dir) / f"WORDMAP_{data_name}.json"))
        texts = [" ".join(decode(c.tolist(), inverse)) for c in captions]
        references = [texts[i * cpi:(i + 1) * cpi] for i in range(num_images)]
    names_path = split_file(data_dir, "NAMES", split, data_name)
    names = json.loads(names_path.read_text()) if names_path.exists() else [str(i) for i in range(num_images)]
    return SplitCaptions(captions, lengths, cpi, references, names)


class ImageCaptions(Dataset):
    """Item i = image i (cached features (196, C) or uint8 pixels (3, S, S)) with all its captions."""

    def __init__(self, split: SplitCaptions, features: np.ndarray | None = None, images_path: str | Path | None = None):
        if (features is None) == (images_path is None):
            raise ValueError("give exactly one of features or images_path")
        if features is not None and len(features) != split.num_images:
            raise ValueError(f"feature cache has {len(features)} images, the split has {split.num_images}")
        self.split = split
        self.features = features
        self.images_path = str(images_path) if images_path is not None else None
        self._images = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return self.split.num_images

    def image(self, index: int) -> torch.Tensor:
        if self.features is not None:
            return torch.from_numpy(np.asarray(self.features[index], dtype=np.float32))  # (196, C)
        if self._images is None:
            self._images = h5py.File(self.images_path, "r")["images"]
        return torch.from_numpy(self._images[index])  # (3, S, S) uint8

    def __getitem__(self, index: int):
        cpi = self.split.captions_per_image
        rows = slice(index * cpi, (index + 1) * cpi)
        return self.image(index), self.split.captions[rows], self.split.lengths[rows], index


def collate_images(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack images and concatenate their captions: image_index maps each caption to its image in the batch."""
    images = torch.stack([item[0] for item in items])  # (N, 196, C) or (N, 3, S, S)
    lengths = torch.cat([item[2] for item in items])  # (B,)
    captions = torch.cat([item[1] for item in items])[:, : int(lengths.max())]  # (B, T)
    counts = torch.tensor([len(item[2]) for item in items])  # (N,)
    image_index = torch.repeat_interleave(torch.arange(len(items)), counts)  # (B,)
    indices = torch.tensor([item[3] for item in items])  # (N,)
    return images, captions, lengths, image_index, indices
