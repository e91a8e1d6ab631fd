"""The recurrent cells: LSTM (the default), GRU, and the plain tanh RNN of the article.

Every decoder path computes a layer's step as one matmul over ``[input, hidden]`` with a
*joined* weight, then lets the cell turn those pre-activations into the new state:

- ``lstm``: gates i, f, o, g (4H columns); hidden and cell state.
- ``gru``: r and z summed over input and hidden, then the candidate's input part and hidden
  part kept apart, since the reset gate multiplies only the hidden part (4H columns).
- ``rnn``: ``h = tanh(W x + U h + b)`` (H columns).

Only the LSTM has a cell state; the other cells carry ``None`` in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor, nn

Tanh = Callable[[Tensor], Tensor]
# (joined pre-activations, hidden, cell, tanh) -> hidden, cell
CellStep = Callable[[Tensor, Tensor, Tensor | None, Tanh], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class Cell:
    """What the model needs to know of one kind of recurrent cell."""

    name: str
    module: type[nn.RNNBase]  # the fused whole-sequence module (encoder; decoder without feed)
    input_width: int  # columns, in units of H, that a layer's input alone contributes to
    joined_width: int  # columns, in units of H, of the joined matrix over [input, hidden]
    has_cell_state: bool
    step_function: CellStep
    # the tanh of every step: torch's, or a faster one of int8 decoding (``s2s.model.int8``)
    tanh: Tanh = torch.tanh

    def step(self, gates: Tensor, hidden: Tensor, cell: Tensor | None
             ) -> tuple[Tensor, Tensor | None]:
        """Joined pre-activations (B, joined_width H) and the state -> the new hidden and cell
        state (B, H)."""
        return self.step_function(gates, hidden, cell, self.tanh)

    def with_tanh(self, tanh: Tanh) -> "Cell":
        """This cell with another tanh."""
        return replace(self, tanh=tanh)

    def join(self, input_weight: Tensor, input_bias: Tensor | None, hidden_weight: Tensor,
             hidden_bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """A layer's input and hidden matrices (torch's gate order) as one joined matrix."""
        size = hidden_weight.size(1)
        input_bias = _or_zeros(input_bias, input_weight)
        hidden_bias = _or_zeros(hidden_bias, hidden_weight)
        if self.name == "gru":
            both = 2 * size  # r, z: summed; the candidate's two parts side by side
            zeros_in = input_weight.new_zeros(size, input_weight.size(1))
            zeros_hidden = hidden_weight.new_zeros(size, size)
            weight = torch.cat([
                torch.cat([input_weight[:both], hidden_weight[:both]], dim=1),
                torch.cat([input_weight[both:], zeros_hidden], dim=1),
                torch.cat([zeros_in, hidden_weight[both:]], dim=1)])
            bias = torch.cat([input_bias[:both] + hidden_bias[:both], input_bias[both:],
                              hidden_bias[both:]])
            return weight, bias
        weight = torch.cat([input_weight, hidden_weight], dim=1)
        bias = input_bias + hidden_bias
        if self.name == "lstm":  # torch's i, f, g, o -> i, f, o, g
            order = torch.cat([torch.arange(2 * size), torch.arange(3 * size, 4 * size),
                               torch.arange(2 * size, 3 * size)]).to(weight.device)
            return weight[order], bias[order]
        return weight, bias

    def join_fused_layer(self, rnn: nn.RNNBase, layer: int) -> tuple[Tensor, Tensor]:
        """One layer of the fused module as a joined matrix."""
        def weights(name: str) -> Tensor:
            return getattr(rnn, f"{name}_l{layer}")

        return self.join(weights("weight_ih"), weights("bias_ih"), weights("weight_hh"),
                         weights("bias_hh"))

    def widen_input_gates(self, gates: Tensor) -> Tensor:
        """Input-only pre-activations (..., input_width H) placed in the joined layout."""
        missing = (self.joined_width - self.input_width) * gates.size(-1) // self.input_width
        return nn.functional.pad(gates, (0, missing)) if missing else gates


def _or_zeros(bias: Tensor | None, weight: Tensor) -> Tensor:
    return bias if bias is not None else weight.new_zeros(weight.size(0))


def _at_least_fp32(tensor: Tensor) -> Tensor:
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def _lstm_step(gates: Tensor, hidden: Tensor, cell: Tensor | None, tanh: Tanh
               ) -> tuple[Tensor, Tensor | None]:
    """gates (B, 4H) in order input, forget, output, candidate -> hidden, cell (B, H).

    The arithmetic runs in fp32 even for bf16 gates (the cell state carries across steps);
    the hidden state comes back in the gates' dtype, the cell state in fp32.
    """
    assert cell is not None
    size, dtype = cell.size(1), gates.dtype
    gates = _at_least_fp32(gates)
    input_gate, forget_gate, output_gate = torch.sigmoid(gates[:, :3 * size]).chunk(3, dim=1)
    candidate = tanh(gates[:, 3 * size:])
    cell = forget_gate * cell + input_gate * candidate
    return (output_gate * tanh(cell)).to(dtype), cell


def _gru_step(gates: Tensor, hidden: Tensor, cell: Tensor | None, tanh: Tanh
              ) -> tuple[Tensor, Tensor | None]:
    """gates (B, 4H): reset and update sums, the candidate's input and hidden parts."""
    dtype = gates.dtype
    gates = _at_least_fp32(gates)
    reset, update = torch.sigmoid(gates[:, :2 * hidden.size(1)]).chunk(2, dim=1)
    candidate_input, candidate_hidden = gates[:, 2 * hidden.size(1):].chunk(2, dim=1)
    candidate = tanh(candidate_input + reset * candidate_hidden)
    new = candidate + update * (_at_least_fp32(hidden) - candidate)  # (1 - z) n + z h
    return new.to(dtype), None


def _rnn_step(gates: Tensor, hidden: Tensor, cell: Tensor | None, tanh: Tanh
              ) -> tuple[Tensor, Tensor | None]:
    return tanh(gates), None


CELLS = {
    "lstm": Cell("lstm", nn.LSTM, 4, 4, True, _lstm_step),
    "gru": Cell("gru", nn.GRU, 3, 4, False, _gru_step),
    "rnn": Cell("rnn", nn.RNN, 1, 1, False, _rnn_step),
}
