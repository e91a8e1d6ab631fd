"""The attention layer: Luong's dot and general scores, Bahdanau's additive one."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn


class Memory(Protocol):
    """What attention reads of an encoded source (s2s.model.seq2seq's ``Encoded``)."""

    @property
    def states(self) -> Tensor: ...  # (B, S, M) encoder states

    @property
    def keys(self) -> Tensor: ...  # (B, S, H) the states as ``Attention.keys`` projects them

    @property
    def mask(self) -> Tensor: ...  # (B, S) true at real tokens, false at padding


class Attention(nn.Module):
    """Luong dot/general or Bahdanau additive attention; padding gets exactly zero weight."""

    def __init__(self, kind: str, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.kind = kind
        if kind != "dot":
            self.key_projection = nn.Linear(memory_size, query_size, bias=False)
        if kind == "bahdanau":
            self.query_projection = nn.Linear(query_size, query_size)
            self.energy = nn.Linear(query_size, 1, bias=False)

    def keys(self, states: Tensor) -> Tensor:
        return states if self.kind == "dot" else self.key_projection(states)  # (B, S, H)

    def forward(self, query: Tensor, encoded: Memory) -> tuple[Tensor, Tensor]:
        """query (B G, T, H) -> context (B G, T, M), weights (B G, T, S).

        G consecutive query rows may share one source sentence (the beams of beam search):
        they are scored together against its single copy of the encoder states.
        """
        rows, steps = query.shape[:2]
        query = query.reshape(encoded.states.size(0), -1, query.size(-1))  # (B, G T, H)
        if self.kind == "bahdanau":
            hidden = encoded.keys[:, None] + self.query_projection(query)[:, :, None]  # (B,GT,S,H)
            scores = self.energy(torch.tanh(hidden)).squeeze(-1)  # (B, G T, S)
        else:
            scores = torch.bmm(query, encoded.keys.transpose(1, 2))  # (B, G T, S)
        scores = scores.masked_fill(~encoded.mask[:, None, :], float("-inf"))
        # half-precision scores are normalised in fp32; fp32 and fp64 ones in their own type
        wide = torch.promote_types(scores.dtype, torch.float32)
        weights = torch.softmax(scores.to(wide), dim=-1).to(encoded.states.dtype)
        context = torch.bmm(weights, encoded.states)  # (B, G T, M)
        return context.view(rows, steps, -1), weights.view(rows, steps, -1)
