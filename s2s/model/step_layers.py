"""Layers of the step-by-step decoder: one matrix per layer over [input, hidden] (or the GRU's
two, joined per call), and a linear map whose weight gradient is deferred to one large matmul."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from s2s.model.cells import Cell


class _StepLinear(torch.autograd.Function):
    """``inputs @ weight.T`` for one decoder step, with the weight gradient deferred.

    Per step, backward returns only the input gradient and records (inputs, grad). The first
    step's backward runs last (every later step depends on it), so it computes the weight
    gradient of all steps as one large matmul instead of T small ones plus T additions.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, record: list, first: bool) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.record, ctx.first = record, first
        return inputs @ weight.t().to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None, None, None]:
        inputs, weight = ctx.saved_tensors
        ctx.record.append((inputs, grad))
        grad_weight = None
        if ctx.first:
            dtype = grad.dtype
            all_grads = torch.cat([g.to(dtype) for _, g in ctx.record])  # (T B, out)
            all_inputs = torch.cat([x.to(dtype) for x, _ in ctx.record])  # (T B, in)
            grad_weight = (all_grads.t() @ all_inputs).to(weight.dtype)
            ctx.record.clear()
        return grad @ weight.to(grad.dtype), grad_weight, None, None


def step_linear(inputs: Tensor, weight: Tensor, bias: Tensor | None, record: list | None,
                 step: int) -> Tensor:
    """A decoder step's linear map; ``record`` is None when no gradient is needed."""
    if record is None:
        return nn.functional.linear(inputs, weight, bias)
    output = _StepLinear.apply(inputs, weight, record, step == 0)
    return output if bias is None else output + bias


# search's single-step layer: inputs (B, in + H) -> all gates' pre-activations (B, G H)
StepLayer = Callable[[Tensor], Tensor]


class JoinedLayer(NamedTuple):
    """A search step's layer over [input, hidden]: every gate in one matmul, no autograd."""

    weight: Tensor  # (G H, in + H)
    bias: Tensor

    def __call__(self, inputs: Tensor) -> Tensor:
        return torch.addmm(self.bias, inputs, self.weight.t())


class SplitStepLayer(nn.Module):
    """A step-by-step decoder layer whose input and hidden matrices cannot simply be joined
    (the GRU's): kept apart as parameters, joined per forward by ``Cell.join``."""

    def __init__(self, input_size: int, hidden_size: int, width: int, input_bias: bool) -> None:
        super().__init__()
        self.input = nn.Linear(input_size, width * hidden_size, bias=input_bias)
        self.hidden = nn.Linear(hidden_size, width * hidden_size)


def recurrent_layer(cell: Cell, input_size: int, size: int, bias: bool) -> nn.Module:
    """Layer of the step-by-step decoder over [input, hidden]."""
    if cell.input_width == cell.joined_width:  # one matrix over [input, hidden]
        return nn.Linear(input_size + size, cell.joined_width * size, bias=bias)
    return SplitStepLayer(input_size, size, cell.input_width, bias)


def joined_step_layer(cell: Cell, layer: nn.Module) -> tuple[Tensor, Tensor | None]:
    """A step-by-step layer's (weight, bias) over [input, hidden], as ``Cell.step`` takes it."""
    if isinstance(layer, SplitStepLayer):
        return cell.join(layer.input.weight, layer.input.bias, layer.hidden.weight,
                         layer.hidden.bias)
    return layer.weight, layer.bias
