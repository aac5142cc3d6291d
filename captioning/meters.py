"""Running averages for the progress bar and the CSV log."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch


class AverageMeter:
    """Last value, sum, count and average of a quantity (weighted by n)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.val, self.sum, self.count, self.avg = 0.0, 0.0, 0, 0.0

    def update(self, value: float, n: int = 1) -> None:
        self.val = float(value)
        self.sum += float(value) * n
        self.count += n
        self.avg = self.sum / self.count


@dataclass
class PassMeters:
    """What one pass over batches measured: the averages a result logs ({name: (value, weight)}), the seconds spent
    waiting for each batch and spent on each whole batch, and the captions stepped on."""

    logged: defaultdict[str, AverageMeter] = field(default_factory=lambda: defaultdict(AverageMeter))
    data_time: AverageMeter = field(default_factory=AverageMeter)
    batch_time: AverageMeter = field(default_factory=AverageMeter)
    captions: int = 0
    step_seconds: float = 0.0  # batch time without the data wait

    def update(
        self, logged: dict[str, tuple[float, int]], captions: int, data_seconds: float, step_seconds: float
    ) -> None:
        for name, (value, weight) in logged.items():
            self.logged[name].update(value, weight)
        self.data_time.update(data_seconds)
        self.batch_time.update(data_seconds + step_seconds)
        self.captions += captions
        self.step_seconds += step_seconds

    def averages(self, prefix: str) -> dict[str, float]:
        """{prefix_name: average} of the logged quantities, e.g. train_loss, val_top5."""
        return {f"{prefix}_{name}": meter.avg for name, meter in self.logged.items()}

    def captions_per_second(self) -> float:
        """Captions stepped on per second of step time (data loading excluded)."""
        return self.captions / max(self.step_seconds, 1e-9)

    def postfix(self) -> dict[str, str]:
        """The progress bar's running averages."""
        return {
            **{name: f"{meter.avg:.3g}" for name, meter in self.logged.items()},
            "batch": f"{self.batch_time.avg:.2f}s",
            "data": f"{self.data_time.avg:.3f}s",
        }


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """How many targets (n,) are among the k highest logits (n, V): a 0-d count, summed over batches for top-k %."""
    top = logits.topk(k, dim=1).indices  # (n, k)
    return (top == targets[:, None]).any(dim=1).sum()  # ()
