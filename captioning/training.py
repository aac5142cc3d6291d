"""Training loop: decoder (optionally encoder) on prepared data, validated by real decoding BLEU-4, resumable."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from captioning.checkpoint import BEST_DIR, LAST_DIR, TRAIN_CONFIG_FILE, TRAIN_STATE_FILE, atomic_write, read_model_dir
from captioning.cider import CiderD
from captioning.config import ENCODER_FLAGS, FINETUNED_STAGES, DecoderConfig, EncoderSpec, known_keys_only, option
from captioning.data import DATA_DIR, ImageCaptions, PreparedData, collate_images
from captioning.decoder import SOFT_CONTEXT_PROBABILITY
from captioning.encoder import resolve_spec
from captioning.familiarity import summarise
from captioning.features import load_cached_features
from captioning.loss import (
    ATTENTION_PENALTY,
    HARD_ENTROPY_WEIGHT,
    HARD_REINFORCE_WEIGHT,
    BatchLoss,
    HardAttentionLoss,
    TeacherForcedLoss,
)
from captioning.meters import PassMeters
from captioning.metrics import bleu4, cider, ngram_matches
from captioning.model import Captioner, create_captioner
from captioning.preprocess import STORED_IMAGE_SIZE, Preprocessing
from captioning.scst import SCST_BASELINE, SCST_MAX_LEN, SCST_SAMPLES, SelfCriticalLoss

SMALL_VAL_IMAGES = 100  # with fewer val images, --select-on auto selects on CIDEr: BLEU-4 is too sparse there
SELECT_ON = ("auto", "bleu4", "cider")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as train_config.json in the run directory."""

    # where the data is: flags shared with the other tools (captioning.cli.args), so no help text here
    data_dir: str = DATA_DIR
    data_name: str = ""  # required unless --resume
    output_dir: str = option("runs/default", "run directory: best/, last/, log.csv, training_curves.png")
    cache_dir: str = ""  # feature cache (a shared flag); empty: encode the HDF5 pixels every epoch
    encoder: EncoderSpec = field(default_factory=EncoderSpec)  # its flags are shared: cli.args.add_encoder_flags
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # its fields are flags (--embed-dim, --attention)
    hard_reinforce_weight: float = option(
        HARD_REINFORCE_WEIGHT, "hard attention: weight of the REINFORCE term (lambda_r)"
    )
    hard_entropy_weight: float = option(
        HARD_ENTROPY_WEIGHT, "hard attention: weight of the entropy bonus on alpha (lambda_e)"
    )
    hard_soft_probability: float = option(
        SOFT_CONTEXT_PROBABILITY,
        "hard attention: chance that a training step uses the expected (soft) context instead of a sampled location",
    )
    finetune_encoder: bool = option(
        False,
        "also train the encoder's last --finetune-stages stages: from the prefix cache of --cache-dir if given "
        "(only those stages run), else from pixels",
    )
    finetune_stages: int = option(
        FINETUNED_STAGES, "fine-tuning: how many of the trunk's last stages train (1-3), head included"
    )
    finetune_norm_statistics: bool = option(
        True,
        "fine-tuning: the tail's BatchNorm layers update their running statistics (off: they keep the pretrained "
        "ones; their scale and shift still train)",
    )
    fine_tune_embeddings: bool = option(True, "train the word embeddings")
    epochs: int = option(30, "epochs to train (a resumed run counts the ones already done)")
    batch_size: int = option(32, "captions per step and per process (an image's captions travel together)")
    decoder_lr: float = option(4e-4, "Adam learning rate of the decoder")
    encoder_lr: float = option(1e-4, "Adam learning rate of the fine-tuned encoder stages")
    grad_clip: float = option(5.0, "clip the gradient norm to this, 0 = off")
    attention_penalty: float = option(ATTENTION_PENALTY, "lambda of the doubly stochastic attention penalty")
    lr_decay_factor: float = option(0.8, "multiply the learning rates by this ...")
    lr_decay_patience: int = option(8, "... after every this many epochs without a better val score (--select-on)")
    early_stop_patience: int = option(20, "stop after this many epochs without a better val score (--select-on)")
    val_beam_size: int = option(1, "beam width of validation decoding, 1 = greedy")
    val_max_images: int = option(0, "validate on the first N val images, 0 = all")
    max_steps_per_epoch: int = option(0, "stop each epoch after N steps, 0 = the whole epoch (smoke tests)")
    bf16: bool = option(False, "CPU bf16 autocast for the decoder")
    amp: bool = option(True, "CUDA bf16 autocast when on a GPU")
    num_workers: int = option(0, "data-loader processes")
    threads: int = 0  # torch CPU threads, 0 = torch's default (a shared flag)
    seed: int = option(28, "random seed (data order, initialisation, dropout)")
    device: str = option("", "cpu | cuda | cuda:N; empty: cuda if available, else cpu")
    init_from: str = option(
        "",
        "model directory whose weights start this run (e.g. the cross-entropy model that "
        "--scst fine-tunes); empty: fresh weights",
    )
    scst: bool = option(
        False,
        "self-critical training: sampled captions rewarded by CIDEr-D, instead of "
        "cross-entropy (start it with --init-from)",
    )
    scst_samples: int = option(SCST_SAMPLES, "self-critical: captions sampled per image")
    scst_baseline: str = option(
        SCST_BASELINE,
        "self-critical baseline: mean (of the image's other samples) | greedy (the image's greedy caption)",
    )
    scst_max_len: int = option(SCST_MAX_LEN, "self-critical: longest sampled caption, in words with <end>")
    scst_dropout: bool = option(
        False, "self-critical: keep dropout on while sampling (off: the policy trained is the one that decodes)"
    )
    keep_epochs: bool = option(
        False,
        "also keep each epoch's model in epoch_N/ (for checkpoint averaging: "
        "python -m captioning.cli.checkpoint RUN/epoch_6 RUN/epoch_8 OUT)",
    )
    select_on: str = option(
        "auto",
        "val metric that picks best/ and drives lr decay and early stop: bleu4 | cider | auto (BLEU-4, or CIDEr "
        f"when val has fewer than {SMALL_VAL_IMAGES} images or BLEU-4 finds no 4-gram match at the first epoch)",
    )

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a parsed train_config.json (what train() writes). Older files still load: keys they lack
        keep their defaults, and an encoder spec saved flat (backbone, encoder_weights, ...) is nested; other
        unknown keys are an error."""
        data = dict(data)
        flat = {field: data.pop(key) for key, field in ENCODER_FLAGS.items() if key in data}
        data = known_keys_only(cls, data, TRAIN_CONFIG_FILE)
        encoder = EncoderSpec.from_dict(data.pop("encoder", {})).with_changes(**flat)
        decoder = DecoderConfig.from_dict(data.pop("decoder", {}))
        return cls(**data, encoder=encoder, decoder=decoder)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def build_captioner(config: TrainConfig, word_map: dict[str, int], image_size: int = STORED_IMAGE_SIZE) -> Captioner:
    """A fresh model for this run's data (image_size: side of its stored square images) and hyperparameters."""
    captioner = create_captioner(
        config.encoder,
        word_map,
        image_size,
        config.decoder,
        finetuned=config.finetune_encoder,
        finetuned_stages=config.finetune_stages,
    )
    captioner.encoder.tail_norm_statistics = config.finetune_norm_statistics
    captioner.decoder.fine_tune_embeddings(config.fine_tune_embeddings)
    return captioner


