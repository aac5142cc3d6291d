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


DATA_DIR = "data"  # the folder prepare_data.py writes and the other tools read, unless told otherwise
SPLITS = ("TRAIN", "VAL", "TEST")  # the prepared files' splits
# split labels of the source files -> split; restval (Karpathy's COCO images beyond the 5k val / 5k test) trains
SPLIT_LABELS = {"train": "TRAIN", "restval": "TRAIN", "val": "VAL", "test": "TEST"}


def split_of(label: str) -> str:
    """The split an image labelled `label` (any case) is prepared into: TRAIN, VAL or TEST; restval counts as train.
    Another label is a ValueError naming the accepted ones."""
    split = SPLIT_LABELS.get(str(label).strip().lower())
    if split is None:
        raise ValueError(f"unknown split {label!r} (expected one of {', '.join(SPLIT_LABELS)})")
    return split


def read_raw_split(karpathy_json: str | Path, image_dir: str | Path, split: str) -> RawSplit:
    """Images of one split in file order, labelled as split_of() reads them (restval counts as train)."""
    key = PreparedData.split_key(split)
    try:
        entries = [e for e in json.loads(Path(karpathy_json).read_text())["images"] if split_of(e["split"]) == key]
    except ValueError as error:
        raise ValueError(f"{karpathy_json}: {error}") from error
    if not entries:
        raise ValueError(f"{karpathy_json} has no {split!r} images")
    names = [str(Path(e.get("filepath", "")) / e["filename"]) for e in entries]
    return RawSplit(
        names, [Path(image_dir) / name for name in names], [[s["raw"] for s in e["sentences"]] for e in entries]
    )


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


class PreparedData:
    """The files prepare_data.py writes for one data name: `<SPLIT>_<KIND>_<name>.<ext>` and `WORDMAP_<name>.json`
    (the tutorial's naming). The writer and every reader build paths, split names and the image size here."""

    KINDS = ("IMAGES", "CAPTIONS", "CAPLENS", "REFS", "NAMES", "BOXES")

    def __init__(self, data_dir: str | Path, data_name: str):
        self.data_dir = Path(data_dir)
        self.data_name = data_name

    @staticmethod
    def split_key(split: str) -> str:
        """'train' / 'VAL' / ... -> 'TRAIN' / 'VAL' / 'TEST'; anything else is a ValueError naming the choices."""
        key = str(split).strip().upper()
        if key not in SPLITS:
            raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        return key

    def file_name(self, kind: str, split: str) -> str:
        suffix = "hdf5" if kind == "IMAGES" else "json"
        return f"{self.split_key(split)}_{kind}_{self.data_name}.{suffix}"

    def path(self, kind: str, split: str) -> Path:
        """Path of one prepared file, e.g. data/TRAIN_CAPTIONS_<name>.json."""
        return self.data_dir / self.file_name(kind, split)

    def images_path(self, split: str) -> Path:
        return self.path("IMAGES", split)

    @property
    def word_map_path(self) -> Path:
        return self.data_dir / f"WORDMAP_{self.data_name}.json"

    def splits(self) -> list[str]:
        """The splits that were prepared (those with an images file), in TRAIN, VAL, TEST order."""
        return [split for split in SPLITS if self.images_path(split).is_file()]

    def check_exists(self, split: str | None = None) -> None:
        """FileNotFoundError in one line naming the cause and the fix: unknown data name or a split not prepared."""
        if not self.word_map_path.is_file():
            found = sorted(p.name[len("WORDMAP_") : -len(".json")] for p in self.data_dir.glob("WORDMAP_*.json"))
            there = f"data names there: {', '.join(found)}" if found else "none there"
            raise FileNotFoundError(
                f"no prepared data named {self.data_name!r} in {self.data_dir} ({there}); "
                "check --data-name or run prepare_data.py first"
            )
        if split is not None and not self.images_path(split).is_file():
            raise FileNotFoundError(
                f"split {self.split_key(split)} was not prepared for {self.data_name!r} in "
                f"{self.data_dir} (prepared: {', '.join(self.splits()) or 'none'}); choose one "
                "of those with --split"
            )

    def load_word_map(self) -> dict[str, int]:
        self.check_exists()
        return load_word_map(self.word_map_path)

    def image_size(self, split: str = "TRAIN") -> int:
        """Side of the stored square images (the model's preprocessing must say what it was trained on)."""
        self.check_exists(split)
        with h5py.File(self.images_path(split), "r") as h5:
            return int(h5["images"].shape[-1])

    def load_split(self, split: str) -> SplitCaptions:
        """Captions, lengths and references of one split; references fall back to the decoded encoded captions."""
        self.check_exists(split)
        captions = torch.tensor(json.loads(self.path("CAPTIONS", split).read_text()), dtype=torch.long)  # (N*cpi, T)
        lengths = torch.tensor(json.loads(self.path("CAPLENS", split).read_text()))  # (N*cpi,)
        with h5py.File(self.images_path(split), "r") as h5:
            cpi = int(h5.attrs["captions_per_image"])
            num_images = len(h5["images"])
        if len(captions) != num_images * cpi:
            raise ValueError(f"{split}: {len(captions)} captions for {num_images} images x {cpi} captions each")
        refs_path = self.path("REFS", split)
        if refs_path.exists():
            references = json.loads(refs_path.read_text())
        else:
            inverse = invert_word_map(self.load_word_map())
            texts = [" ".join(decode(c.tolist(), inverse)) for c in captions]
            references = [texts[i * cpi : (i + 1) * cpi] for i in range(num_images)]
        names_path = self.path("NAMES", split)
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
