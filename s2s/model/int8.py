"""int8 weights for decoding on a CPU, behind one function: ``quantized_for_cpu``.

Every weight matmul of the encoder (its recurrent layers and the bridge) and of the search
step (the decoder's joined layers, attention projections, the combine layer and the output
layer) runs in int8: weights quantised once per output channel, activations per row at every
call, both symmetric over 8 bits, multiplied by ``torch._int_mm`` (int32 sums) and scaled
back to fp32. Embedding lookups, attention's two ``bmm`` over the encoder states, the cells'
gate arithmetic and the softmaxes stay in fp32; the cells and the decoder's combine layer take
their tanh as ``2 sigmoid(2 x) - 1`` (``fast_tanh``).

Why per row: torch's dynamic quantisation (``quantize_dynamic``, ``quantized::linear_dynamic``)
scales the activations of a whole batch at once, so a sentence's translation would depend on
the other sentences in its batch; per-row scales keep every row's numbers its own (the batched
search still finds what the one-sentence reference finds, with scores equal up to the last-bit
differences fp32 kernels make between batch shapes) and lower the error. Measured
against oneDNN's dynamic int8 matmul in BENCHMARKS.md ("int8"). It also needs no quantised
tensor types, which torch has deprecated, and no process-wide quantisation engine.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from s2s.model.cells import CELLS, Cell

_LEVELS = 127  # symmetric int8: -127..127


# rows of the output layer made and normalised together by ``Int8Linear.log_softmax``: 64 rows
# of 8,000 pieces are 2 MB. Beam 5 over Multi30k test on a Zen 4 ran 2-6% faster than with the
# whole batch at once, 32 and 128 rows less (BENCHMARKS.md, "The search tail, third round")
LOG_SOFTMAX_ROWS = 64


def fast_tanh(inputs: Tensor) -> Tensor:
    """tanh as ``2 sigmoid(2 x) - 1``: within 2e-7 of ``torch.tanh``, and 2.8-3.5 times faster on
    AVX-512 and AVX2 CPUs, where torch 2.13's tanh is several times slower than its sigmoid
    (BENCHMARKS.md, "The search tail again"). Its error is ten thousand times smaller than int8's
    rounding, so int8 decoding uses it; fp32 and bf16 keep torch's tanh."""
    return torch.sigmoid(inputs * 2).mul_(2).sub_(1)