def make_dataset(
    config: TrainConfig, split: str, from_features: bool, prep: Preprocessing | None = None
) -> ImageCaptions:
    """One split with cached features (checked to come from the run's encoder spec and preprocessing, and to
    belong to the same images; a fine-tuning run reads its prefix cache) or with its HDF5 pixels."""
    data = PreparedData(config.data_dir, config.data_name)
    captions = data.load_split(split)
    if not from_features:
        return ImageCaptions(captions, images_path=data.images_path(split))
    stages = config.finetune_stages if config.finetune_encoder else 0
    features, names = load_cached_features(config.cache_dir, split, config.data_name, config.encoder, prep, stages)
    if names != captions.names:
        raise ValueError(f"feature cache {config.cache_dir} was made for other {split} images than {config.data_dir}")
    return ImageCaptions(captions, features=features)


def make_loader(dataset: ImageCaptions, config: TrainConfig, epoch: int, shuffle: bool) -> DataLoader:
    """Batches of whole images (all their captions); shuffled by seed+epoch so a resumed run sees the same order."""
    images_per_batch = max(1, math.ceil(config.batch_size / dataset.split.captions_per_image))
    if dist.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=config.seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=images_per_batch,
        sampler=sampler,
        collate_fn=collate_images,
        num_workers=config.num_workers,
        persistent_workers=False,
    )


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast on CPU when asked, on CUDA when amp is on; a no-op otherwise."""
    enabled = (device.type == "cpu" and config.bf16) or (device.type == "cuda" and config.amp)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def make_optimizer(captioner: Captioner, config: TrainConfig) -> torch.optim.Adam:
    """Adam with one learning rate for the decoder and another for the fine-tuned encoder stages."""
    groups = [{"params": [p for p in captioner.decoder.parameters() if p.requires_grad], "lr": config.decoder_lr}]
    encoder_params = [p for p in captioner.encoder.parameters() if p.requires_grad]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": config.encoder_lr})
    return torch.optim.Adam(groups, fused=True)  # one kernel per parameter update instead of about ten


def to_device(batch: tuple[torch.Tensor, ...], device) -> tuple[torch.Tensor, ...]:
    """(inputs, captions, lengths, image_index, indices) of a loader batch, on the training device."""
    return tuple(t.to(device) for t in batch)


def metered_pass(batches: Iterable, run_batch: Callable, bar: tqdm | None = None) -> PassMeters:
    """The loop of the train and val passes: run_batch(batch) on every batch, its result's log_values() into the
    meters (weighted as the result says), plus the time spent waiting for data and the time of each step."""
    meters = PassMeters()
    end = time.perf_counter()
    for batch in batches:
        loaded = time.perf_counter()
        logged = run_batch(batch).log_values()
        stepped = time.perf_counter()  # after log_values(): the step's results are on the host
        meters.update(logged, captions=len(batch[1]), data_seconds=loaded - end, step_seconds=stepped - loaded)
        end = stepped
        if bar is not None:
            bar.set_postfix(meters.postfix())
            bar.update()
    return meters


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, config: TrainConfig, device, epoch: int) -> dict:
    """One pass over the training images with the objective `model` (a batch -> BatchLoss module, maybe in DDP);
    returns its averages (train_loss per token, train_top5), timings and captions trained per second of step time
    (data loading excluded)."""

    def train_step(batch):  # -> the objective's result: .loss and .log_values()
        with autocast(config, device):
            result = model(*to_device(batch, device))
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip, foreach=True
            )
        optimizer.step()
        return result

    model.train()
    total = len(loader) if not config.max_steps_per_epoch else min(len(loader), config.max_steps_per_epoch)
    with tqdm(total=total, desc=f"epoch {epoch + 1}", disable=not is_main_process(), unit="batch") as bar:
        meters = metered_pass(itertools.islice(loader, total), train_step, bar)
    return {
        **meters.averages("train"),
        "batch_time": meters.batch_time.avg,
        "data_time": meters.data_time.avg,
        "captions_per_s": meters.captions_per_second(),
    }


@torch.no_grad()
def validate(objective: TeacherForcedLoss, dataset: ImageCaptions, config: TrainConfig, device) -> dict:
    """The objective's averages on the validation captions (val_loss, val_top5), and BLEU-4 and CIDEr of real
    decoding on unique images (fractions, as the metrics return them)."""
    captioner = objective.captioner
    captioner.eval()
    references, hypotheses = {}, {}
    limit = config.val_max_images or len(dataset)

    def validation_step(batch) -> BatchLoss:
        inputs, captions, lengths, image_index, _ = to_device(batch, device)
        with autocast(config, device):
            features = objective.to_features(inputs)  # (N, 196, C) encoded once for the loss and the decoding
            result = objective.loss_on_features(features, captions, lengths, image_index)
            found = captioner.caption_features(features, beam_size=config.val_beam_size)
        for index, caption in zip(batch[4].tolist(), found):  # batch[4]: (N,) dataset index of each image
            references[index] = dataset.split.references[index]
            hypotheses[index] = [caption.text]
        return result

    batches = itertools.takewhile(lambda batch: int(batch[4][0]) < limit, make_loader(dataset, config, 0, False))
    meters = metered_pass(batches, validation_step)
    return {
        **meters.averages("val"),
        "val_bleu4": bleu4(references, hypotheses),
        "val_cider": cider(references, hypotheses),
        "val_4gram_matches": ngram_matches(references, hypotheses),
    }


def selection_metric(select_on: str, val_images: int, first: dict) -> tuple[str, str]:
    """The metric that selects best/ and drives lr decay and early stop ("bleu4" | "cider"), and why, in words:
    --select-on as given, or for auto CIDEr on a small val split or a BLEU-4 without a 4-gram match in the first
    validation (`first`, its row), else BLEU-4. Chosen once per run, so the best score stays comparable."""
    if select_on != "auto":
        return select_on, f"--select-on {select_on}"
    if val_images < SMALL_VAL_IMAGES:
        return "cider", f"val has {val_images} images, fewer than {SMALL_VAL_IMAGES}: too few for BLEU-4"
    if first.get("val_4gram_matches", 1) == 0:
        return "cider", "val BLEU-4 found no 4-gram match: it is 0 up to rounding, not a signal"
    return "bleu4", f"--select-on auto: {val_images} val images with 4-gram matches"


def summarise_photos(train_set: ImageCaptions, val_set: ImageCaptions, to_features, device, seed: int):
    """The familiarity summary saved beside the model (captioning.familiarity.summarise) from this run's photos, as
    the decoder sees them (cached features, or pixels through the frozen encoder); None without val photos."""

    def reader(dataset: ImageCaptions):
        def read(indices: list[int]) -> torch.Tensor:
            images = torch.stack([dataset.image(i) for i in indices]).to(device)  # (b, 196, C) or (b, 3, S, S)
            return to_features(images).cpu()  # (b, 196, C)

        return read

    return summarise(reader(train_set), len(train_set), reader(val_set), len(val_set), seed)


def objective_buffers(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The objective's own buffers (e.g. hard attention's baseline), not the model's: what resume must restore."""
    return {name: buffer for name, buffer in objective.named_buffers() if not name.startswith("captioner.")}


