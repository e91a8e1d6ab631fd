"""The attentional recurrent encoder-decoder (LSTM, GRU or tanh RNN cells: ``s2s.model.cells``).

Shapes: B batch, S source length, T target length, E embedding size, He encoder hidden size per
direction, M = 2 He (encoder states), H decoder hidden size, L decoder layers, O attentional
vector size (E when embeddings are tied, else H), V target vocabulary, G the cell's joined
pre-activation width per hidden unit (4 for LSTM and GRU, 1 for RNN).

Search needs only ``encode`` (asking ``for_search=True`` for the joined step layers) and
``decode_step`` (``s2s.model.decodable``); training and the validation loss use ``forward``.
Nothing here depends on torch's global grad mode.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s.config import ModelConfig
from s2s.data.vocab import PAD_ID
from s2s.model.attention import Attention
from s2s.model.cells import CELLS
from s2s.model.decodable import Step
from s2s.model.step_layers import (
    JoinedLayer,
    SplitStepLayer,
    StepLayer,
    joined_step_layer,
    recurrent_layer,
    step_linear,
)


class Encoded(NamedTuple):
    """What decoding a batch needs that does not change from step to step, computed once."""

    states: Tensor  # (B, S, M)
    keys: Tensor  # (B, S, H) states projected for scoring (the states themselves for dot)
    mask: Tensor  # (B, S) bool, True on real tokens
    # only when search asked for them: per decoder layer, all gates' matmul in one layer
    step_layers: list[StepLayer] | None = None

    def with_step_layers(self, layers: list[StepLayer] | None) -> "Encoded":
        """The same states with search's joined layers (built once per search, reused)."""
        return self._replace(step_layers=layers)

    def select(self, index: Tensor) -> "Encoded":
        """Keep or repeat batch rows (finished sentences leave; beams expand)."""
        return Encoded(self.states.index_select(0, index), self.keys.index_select(0, index),
                       self.mask.index_select(0, index), self.step_layers)

    def joined(self, other: "Encoded") -> "Encoded":
        """These sentences followed by ``other``'s, padded to the longer source."""
        source = max(self.states.size(1), other.states.size(1))

        def cat(mine: Tensor, theirs: Tensor, fill: float | bool) -> Tensor:
            return torch.cat([_pad_source(mine, source, fill), _pad_source(theirs, source, fill)])

        return Encoded(cat(self.states, other.states, 0.0), cat(self.keys, other.keys, 0.0),
                       cat(self.mask, other.mask, False), self.step_layers)


class DecoderState(NamedTuple):
    hidden: Tensor  # (L, B, H)
    cell: Tensor | None  # (L, B, H) for LSTMs; None for cells without a cell state
    feed: Tensor  # (B, O) last attentional vector; (B, 0) without input feeding

    def select(self, index: Tensor) -> "DecoderState":
        cell = None if self.cell is None else self.cell.index_select(1, index)
        return DecoderState(self.hidden.index_select(1, index), cell,
                            self.feed.index_select(0, index))

    def joined(self, other: "DecoderState") -> "DecoderState":
        """These rows followed by ``other``'s."""
        cell = None if self.cell is None or other.cell is None else torch.cat(
            [self.cell, other.cell], dim=1)
        return DecoderState(torch.cat([self.hidden, other.hidden], dim=1), cell,
                            torch.cat([self.feed, other.feed]))


def _pad_source(tensor: Tensor, length: int, fill: float | bool) -> Tensor:
    """(B, S, ...) padded with ``fill`` to (B, ``length``, ...)."""
    missing = length - tensor.size(1)
    if missing <= 0:
        return tensor
    widths = [0, 0] * (tensor.dim() - 2) + [0, missing]
    return nn.functional.pad(tensor, widths, value=fill)


