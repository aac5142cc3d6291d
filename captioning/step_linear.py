"""A linear map applied at every step of a recurrence, its weight gradient computed once for all steps."""

from __future__ import annotations

import torch


def weight_times(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x W^T for a few rows x (B, in) and a large weight (out, in), computed as (W x^T)^T: with the weight as the
    left operand MKL picks a faster kernel for few rows (B <= 32; timings in docs/benchmarks.md)."""
    return (weight @ x.t()).t().contiguous()  # (B, out)


class StepLinear:
    """y = x W^T at every step of one forward pass. Left to autograd, dW is a skinny GEMM per step (K = that step's
    rows) into a full-size matrix, summed over steps; here each step records (x, dy) in backward and the weight
    gets dW = dY^T X once, one large GEMM over all steps. Same result, up to float summation order. Both per-step
    products (y and dx) put a contiguous weight on the left (weight_times)."""

    def __init__(self, weight: torch.Tensor):
        self.tape: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x, dy) of each step, filled during backward
        self.deferred = torch.is_grad_enabled() and weight.requires_grad
        self.weight = _WeightGradOnce.apply(weight, self.tape) if self.deferred else weight  # (out, in)
        self.transposed = weight.detach().t().contiguous() if self.deferred else None  # (in, out) for dx

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) -> (B, out)."""
        if self.deferred and torch.is_grad_enabled():
            return _LinearRecordingGrad.apply(x, self.weight, self.transposed, self.tape)  # (B, out)
        return weight_times(self.weight, x)  # (B, out)


class _WeightGradOnce(torch.autograd.Function):
    """Identity on the weight; its backward runs after every step's and turns the tape into dW = dY^T X."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.tape = tape
        ctx.dtype = weight.dtype
        ctx.set_materialize_grads(False)  # no full-size zero gradient to add when only the steps used the weight
        return weight.view_as(weight)  # (out, in)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs, grad_outputs = zip(*ctx.tape)
        ctx.tape.clear()
        grad_weight = (torch.cat(grad_outputs).t() @ torch.cat(inputs)).to(ctx.dtype)  # (out, rows) @ (rows, in)
        if grad is not None:  # the weight was also used outside the steps
            grad_weight = grad_weight + grad
        return grad_weight, None


class _LinearRecordingGrad(torch.autograd.Function):
    """x W^T whose backward returns dx and leaves (x, dy) on the tape instead of a per-step dW."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, transposed: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.save_for_backward(x, transposed)
        ctx.tape = tape
        return weight_times(weight, x)  # (B, out)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, transposed = ctx.saved_tensors
        ctx.tape.append((x, grad_output))
        return weight_times(transposed.to(grad_output.dtype), grad_output), None, None, None  # (B, in)
