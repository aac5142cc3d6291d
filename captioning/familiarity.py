"""How familiar a photo looks to a model: how far its encoder features lie from the training photos', read as the
share of val photos that lie farther still. Stored beside the weights as familiarity.safetensors.

A photo is summed up by its mean-pooled annotation vectors, L2-normalised; its distance to the training photos is
the mean cosine distance to its NEIGHBOURS nearest among a stored subset of the training photos. Out-of-domain
photos sit in directions where the training photos hardly vary, so a Gaussian on the top principal components misses
them; the nearest-neighbour distance does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from captioning.checkpoint import atomic_write

FAMILIARITY_FILE = "familiarity.safetensors"
NEIGHBOURS = 5  # nearest training photos averaged into a photo's distance
MAX_REFERENCE = 1500  # training photos stored (a seeded random subset): 1500 x 1280 fp16 = 3.8 MB for lite2
UNFAMILIAR_BELOW = 5.0  # percent: below this the page says the photo looks unlike the training photos
UNFAMILIAR_NOTE = "This photo looks unlike the photos the model learnt from: expect a caption from its world."


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Annotation vectors (B, 196, C) -> their mean over the cells, L2-normalised (B, C) in fp32."""
    mean = features.float().mean(dim=1)  # (B, C)
    return torch.nn.functional.normalize(mean, dim=1)  # (B, C)


def neighbour_distance(photos: torch.Tensor, reference: torch.Tensor, neighbours: int = NEIGHBOURS) -> torch.Tensor:
    """Pooled photos (B, C) -> mean cosine distance to their `neighbours` nearest reference vectors (B,)."""
    similarity = photos @ reference.T  # (B, R)
    k = min(neighbours, reference.shape[0])
    nearest = similarity.topk(k, dim=1).values  # (B, k)
    return (1.0 - nearest).mean(dim=1)  # (B,)


def reference_indices(n_train: int, max_reference: int = MAX_REFERENCE, seed: int = 0) -> list[int]:
    """Which training photos the summary stores: all of them up to max_reference, else a seeded random subset."""
    if n_train <= max_reference:
        return list(range(n_train))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_train, generator=generator)[:max_reference].tolist())


def pool_batches(batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Batches of annotation vectors (b, 196, C) -> every photo's pooled vector (N, C)."""
    return torch.cat([pooled(features) for features in batches])  # (N, C)


def pool_rows(read: Callable[[list[int]], torch.Tensor], indices: list[int], batch_size: int = 32) -> torch.Tensor:
    """The pooled vectors (N, C) of the photos at `indices`, read in batches: read(indices) -> (b, 196, C)."""
    return pool_batches(read(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size))


@dataclass(frozen=True)
class Familiarity:
    """A model's summary of its training photos: a subset of their pooled features and the val photos' distances to
    it, sorted, which turn a photo's distance into a percentile."""

    reference: torch.Tensor  # (R, C) fp32 pooled, L2-normalised features of training photos (stored in fp16)
    val_distances: torch.Tensor  # (V,) fp32 the val photos' distances to `reference`, ascending
    neighbours: int = NEIGHBOURS

    @classmethod
    def build(cls, reference: torch.Tensor, val: torch.Tensor, neighbours: int = NEIGHBOURS) -> Familiarity:
        """From pooled training vectors (R, C) and pooled val vectors (V, C)."""
        reference = reference.half().float()  # (R, C) as stored
        distances = neighbour_distance(val.float(), reference, neighbours).sort().values  # (V,)
        return cls(reference, distances, neighbours)

    def percent(self, features: torch.Tensor) -> list[float]:
        """Per photo of annotation vectors (B, 196, C): the share of val photos (in percent) farther from the
        training photos than it; 100 = as typical as they come, 0 = farther than every val photo."""
        distance = neighbour_distance(pooled(features.cpu()), self.reference, self.neighbours)  # (B,)
        closer_or_equal = torch.searchsorted(self.val_distances, distance, right=True)  # (B,)
        farther = len(self.val_distances) - closer_or_equal  # (B,)
        return [round(100.0 * int(n) / len(self.val_distances), 1) for n in farther]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FAMILIARITY_FILE
        tensors = {"reference": self.reference.half().contiguous(), "val_distances": self.val_distances.contiguous()}
        metadata = {"neighbours": str(self.neighbours)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Familiarity | None:
        """The summary stored in a model directory, or None when it holds none."""
        path = Path(directory) / FAMILIARITY_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as stored:
            neighbours = int((stored.metadata() or {}).get("neighbours", NEIGHBOURS))
            reference, val_distances = stored.get_tensor("reference"), stored.get_tensor("val_distances")
        return cls(reference.float(), val_distances.float(), neighbours)


@torch.no_grad()
def summarise(
    read_train: Callable[[list[int]], torch.Tensor],
    n_train: int,
    read_val: Callable[[list[int]], torch.Tensor],
    n_val: int,
    seed: int = 0,
    max_reference: int = MAX_REFERENCE,
) -> Familiarity | None:
    """A model's summary from its train and val photos, each read as read(indices) -> annotation vectors
    (b, 196, C): the pooled vectors of a seeded subset of the training photos (reference_indices) and every val
    photo's distance to them; None without train or val photos."""
    if n_train == 0 or n_val == 0:
        return None
    reference = pool_rows(read_train, reference_indices(n_train, max_reference, seed))  # (R, C)
    return Familiarity.build(reference, pool_rows(read_val, list(range(n_val))))  # val: (V, C)


def is_unfamiliar(percent: float | None) -> bool:
    """Whether the page warns about a photo of this familiarity (None: the model has no summary)."""
    return percent is not None and percent < UNFAMILIAR_BELOW
