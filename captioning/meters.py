"""Running averages for the progress bar and the CSV log."""

from __future__ import annotations

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


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """How many targets (n,) are among the k highest logits (n, V): a 0-d count, summed over batches for top-k %."""
    top = logits.topk(k, dim=1).indices  # (n, k)
    return (top == targets[:, None]).any(dim=1).sum()  # ()
