"""A linear map applied at every step of a recurrence, its weight gradient computed once for all steps (issue 13)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class StepLinear:
    """y = x W^T at every step of one forward pass. Left to autograd, dW is a skinny GEMM per step (K = that step's
    rows) into a full-size matrix, summed over steps; here each step records (x, dy) in backward and the weight
    gets dW = dY^T X once, one large GEMM over all steps. Same result, up to float summation order."""

    def __init__(self, weight: torch.Tensor):
        self.tape: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x, dy) of each step, filled during backward
        self.deferred = torch.is_grad_enabled() and weight.requires_grad
        self.weight = _WeightGradOnce.apply(weight, self.tape) if self.deferred else weight  # (out, in)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) -> (B, out)."""
        if self.deferred and torch.is_grad_enabled():
            return _LinearRecordingGrad.apply(x, self.weight, self.tape)  # (B, out)
        return F.linear(x, self.weight)  # (B, out)


class _WeightGradOnce(torch.autograd.Function):
    """Identity on the weight; its backward runs after every step's and turns the tape into dW = dY^T X."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.tape = tape
        return weight.view_as(weight)  # (out, in)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs, grad_outputs = zip(*ctx.tape)
        ctx.tape.clear()
        grad_weight = torch.cat(grad_outputs).t() @ torch.cat(inputs)  # (out, sum rows) @ (sum rows, in)
        return grad + grad_weight.to(grad.dtype), None  # grad is zero unless the weight was also used elsewhere


class _LinearRecordingGrad(torch.autograd.Function):
    """x W^T whose backward returns dx and leaves (x, dy) on the tape instead of a per-step dW."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape = tape
        return x @ weight.t()  # (B, out)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        ctx.tape.append((x, grad_output))
        return grad_output @ weight.to(grad_output.dtype), None, None  # (B, in)
