"""Running averages for the progress bar and the CSV log."""

from __future__ import annotations


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


def topk_accuracy(logits, targets, k: int = 5) -> float:
    """Share of targets (n,) among the k highest logits (n, V), in percent."""
    top = logits.topk(k, dim=1).indices  # (n, k)
    return float((top == targets[:, None]).any(dim=1).float().mean() * 100.0)
