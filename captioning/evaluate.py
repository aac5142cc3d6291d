"""Evaluate a model: caption each image of a split once (batched beam search), score with pycocoevalcap."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import h5py
import torch
from tqdm import tqdm

from captioning.data import PreparedData
from captioning.metrics import broken_ending_share, coco_metrics
from captioning.model import Caption, Captioner
from captioning.search import DEFAULT_LENGTH_PENALTY


def caption_all(
    model: Captioner,
    count: int,
    load_batch: Callable[[int, int], torch.Tensor],
    batch_size: int,
    beam_size: int,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    to_features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[Caption]:
    """Caption images [0, count) in batches; load_batch gives what to_features (default: the model's pixel
    encoder, Captioner.batch_encoder) turns into features: uint8 pixels (b, 3, S, S) or cached features."""
    to_features = to_features or model.features_from_pixels
    captions = []
    for start in tqdm(range(0, count, batch_size), desc=f"captioning (beam {beam_size})", unit="batch"):
        features = to_features(load_batch(start, min(start + batch_size, count)))  # (b, 196, C)
        captions.extend(model.caption_features(features, beam_size, length_penalty))
    return captions


def prepared_split(data_dir: str, data_name: str, split: str, image_size: int):
    """(names, references, pixel loader) of a split written by prepare_data.py."""
    data = PreparedData(data_dir, data_name)
    captions = data.load_split(split)
    images = h5py.File(data.images_path(split), "r")["images"]
    if images.shape[-1] != image_size:
        raise ValueError(f"prepared images are {images.shape[-1]} px, the model expects {image_size} px")
    return captions.names, captions.references, lambda a, b: torch.from_numpy(images[a:b])


def evaluate(
    model: Captioner,
    names: Sequence[str],
    references: Sequence[list[str]],
    load_batch,
    batch_size: int,
    beam_size: int,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    from_features: bool = False,
    meteor: bool = True,
):
    """Metrics dict (with image count and beam size) and the generated captions by image name."""
    to_features = model.batch_encoder(cached=from_features)  # chosen once for the whole split
    captions = caption_all(model, len(names), load_batch, batch_size, beam_size, length_penalty, to_features)
    hypotheses = {i: [c.text] for i, c in enumerate(captions)}
    metrics = coco_metrics({i: list(r) for i, r in enumerate(references)}, hypotheses, meteor=meteor)
    metrics.update(
        images=len(names),
        beam_size=beam_size,
        length_penalty=length_penalty,
        function_word_endings=broken_ending_share([c.text for c in captions]),
    )
    return metrics, {name: c.text for name, c in zip(names, captions)}


RUN_FACTS = ("images", "beam_size", "length_penalty", "function_word_endings")  # what evaluate() adds to the scores


def caption_scores(metrics: dict) -> dict[str, float]:
    """The caption metrics alone (what coco_metrics returns: BLEU-1..4, METEOR, ROUGE-L, CIDEr), as fractions."""
    return {name: value for name, value in metrics.items() if name not in RUN_FACTS}