def _quantized_rows(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """``matrix`` (N, K) as int8 (N, K), each row scaled so that its largest magnitude, also
    returned (N, 1), becomes 127.

    A multiplication, not a division: torch may divide by a broadcast divisor through its
    reciprocal in some kernels and not in others, which would round a row differently alone
    than in a batch."""
    largest = matrix.abs().amax(dim=1, keepdim=True).clamp_(min=1e-30)
    return (matrix * torch.div(_LEVELS, largest)).round_().to(torch.int8), largest


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights: inputs (..., in) -> outputs (..., out) in fp32."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        quantized, largest = _quantized_rows(weight.detach().float())
        self.register_buffer("weight_t", quantized.t())  # (in, out): _int_mm's right side
        # (out,): an output is its int32 sum times this and its input row's largest magnitude
        self.register_buffer("weight_scale", largest[:, 0] / _LEVELS ** 2)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def of(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)

    def rows(self, ids: Tensor) -> "Int8Linear":
        """This layer restricted to the outputs ``ids``, with the same int8 weights."""
        restricted = copy.copy(self)
        restricted._buffers = dict(self._buffers)
        restricted.out_features = len(ids)
        restricted.weight_t = self.weight_t[:, ids]
        restricted.weight_scale = self.weight_scale[ids]
        restricted.bias = None if self.bias is None else self.bias[ids]
        return restricted

    def joined(self, other: "Int8Linear") -> "Int8Linear":
        """One layer of this layer's outputs followed by ``other``'s, int8 weights as they
        are."""
        joined = copy.copy(self)
        joined._buffers = dict(self._buffers)
        joined.out_features = self.out_features + other.out_features
        joined.weight_t = torch.cat([self.weight_t, other.weight_t], dim=1)
        joined.weight_scale = torch.cat([self.weight_scale, other.weight_scale])
        joined.bias = torch.cat([self._bias(), other._bias()])
        return joined

    def _bias(self) -> Tensor:
        return self.bias if self.bias is not None else self.weight_scale.new_zeros(
            self.out_features)

    def float_weight(self) -> Tensor:
        """The fp32 weights (out, in) that the int8 ones stand for."""
        return self.weight_t.t().float() * (self.weight_scale * _LEVELS)[:, None]

    def forward(self, inputs: Tensor) -> Tensor:
        rows, largest = _quantized_rows(inputs.reshape(-1, self.in_features).float())
        return self.of_quantized(rows, largest).view(*inputs.shape[:-1], self.out_features)

    def of_quantized(self, rows: Tensor, largest: Tensor, out: Tensor | None = None) -> Tensor:
        """Outputs (N, out) for inputs that ``_quantized_rows`` made (N, in) and (N, 1), in
        ``out`` if given."""
        return self._rescaled(torch._int_mm(rows, self.weight_t), largest, out)

    def log_softmax(self, inputs: Tensor, offsets: Tensor | None = None) -> Tensor:
        """``torch.log_softmax(self(inputs) + offsets, dim=-1)`` for inputs (N, in) and optional
        offsets (N, out), to the last bit, made ``LOG_SOFTMAX_ROWS`` rows at a time: a block's
        outputs are still in the cache when they are rescaled and normalised, where a whole
        batch's (400 beam rows by 8,000 pieces: 13 MB) would go out to memory and back three
        times. Every row is computed on its own either way (int32 sums are exact), so the
        blocks change no number."""
        rows, largest = _quantized_rows(inputs.float())
        output = rows.new_empty(len(rows), self.out_features, dtype=torch.float32)
        for start in range(0, len(rows), LOG_SOFTMAX_ROWS):
            block = slice(start, start + LOG_SOFTMAX_ROWS)
            logits = self.of_quantized(rows[block], largest[block], out=output[block])
            if offsets is not None:
                logits += offsets[block]
            torch.log_softmax(logits, dim=-1, out=logits)
        return output

    def _rescaled(self, sums: Tensor, largest: Tensor, out: Tensor | None = None) -> Tensor:
        """int32 sums (N, out) back to fp32 outputs, in ``out`` if given: three passes, the
        conversion, the rows' scales, and the weights' scales with the bias."""
        output = sums.float() if out is None else out.copy_(sums)
        output.mul_(largest)
        if self.bias is None:
            return output.mul_(self.weight_scale)
        return torch.addcmul(self.bias, output, self.weight_scale, out=output)


class Int8Recurrent(nn.Module):
    """A multi-layer (bidirectional) recurrent module over packed sequences, as torch's fused
    ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (which it replaces, same inputs and outputs), with int8
    input and hidden matrices.

    Each layer's input matmul runs once over all tokens, for both directions; the hidden
    matmuls step by step, over the sentences still running at that step (packed sequences, as
    torch's fused kernels), both directions side by side (``_run``).
    """

    def __init__(self, rnn: nn.RNNBase, cell: Cell) -> None:
        super().__init__()
        if not rnn.batch_first or getattr(rnn, "proj_size", 0):
            raise ValueError("Int8Recurrent takes batch-first modules without projections")
        self.cell = cell
        self.num_layers, self.hidden_size = rnn.num_layers, rnn.hidden_size
        suffixes = ("", "_reverse") if rnn.bidirectional else ("",)
        self.inputs, self.hiddens = nn.ModuleList(), nn.ModuleList()  # per layer; per direction
        for layer in range(rnn.num_layers):
            input_weights, biases = [], []
            for suffix in suffixes:
                def weight(name: str) -> Tensor | None:
                    found = getattr(rnn, f"{name}_l{layer}{suffix}", None)
                    return None if found is None else found.detach().float()

                joined, bias = cell.join(weight("weight_ih"), weight("bias_ih"),
                                         weight("weight_hh"), weight("bias_hh"))
                width = joined.size(1) - rnn.hidden_size
                input_weights.append(joined[:, :width])
                biases.append(bias)
                self.hiddens.append(Int8Linear(joined[:, width:], None))
            # the directions' input matrices stacked: rows are quantised one by one, so
            # stacking them changes no number
            self.inputs.append(Int8Linear(torch.cat(input_weights), torch.cat(biases)))
        self.directions = len(suffixes)

    def forward(self, packed: PackedSequence
                ) -> tuple[PackedSequence, Tensor | tuple[Tensor, Tensor]]:
        # packed data is time-major over the sentences sorted longest first: at step t the
        # first batch_sizes[t] sentences run, so no step computes padding
        sizes = packed.batch_sizes.tolist()
        starts = [0, *itertools.accumulate(sizes)]
        layer_input, hiddens, cells = packed.data.float(), [], []
        for layer in range(self.num_layers):
            layer_input, hidden, cell = self._run(self.inputs[layer](layer_input), sizes, starts,
                                                  layer)
            hiddens.append(hidden)
            cells.append(cell)
        hidden = self._unsorted(torch.cat(hiddens), packed)
        final = (hidden, self._unsorted(torch.cat(cells), packed)) if (
            self.cell.has_cell_state) else hidden
        return packed._replace(data=layer_input), final

    def _run(self, gates: Tensor, sizes: list[int], starts: list[int], layer: int
             ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One layer over its packed input pre-activations (tokens, D G H) for its D
        directions: outputs (tokens, D H), and the final hidden and cell states (D, B, H) of
        each sentence, longest first.

        At loop step t the forward direction runs time step t and the backward one T - 1 - t,
        their rows joined for one quantisation and one cell step: half the small operations
        of running them one after the other, and the same numbers, since every row is
        computed on its own.
        """
        directions, size, steps = self.directions, self.hidden_size, len(sizes)
        width = gates.size(1) // directions
        hidden = gates.new_zeros(directions, sizes[0], size)
        cell = hidden.clone() if self.cell.has_cell_state else None
        outputs = gates.new_empty(len(gates), directions * size)
        recurrent = self.hiddens[layer * directions:(layer + 1) * directions]
        for step in range(steps):
            # (rows, first token, state rows in the joined batch) of each direction; a
            # sentence that has ended (forward) or not begun (backward) keeps its state
            spans, joined_rows = [], 0
            for time in (step, steps - 1 - step)[:directions]:
                rows = sizes[time]
                spans.append((rows, starts[time], slice(joined_rows, joined_rows + rows)))
                joined_rows += rows
            state = _joined([hidden[d, :rows] for d, (rows, _, _) in enumerate(spans)])
            quantized, largest = _quantized_rows(state)
            pre_activations = []
            for d, (rows, start, own) in enumerate(spans):
                from_hidden = recurrent[d].of_quantized(quantized[own], largest[own])
                pre_activations.append(
                    from_hidden.add_(gates[start:start + rows, d * width:(d + 1) * width]))
            cells = None if cell is None else _joined(
                [cell[d, :rows] for d, (rows, _, _) in enumerate(spans)])
            new_hidden, new_cell = self.cell.step(_joined(pre_activations), state, cells)
            for d, (rows, start, own) in enumerate(spans):
                hidden[d, :rows] = new_hidden[own]
                if cell is not None and new_cell is not None:
                    cell[d, :rows] = new_cell[own]
                outputs[start:start + rows, d * size:(d + 1) * size] = new_hidden[own]
        return outputs, hidden, cell

    @staticmethod
    def _unsorted(state: Tensor, packed: PackedSequence) -> Tensor:
        """A final state (layers, B, H) back in the caller's batch order."""
        if packed.unsorted_indices is None:
            return state
        return state.index_select(1, packed.unsorted_indices)


def _joined(parts: list[Tensor]) -> Tensor:
    """Row blocks as one tensor (the one block itself, uncopied, if alone)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def quantized_for_cpu(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (a ``Seq2Seq``) for decoding on the CPU with int8 weights (module
    docstring); ``model`` itself is not changed, and returned as it is if it already has int8
    weights. Check the device with ``check_int8`` first."""
    if model.decoder.frozen_search_layers is not None:
        return model
    quantized = copy.deepcopy(model).float().eval()
    quantized.requires_grad_(False)
    encoder, decoder = quantized.encoder, quantized.decoder
    search_layers = [Int8Linear(weight, bias) for weight, bias in decoder.step_weights()]
    cell = CELLS[model.config.cell].with_tanh(fast_tanh)
    encoder.rnn = Int8Recurrent(encoder.rnn, cell)
    decoder.cell = cell
    encoder.bridge = Int8Linear.of(encoder.bridge)
    decoder.combine = Int8Linear.of(decoder.combine)
    decoder.output = Int8Linear.of(decoder.output)
    attention = decoder.attention
    for name in ("key_projection", "query_projection", "energy"):
        if isinstance(getattr(attention, name, None), nn.Linear):
            setattr(attention, name, Int8Linear.of(getattr(attention, name)))
    decoder.frozen_search_layers = search_layers
    return quantized