class Encoder(nn.Module):
    """Bidirectional multi-layer RNN over packed sequences: no work is spent on padding."""

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        cell = CELLS[config.cell]
        self.rnn = cell.module(config.embed_size, config.encoder_hidden, config.encoder_layers,
                               batch_first=True, bidirectional=True,
                               dropout=config.dropout if config.encoder_layers > 1 else 0.0)
        self.decoder_shape = (2 if cell.has_cell_state else 1, config.decoder_layers,
                              config.decoder_hidden)
        # the top layer's final forward/backward states initialise every decoder layer
        self.bridge = nn.Linear(2 * config.encoder_hidden, math.prod(self.decoder_shape))

    def forward(self, src_ids: Tensor, src_lengths: Tensor
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """src_ids (B, S) -> states (B, S, M), initial decoder hidden and cell (L, B, H); the
        cell is None for cells without a cell state."""
        batch, length = src_ids.shape
        embedded = self.embed_dropout(self.embedding(src_ids))  # (B, S, E)
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        output, final = self.rnn(packed)
        final_hidden = final[0] if isinstance(final, tuple) else final  # an LSTM's (h, c)
        states, _ = pad_packed_sequence(output, batch_first=True, total_length=length)
        top = torch.cat([final_hidden[-2], final_hidden[-1]], dim=1)  # (B, M)
        init = torch.tanh(self.bridge(top)).view(batch, *self.decoder_shape)
        hidden = init[:, 0].transpose(0, 1).contiguous()  # (L, B, H)
        cell = init[:, 1].transpose(0, 1).contiguous() if init.size(1) == 2 else None
        return states, hidden, cell


class OutputLayer(nn.Linear):
    """The decoder's output layer: logits, or normalised log-probabilities for search (an int8
    copy, ``s2s.model.int8.Int8Linear``, has the same two calls)."""

    def log_softmax(self, inputs: Tensor, offsets: Tensor | None = None) -> Tensor:
        """Log-probabilities (N, out) of inputs (N, in), in the weights' dtype; with
        ``offsets`` (N, out) added to the logits first, in fp32 (a shortlist's)."""
        if offsets is None:
            return torch.log_softmax(self(inputs), dim=-1)
        return torch.log_softmax(self(inputs).float() + offsets, dim=-1)


class Decoder(nn.Module):
    """Recurrent decoder with attention; input feeding runs step by step, otherwise one fused
    call."""

    def __init__(self, config: ModelConfig, embedding: nn.Embedding, vocab_size: int) -> None:
        super().__init__()
        size, layers = config.decoder_hidden, config.decoder_layers
        memory_size = 2 * config.encoder_hidden
        self.cell = CELLS[config.cell]
        self.out_size = config.embed_size if config.tie_embeddings else size
        self.input_feeding = config.input_feeding
        self.embedding = embedding
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.dropout = nn.Dropout(config.dropout)
        if self.input_feeding:
            # layer 0's input pre-activations from the embeddings: all steps in one matmul
            self.embedding_gates = nn.Linear(config.embed_size, self.cell.input_width * size)
            self.recurrent = nn.ModuleList(
                [recurrent_layer(self.cell, self.out_size, size, bias=False)]
                + [recurrent_layer(self.cell, size, size, bias=True) for _ in range(layers - 1)])
        else:
            self.rnn = self.cell.module(config.embed_size, size, layers, batch_first=True,
                                        dropout=config.dropout if layers > 1 else 0.0)
        self.attention = Attention(config.attention, size, memory_size)
        self.combine = nn.Linear(memory_size + size, self.out_size, bias=False)
        self.output = OutputLayer(self.out_size, vocab_size)
        # search's layers when they must not be rebuilt from the weights (int8: packed once)
        self.frozen_search_layers: list[StepLayer] | None = None
        if config.tie_embeddings:
            self.output.weight = embedding.weight

    def initial_feed(self, batch: int, like: Tensor) -> Tensor:
        width = self.out_size if self.input_feeding else 0
        return like.new_zeros(batch, width)

    def forward(self, tgt_ids: Tensor, state: DecoderState, encoded: Encoded
                ) -> tuple[Tensor, DecoderState, Tensor]:
        """tgt_ids (B, T) -> attentional vectors (B, T, O) after dropout, the new state, and
        the attention weights (B, T, S)."""
        embedded = self.embed_dropout(self.embedding(tgt_ids))  # (B, T, E)
        # Three paths give the same numbers (tests pin them to each other): search's single
        # steps use the joined layers it asked ``encode`` for (one matmul per layer, no
        # autograd); input feeding must run step by step, since each step's input is the
        # previous step's output; without it the whole sequence goes through one fused RNN.
        if self.frozen_search_layers is not None and encoded.step_layers is None:
            encoded = encoded.with_step_layers(self.frozen_search_layers)  # every path: int8
        if encoded.step_layers is not None:
            if embedded.size(1) == 1:
                return self._search_step(embedded[:, 0], state, encoded)
            return self._search_steps(embedded, state, encoded)
        if self.input_feeding:
            return self._run_stepwise(embedded, state, encoded)
        if state.cell is None:
            output, hidden = self.rnn(embedded, state.hidden)  # (B, T, H)
            cell = None
        else:
            output, (hidden, cell) = self.rnn(embedded, (state.hidden, state.cell))
        context, weights = self.attention(output, encoded)  # (B, T, M), (B, T, S)
        vectors = self.dropout(torch.tanh(self.combine(torch.cat([context, output], dim=-1))))
        return vectors, DecoderState(hidden, cell, state.feed), weights

    def _search_step(self, embedded: Tensor, state: DecoderState, encoded: Encoded
                     ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step for search, embedded (B, E): one matmul per layer.

        Plain matmuls, not the fused RNN kernel, which would build a new oneDNN primitive for
        every batch size as finished sentences leave the batch.
        """
        first_input = (torch.cat([embedded, state.feed], dim=1) if self.input_feeding
                       else embedded)
        layer_input, hiddens, cells = first_input, [], []
        for layer, hidden, cell in zip(encoded.step_layers, state.hidden,
                                       _layers_of(state.cell, len(state.hidden))):
            inputs = torch.cat([layer_input, hidden.to(layer_input.dtype)], dim=1)  # (B, in + H)
            layer_input, cell = self.cell.step(layer(inputs), hidden, cell)
            hiddens.append(layer_input)
            cells.append(cell)
        top = layer_input[:, None]  # (B, 1, H)
        context, weights = self.attention(top, encoded)  # (B, 1, M), (B, 1, S)
        # the cell's tanh: int8 decoding gives the cell a faster one (``s2s.model.int8``)
        vectors = self.cell.tanh(self.combine(torch.cat([context, top], dim=-1)))  # (B, 1, O)
        feed = vectors[:, 0] if self.input_feeding else state.feed
        return vectors, DecoderState(torch.stack(hiddens), _stacked(cells), feed), weights

    def _search_steps(self, embedded: Tensor, state: DecoderState, encoded: Encoded
                      ) -> tuple[Tensor, DecoderState, Tensor]:
        """Search's steps one after another (a frozen model's teacher-forced loss)."""
        vectors, attention = [], []
        for step in embedded.unbind(1):
            step_vectors, state, weights = self._search_step(step, state, encoded)
            vectors.append(step_vectors)
            attention.append(weights)
        return torch.cat(vectors, dim=1), state, torch.cat(attention, dim=1)

    def search_layers(self) -> list[StepLayer]:
        """Per layer, search's single-step matmul over [input, hidden]: the frozen layers of a
        converted model (``s2s.model.int8``), else the joined current weights."""
        if self.frozen_search_layers is not None:
            return self.frozen_search_layers
        return [JoinedLayer(weight, bias) for weight, bias in self.step_weights()]

    @torch.no_grad()
    def step_weights(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the (weight (G H, in + H), bias) over [input, hidden] in the layout
        ``Cell.step`` takes.

        With input feeding, layer 0's input is [embedding, feed]: its embedding and feed
        matrices are joined. Built for every batch (a copy of the weights, about a
        millisecond): a cache would need to know when the weights change, and the fused
        optimizers update them in place without bumping their version counters.
        """
        if not self.input_feeding:
            return [self.cell.join_fused_layer(self.rnn, layer)
                    for layer in range(self.rnn.num_layers)]
        first, later = self.recurrent[0], list(self.recurrent)[1:]
        embedding = self.embedding_gates
        if isinstance(first, SplitStepLayer):
            joined_first = self.cell.join(
                torch.cat([embedding.weight, first.input.weight], dim=1), embedding.bias,
                first.hidden.weight, first.hidden.bias)
        else:
            joined_first = torch.cat([embedding.weight, first.weight], dim=1), embedding.bias
        return [joined_first, *(joined_step_layer(self.cell, layer) for layer in later)]

    def _run_stepwise(self, embedded: Tensor, state: DecoderState, encoded: Encoded
                      ) -> tuple[Tensor, DecoderState, Tensor]:
        # unbind once: slicing per step would make backward build a full-size zero tensor per step
        embedding_gates = self.cell.widen_input_gates(
            self.embedding_gates(embedded)).unbind(1)  # T x (B, G H)
        hidden = list(state.hidden.unbind(0))
        cell = _layers_of(state.cell, len(hidden))
        layers = [joined_step_layer(self.cell, layer) for layer in self.recurrent]
        feed, vectors, attention = state.feed, [], []
        # one record per layer for the deferred weight gradients (see _StepLinear)
        records = [[] if torch.is_grad_enabled() and self.training else None for _ in layers]
        for step, step_gates in enumerate(embedding_gates):
            layer_input = feed
            for layer, (weight, bias) in enumerate(layers):
                inputs = torch.cat([layer_input, hidden[layer]], dim=1)  # (B, in)
                gates = step_linear(inputs, weight, bias, records[layer], step)  # (B, G H)
                if layer == 0:
                    gates = gates + step_gates
                hidden[layer], cell[layer] = self.cell.step(gates, hidden[layer], cell[layer])
                layer_input = self.dropout(hidden[layer])
            top = hidden[-1][:, None]  # (B, 1, H)
            context, weights = self.attention(top, encoded)  # (B, 1, M), (B, 1, S)
            feed = self.dropout(torch.tanh(self.combine(torch.cat([context, top], dim=-1))[:, 0]))
            vectors.append(feed)
            attention.append(weights)
        new_state = DecoderState(torch.stack(hidden), _stacked(cell), feed)
        return torch.stack(vectors, dim=1), new_state, torch.cat(attention, dim=1)


def _layers_of(cell: Tensor | None, layers: int) -> list[Tensor | None]:
    """Per layer, the cell state (L, B, H) -> L x (B, H); Nones for cells without one."""
    return [None] * layers if cell is None else list(cell.unbind(0))


def _stacked(cells: list[Tensor | None]) -> Tensor | None:
    return None if cells[0] is None else torch.stack(cells)


class Seq2Seq(nn.Module):
    """Embeddings, encoder and decoder; rebuilt from (config, vocabulary sizes) alone."""

    output_ids = None  # its output positions are the target vocabulary's ids

    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                 joint_vocab: bool = False) -> None:
        super().__init__()
        self.config = config
        self.joint_vocab = joint_vocab
        tgt_embedding = _embedding(tgt_vocab_size, config.embed_size)
        share = joint_vocab and config.tie_embeddings and src_vocab_size == tgt_vocab_size
        src_embedding = tgt_embedding if share else _embedding(src_vocab_size, config.embed_size)
        self.encoder = Encoder(config, src_embedding)
        self.decoder = Decoder(config, tgt_embedding, tgt_vocab_size)
        if config.init_range:
            _uniform_init(self, config.init_range, skip=(src_embedding, tgt_embedding))

    def never_produce(self, tokens: list[int]) -> None:
        """Give ``tokens`` (corpus tags in a joint vocabulary) zero probability in every search:
        an output bias of -inf, which int8 weights, shortlists and exported graphs keep. For
        decoding only: label smoothing in training would put mass on them."""
        if tokens:
            with torch.no_grad():
                self.decoder.output.bias[tokens] = float("-inf")

    def encode(self, src_ids: Tensor, src_lengths: Tensor, *, for_search: bool = False
               ) -> tuple[Encoded, DecoderState]:
        """src_ids (B, S), src_lengths (B,) -> what attention needs and the first state.

        ``for_search``: also join the decoder's weights for single-step decoding without
        gradients (``Decoder.search_layers``); ``decode_step`` then takes that fast path.
        """
        states, hidden, cell = self.encoder(src_ids, src_lengths)
        mask = src_ids != PAD_ID  # (B, S)
        step_layers = self.decoder.search_layers() if for_search else None
        encoded = Encoded(states, self.decoder.attention.keys(states), mask, step_layers)
        return encoded, DecoderState(hidden, cell, self.decoder.initial_feed(len(src_ids), states))

    def decode_step(self, prev_tokens: Tensor, state: DecoderState, encoded: Encoded) -> Step:
        """prev_tokens (B G,) -> log-probabilities (B G, V) of the next token, in the weights'
        dtype (fp32 for int8), the new state, and the attention weights (B G, S) over the
        source that chose them.

        ``encoded`` holds B sentences; G consecutive rows of tokens and state (beams) share each.
        """
        vectors, state, weights = self.step_vectors(prev_tokens, state, encoded)
        return Step(self.decoder.output.log_softmax(vectors), state, weights)

    def step_vectors(self, prev_tokens: Tensor, state: DecoderState, encoded: Encoded
                     ) -> tuple[Tensor, DecoderState, Tensor]:
        """``decode_step`` up to the output layer: the attentional vectors (B G, O) that it
        turns into log-probabilities (an ensemble mixes its members' logits instead)."""
        vectors, state, weights = self.decoder(prev_tokens[:, None], state, encoded)
        return vectors[:, 0], state, weights[:, 0]

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                positions: Tensor | None = None, *, with_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V), or (N, V) for the N ``positions`` (B, T) selected;
        ``with_attention``: and the attention weights (B, T, S) (for ``guided_attention_loss``)."""
        encoded, state = self.encode(src_ids, src_lengths)
        vectors, _, weights = self.decoder(tgt_in, state, encoded)  # (B, T, O), (B, T, S)
        if positions is not None:
            vectors = vectors[positions]  # (N, O): no output layer work on padding
        logits = self.decoder.output(vectors)
        return (logits, weights) if with_attention else logits


def _uniform_init(model: nn.Module, bound: float, skip: tuple[nn.Embedding, ...]) -> None:
    """Every parameter but the embeddings (and the output matrix tied to one) from
    U(-bound, bound); embeddings keep their N(0, 1/E) start."""
    kept = {id(embedding.weight) for embedding in skip}
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) not in kept:
                parameter.uniform_(-bound, bound)


def _embedding(vocab_size: int, size: int) -> nn.Embedding:
    embedding = nn.Embedding(vocab_size, size, padding_idx=PAD_ID)
    nn.init.normal_(embedding.weight, std=size ** -0.5)
    with torch.no_grad():
        embedding.weight[PAD_ID].zero_()
    return embedding


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout) inside the block; every submodule's own mode is
    restored afterwards, so a caller training the model finds it as it was."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