def save_training_state(
    path: Path, captioner: Captioner, optimizer, state: dict, objective: nn.Module | None = None
) -> None:
    """One file (tensors and plain values only, loadable with weights_only=True), written atomically."""
    payload = {
        "model": captioner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "objective": objective_buffers(objective) if objective is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def load_training_state(path: Path, captioner: Captioner, optimizer, objective: nn.Module | None = None) -> dict:
    """Restore model, optimiser, the objective's buffers and RNG from save_training_state's file; returns epoch,
    best score, history."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    captioner.load_state_dict(payload.pop("model"))
    optimizer.load_state_dict(payload.pop("optimizer"))
    buffers = objective_buffers(objective) if objective is not None else {}
    for name, value in payload.pop("objective").items():
        buffers[name].copy_(value)
    torch.set_rng_state(payload.pop("torch_rng"))
    cuda_rng = payload.pop("cuda_rng")
    if cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return payload


SCORES = {"val_bleu4": "val BLEU-4", "val_cider": "val CIDEr"}  # printed x100 with one decimal, as the README


def format_row(row: dict) -> str:
    """One epoch's log row as printed: name=value, the val scores as README-style "val BLEU-4 44.1"."""
    return ", ".join(
        f"{SCORES[name]} {100 * value:.1f}" if name in SCORES else f"{name}={value:.4g}"
        for name, value in row.items()
        if name != "epoch"
    )


def write_log(run_dir: Path, history: list[dict]) -> None:
    """The per-epoch CSV log, rewritten whole (atomically) from the history kept in the training state; values as
    the history holds them: val_bleu4 and val_cider are fractions (x100 for the scores printed), top-5 in %."""
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(run_dir / "log.csv", lambda p: p.write_text(buffer.getvalue()))


CURVE_PANELS = (  # (title, [(log column, legend)]); a panel whose columns a run does not log is left out
    ("cross-entropy per token", [("train_loss", "train"), ("val_loss", "val")]),
    ("top-5 accuracy (%)", [("train_top5", "train"), ("val_top5", "val")]),
    ("self-critical mean reward (CIDEr-D)", [("train_reward", "train samples")]),
    ("val BLEU-4 (decoded, x100)", [("val_bleu4", "BLEU-4")]),
    ("val CIDEr (decoded)", [("val_cider", "CIDEr")]),
)


def plot_curves(run_dir: Path, history: list[dict]) -> Path:
    """training_curves.png: one panel per logged quantity (loss, top-5, SCST reward, val BLEU-4 and CIDEr), drawn
    on an Agg canvas (no pyplot state)."""
    epochs = [row["epoch"] for row in history]
    panels = [
        (title, [(name, label) for name, label in series if name in history[0]]) for title, series in CURVE_PANELS
    ]
    panels = [(title, series) for title, series in panels if series]
    figure = Figure(figsize=(4.4 * len(panels), 3.6))
    FigureCanvasAgg(figure)  # renders without any GUI backend or global matplotlib setting
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (title, series) in zip(axes, panels):
        for name, label in series:
            scale = 100 if name == "val_bleu4" else 1
            axis.plot(epochs, [scale * r[name] for r in history], "o-", label=label)
        axis.set_title(title)
        if len(series) > 1:
            axis.legend()
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = run_dir / "training_curves.png"
    atomic_write(path, lambda p: figure.savefig(p, dpi=110, format="png"))
    return path


def load_weights(captioner: Captioner, directory: str | Path) -> None:
    """Start from a saved model's weights (decoder, plus fine-tuned encoder parts), checked name by name."""
    start_config, _, state = read_model_dir(directory)
    # a frozen model's decoder can start a fine-tuning run: its tail then starts from the trunk's own weights
    captioner.load_checkpoint_state(state, str(directory), decoder_only=not start_config.encoder_finetuned)
    trained, training = start_config.decoder.attention, captioner.config.decoder.attention
    if trained != training:  # same tensors either way, so allowed, but say so
        print(
            f"note: {directory} was trained with {trained} attention; this run trains it as {training} "
            f"(--attention {training})"
        )


def make_objective(captioner: Captioner, to_features, train_set: ImageCaptions, config: TrainConfig) -> nn.Module:
    """What training minimises: self-critical (--scst), hard attention's REINFORCE + cross-entropy, or plain
    teacher forcing."""
    if config.scst:
        return make_self_critical(captioner, to_features, train_set, config)
    if config.decoder.attention == "hard":
        return HardAttentionLoss(
            captioner,
            to_features,
            config.attention_penalty,
            config.hard_reinforce_weight,
            config.hard_entropy_weight,
            config.hard_soft_probability,
        )
    return TeacherForcedLoss(captioner, to_features, config.attention_penalty)


def make_self_critical(
    captioner: Captioner, to_features, train_set: ImageCaptions, config: TrainConfig
) -> SelfCriticalLoss:
    """The SCST objective; CIDEr-D document frequencies come from the TRAIN references, computed once per run."""
    references = train_set.split.references
    return SelfCriticalLoss(
        captioner,
        to_features,
        CiderD(references),
        references,
        config.scst_samples,
        config.scst_baseline,
        config.scst_max_len,
        config.scst_dropout,
    )


def setup_device(config: TrainConfig) -> torch.device:
    """Join the process group under torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and config.device != "cpu"
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(config.device or "cpu")


def existing_run(run_dir: str | Path) -> str | None:
    """What a run directory already holds, in words ("3 epochs logged"), or None when no run was started there."""
    run_dir = Path(run_dir)
    if not (run_dir / TRAIN_CONFIG_FILE).exists() and not (run_dir / LAST_DIR).exists():
        return None
    logged = (run_dir / "log.csv").read_text().count("\n") - 1 if (run_dir / "log.csv").exists() else 0
    return f"{max(logged, 0)} epochs logged"


def train(config: TrainConfig, resume: str | Path | None = None) -> dict:
    """Run (or continue) training; returns the final state (epoch, best BLEU-4, history). The encoder spec may
    leave weights and input size to the trunk's defaults: the run fills them in and saves the resolved spec."""
    if config.select_on not in SELECT_ON:
        raise ValueError(f"--select-on must be one of {', '.join(SELECT_ON)}, not {config.select_on!r}")
    config = dataclasses.replace(config, encoder=resolve_spec(config.encoder))  # the trunk's defaults filled in
    device = setup_device(config)
    torch.manual_seed(config.seed)
    run_dir = Path(config.output_dir)
    data = PreparedData(config.data_dir, config.data_name)
    captioner = build_captioner(config, data.load_word_map(), data.image_size("TRAIN")).to(device)
    from_features = bool(config.cache_dir)  # features, or with --finetune-encoder the prefixes of its tail
    train_set = make_dataset(config, "TRAIN", from_features, captioner.config.preprocessing)
    val_set = make_dataset(config, "VAL", from_features, captioner.config.preprocessing)
    if config.init_from:
        load_weights(captioner, config.init_from)
    to_features = captioner.batch_encoder(cached=from_features, prefix=from_features and config.finetune_encoder)
    objective = TeacherForcedLoss(captioner, to_features, config.attention_penalty)  # also validation's loss
    trained = make_objective(captioner, to_features, train_set, config)
    model = DistributedDataParallel(trained) if dist.is_initialized() else trained
    optimizer = make_optimizer(captioner, config)
    if is_main_process() and not config.finetune_encoder:  # a fine-tuned encoder's features change with training
        captioner.eval()  # the encoder as it captions (BatchNorm statistics of a pixel-trained encoder)
        captioner.familiarity = summarise_photos(train_set, val_set, to_features, device, config.seed)
    state = {"epoch": 0, "best_bleu4": -1.0, "best_score": -1.0, "epochs_since_improvement": 0, "history": []}
    if resume:
        loaded = load_training_state(Path(resume) / LAST_DIR / TRAIN_STATE_FILE, captioner, optimizer, trained)
        state.update(loaded)
        if state["history"] and "select_on" not in state:  # a run saved before the metric was recorded
            state["select_on"] = "bleu4" if config.select_on == "auto" else config.select_on
        if is_main_process():
            print(
                f"resumed from {resume} after epoch {state['epoch']} (best val BLEU-4 {100 * state['best_bleu4']:.1f})"
            )
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        config_json = json.dumps(dataclasses.asdict(config), indent=2)
        atomic_write(run_dir / TRAIN_CONFIG_FILE, lambda p: p.write_text(config_json))

    for epoch in range(state["epoch"], config.epochs):
        if state["epochs_since_improvement"] >= config.early_stop_patience:
            if is_main_process():
                metric, since = SCORES["val_" + state["select_on"]], state["epochs_since_improvement"]
                print(f"early stop: no {metric} gain for {since} epochs")
            break
        since = state["epochs_since_improvement"]
        if since > 0 and since % config.lr_decay_patience == 0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay_factor
        started = time.perf_counter()
        row = {
            "epoch": epoch + 1,
            **train_one_epoch(model, make_loader(train_set, config, epoch, True), optimizer, config, device, epoch),
        }
        row.update(validate(objective, val_set, config, device))
        row.update(lr=optimizer.param_groups[0]["lr"], epoch_time=time.perf_counter() - started)
        if "select_on" not in state:  # chosen at the first validation, kept through resumes
            val_images = min(len(val_set), config.val_max_images or len(val_set))
            state["select_on"], why = selection_metric(config.select_on, val_images, row)
            if is_main_process():
                print(f"selecting on {SCORES['val_' + state['select_on']]}: {why}")
        score = row[f"val_{state['select_on']}"]
        improved = score > state["best_score"]
        state["best_score"] = max(state["best_score"], score)
        state["best_bleu4"] = max(state["best_bleu4"], row["val_bleu4"])
        state["epochs_since_improvement"] = 0 if improved else state["epochs_since_improvement"] + 1
        state["epoch"] = epoch + 1
        state["history"] = state["history"] + [row]
        if is_main_process():
            print(f"epoch {epoch + 1}: {format_row(row)}")
            captioner.save(run_dir / LAST_DIR)
            if config.keep_epochs:
                captioner.save(run_dir / f"epoch_{epoch + 1}")
            if improved:
                captioner.save(run_dir / BEST_DIR)
            save_training_state(run_dir / LAST_DIR / TRAIN_STATE_FILE, captioner, optimizer, state, trained)
            write_log(run_dir, state["history"])
            plot_curves(run_dir, state["history"])
    if dist.is_initialized():
        dist.barrier()
    return state
