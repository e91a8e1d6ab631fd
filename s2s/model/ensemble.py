"""Several models that decode as one: an ensemble looks like a ``Seq2Seq`` to search.

Every member encodes the source and takes each step on its own states; the members'
next-token distributions are then combined, and their attention weights averaged, with the
members' weights (normalised to sum to one):

- ``prob`` (the default, as fairseq): the weighted mean of the probabilities,
  log sum_i w_i p_i(y), a proper distribution;
- ``logprob`` (as OpenNMT-py): the weighted mean of the log-probabilities, sum_i w_i log p_i(y),
  renormalised (a weighted geometric mean of the distributions).

Members must share both vocabularies (``load_translator`` checks), so their token ids, source
lengths and attention columns line up.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from s2s.model.decodable import Step
from s2s.model.seq2seq import DecoderState, Encoded, Seq2Seq
from s2s.model.step_layers import StepLayer

COMBINE_RULES = ("prob", "logprob")


class EnsembleEncoded(NamedTuple):
    """Each member's ``Encoded`` for the same sentences."""

    members: tuple[Encoded, ...]

    @property
    def states(self) -> Tensor:
        """The first member's encoder states: search reads only their shape (B, S, .)."""
        return self.members[0].states

    @property
    def step_layers(self) -> tuple[list[StepLayer] | None, ...]:
        return tuple(member.step_layers for member in self.members)

    def with_step_layers(self, layers: Sequence[list[StepLayer] | None]) -> "EnsembleEncoded":
        return EnsembleEncoded(tuple(member.with_step_layers(own)
                                     for member, own in zip(self.members, layers)))

    def select(self, index: Tensor) -> "EnsembleEncoded":
        return EnsembleEncoded(tuple(member.select(index) for member in self.members))

    def joined(self, other: "EnsembleEncoded") -> "EnsembleEncoded":
        return EnsembleEncoded(tuple(mine.joined(theirs)
                                     for mine, theirs in zip(self.members, other.members)))


class EnsembleState(NamedTuple):
    """Each member's decoder state for the same rows."""

    members: tuple[DecoderState, ...]

    def select(self, index: Tensor) -> "EnsembleState":
        return EnsembleState(tuple(member.select(index) for member in self.members))

    def joined(self, other: "EnsembleState") -> "EnsembleState":
        return EnsembleState(tuple(mine.joined(theirs)
                                   for mine, theirs in zip(self.members, other.members)))


class Ensemble(nn.Module):
    """Models decoding together; ``encode`` and ``decode_step`` as ``Seq2Seq``'s
    (``s2s.model.decodable``)."""

    output_ids = None

    def __init__(self, models: Sequence[Seq2Seq], weights: Sequence[float] | None = None,
                 combine: str = "prob") -> None:
        super().__init__()
        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_RULES)}, not {combine}")
        weights = [1.0] * len(models) if weights is None else list(weights)
        if len(weights) != len(models) or not models:
            raise ValueError(f"{len(models)} models but {len(weights)} weights")
        if any(not weight > 0 or not math.isfinite(weight) for weight in weights):
            raise ValueError(f"ensemble weights must be positive numbers, not {weights}")
        self.members = nn.ModuleList(models)
        self.weights = [weight / sum(weights) for weight in weights]
        self.combine = combine

    def encode(self, src_ids: Tensor, src_lengths: Tensor, *, for_search: bool = False
               ) -> tuple[EnsembleEncoded, EnsembleState]:
        pairs = [member.encode(src_ids, src_lengths, for_search=for_search)
                 for member in self.members]
        return (EnsembleEncoded(tuple(encoded for encoded, _ in pairs)),
                EnsembleState(tuple(state for _, state in pairs)))

    def decode_step(self, prev_tokens: Tensor, state: EnsembleState, encoded: EnsembleEncoded
                    ) -> Step:
        """The combined log-probabilities (B G, V) in fp32, normalised, the members' new
        states and their weighted mean attention (B G, S)."""
        logits, states, attention = [], [], None
        for member, weight, own_state, own_encoded in zip(self.members, self.weights,
                                                          state.members, encoded.members):
            vectors, new_state, weights = member.step_vectors(prev_tokens, own_state,
                                                              own_encoded)
            logits.append(member.decoder.output(vectors).float())
            states.append(new_state)
            weighted = weights.float() * weight
            attention = weighted if attention is None else attention + weighted
        assert attention is not None
        return Step(self._combined(logits), EnsembleState(tuple(states)), attention)

    def forward(self, src_ids: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                positions: Tensor | None = None) -> Tensor:
        """Teacher-forced combined log-probabilities, shaped as ``Seq2Seq.forward``'s logits
        (the validation loss of an ensemble)."""
        return self._combined([member(src_ids, src_lengths, tgt_in, positions).float()
                               for member in self.members])

    def _combined(self, logits: list[Tensor]) -> Tensor:
        """The members' logits combined into normalised log-probabilities.

        ``prob`` mixes probabilities and takes one logarithm (a log-sum-exp per pair of
        models costs twice as much on a CPU); a probability below fp32's smallest normal
        number (1e-38, a log-probability of -87.3) counts as that number, so a token no model
        gives any chance keeps a finite score (a forced EOS at the length limit must)."""
        if self.combine == "prob":
            mixed = None
            for member_logits, weight in zip(logits, self.weights):
                probs = torch.softmax(member_logits, dim=-1)
                mixed = probs.mul_(weight) if mixed is None else mixed.add_(probs, alpha=weight)
            assert mixed is not None
            return mixed.clamp_min_(torch.finfo(mixed.dtype).tiny).log_()
        combined = None
        for member_logits, weight in zip(logits, self.weights):
            weighted = torch.log_softmax(member_logits, dim=-1).mul_(weight)
            combined = weighted if combined is None else combined.add_(weighted)
        assert combined is not None
        # the weighted mean of log-probabilities is no distribution until renormalised
        return torch.log_softmax(combined, dim=-1)
