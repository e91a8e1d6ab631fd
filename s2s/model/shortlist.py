"""A vocabulary shortlist: each sentence decodes over the target pieces likely to appear in
its translation, not the whole vocabulary.

The table (``s2s.data.shortlist_table``, counted once from a run's prepared training pairs)
lists, for every source piece, the target pieces that co-occur with it most strongly, and the
target pieces by frequency. A sentence's candidates are the special pieces, the ``frequent``
most frequent pieces and the ``per_source`` best of each of its source pieces.

``Shortlist.for_batch`` wraps a model for one batch of sentences: its output layer becomes the
rows of the union of their candidates (gathered once per batch), so the output matmul, the
log-softmax and the top-k of every step run over that union, not the vocabulary; each
sentence's other columns are -inf, so it chooses among its own candidates only and its
translation does not depend on its batch. (Normalising over the whole union instead would let
other sentences of the batch, in a server other clients' lines, change a translation.)

What a sentence's list leaves out still takes part in its normaliser, as an estimate
(``OutsideMass``): the pieces outside the frequent list fall into ``OUTSIDE_GROUPS`` groups
of similar output rows, and a group's mass at a step is its number of pieces outside the
sentence's list times exp of its mean row's logit. Renormalising over the list alone
inflates the probabilities of steps where much mass lies outside it: it made about as many
lines differ from the whole vocabulary's as the missing pieces did, and the estimate halves
those (BENCHMARKS.md, "The shortlist's normaliser"). It costs ``OUTSIDE_GROUPS`` more output
columns, and a k-means of the output rows once per model (under a second).

Search works in positions of the union, where the special pieces keep their ids (they come
first); ``decode_corpus`` maps the results back to vocabulary ids.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from s2s.data.shortlist_table import SPECIALS, ShortlistTable
from s2s.model.decodable import Step
from s2s.model.int8 import Int8Linear
from s2s.model.seq2seq import DecoderState, Encoded, OutputLayer
from s2s.model.step_layers import StepLayer

OUTSIDE_GROUPS = 256  # groups of pieces whose mass outside a list is estimated


class OutsideMass:
    """Estimates, at each step, the probability mass of the pieces a sentence's list leaves
    out (module docstring), for one output layer and frequent list.

    Only pieces outside the frequent list can be left out. They are grouped by k-means over
    their output rows (weights and bias), and ``rows`` holds each group's mean row, int8 where
    the output layer is; a sentence's estimate of a group is that row's logit plus the log of
    how many of the group's pieces its list lacks.
    """

    def __init__(self, output: nn.Module, always_listed: np.ndarray) -> None:
        weight, bias = _output_rows(output)
        outside = torch.ones(len(weight), dtype=torch.bool)
        outside[torch.from_numpy(always_listed)] = False
        outside &= torch.isfinite(bias)  # pieces never produced have no mass
        pieces = outside.nonzero()[:, 0]
        rows = torch.cat([weight[pieces], bias[pieces, None]], dim=1)
        count = min(OUTSIDE_GROUPS, len(pieces))
        groups = _kmeans(rows, count)
        self.sizes = torch.bincount(groups, minlength=count)
        means = (torch.zeros(count, rows.size(1)).index_add_(0, groups, rows)
                 / self.sizes.clamp(min=1)[:, None])
        self.group_of = torch.full((len(weight),), -1, dtype=torch.long)
        self.group_of[pieces] = groups
        # None when every piece is always listed
        self.rows = _layer_like(output, means[:, :-1], means[:, -1]) if count else None

    def log_left_out(self, candidates: np.ndarray) -> Tensor:
        """(groups,) the log of how many pieces of each group ``candidates`` lack (-inf: none)."""
        groups = self.group_of[torch.from_numpy(candidates)]
        listed = torch.bincount(groups[groups >= 0], minlength=len(self.sizes))
        return (self.sizes - listed).float().log()


_OUTSIDE_MASSES: "weakref.WeakKeyDictionary[nn.Module, dict[bytes, OutsideMass]]" = (
    weakref.WeakKeyDictionary())


def outside_mass(output: nn.Module, frequent: np.ndarray) -> OutsideMass:
    """The ``OutsideMass`` of ``output`` with ``frequent`` always listed, made once per layer
    and list (a server's batches share it)."""
    masses = _OUTSIDE_MASSES.setdefault(output, {})
    key = frequent.tobytes()
    if key not in masses:
        masses[key] = OutsideMass(output, np.concatenate([np.arange(SPECIALS), frequent]))
    return masses[key]


def _kmeans(rows: Tensor, count: int, rounds: int = 20) -> Tensor:
    """Each row's group (N,) among ``count`` by k-means, from a fixed start (the same groups on
    every run; the process's random state is untouched)."""
    if count == 0:
        return torch.zeros(0, dtype=torch.long)

    def nearest(centres: Tensor) -> Tensor:  # |row - centre|^2 less |row|^2, one matmul
        return ((centres * centres).sum(dim=1) - 2 * rows @ centres.t()).argmin(dim=1)

    start = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:count]
    centres = rows[start]
    for _ in range(rounds):
        groups = nearest(centres)
        sums = torch.zeros_like(centres).index_add_(0, groups, rows)
        sizes = torch.bincount(groups, minlength=count)[:, None]
        centres = torch.where(sizes > 0, sums / sizes.clamp(min=1), centres)
    return nearest(centres)


class ShortlistedEncoded(NamedTuple):
    """A batch's encoding with what each sentence adds to its output layer's columns: 0 on
    its candidates among the batch's union and -inf on the others, then, on the
    ``OutsideMass`` groups' columns, the log of how many pieces of each it lacks."""

    inner: Encoded
    offsets: Tensor  # (B, U + groups)

    @property
    def states(self) -> Tensor:
        return self.inner.states

    @property
    def step_layers(self) -> list[StepLayer] | None:
        return self.inner.step_layers

    def with_step_layers(self, layers: list[StepLayer] | None) -> "ShortlistedEncoded":
        return self._replace(inner=self.inner.with_step_layers(layers))

    def select(self, index: Tensor) -> "ShortlistedEncoded":
        return ShortlistedEncoded(self.inner.select(index), self.offsets.index_select(0, index))

    def joined(self, other: "ShortlistedEncoded") -> "ShortlistedEncoded":
        return ShortlistedEncoded(self.inner.joined(other.inner),
                                  torch.cat([self.offsets, other.offsets]))


@dataclass(frozen=True)
class Shortlist:
    """A table with the decode settings that choose each sentence's candidates."""

    table: ShortlistTable
    per_source: int
    frequent: int

    def candidates(self, sentence: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.table.candidates(sentence, self.per_source, self.frequent)

    def for_batch(self, model: nn.Module, sentences: Sequence[Sequence[int] | np.ndarray]
                  ) -> "ShortlistedModel":
        """``model`` decoding ``sentences`` over the union of their candidates."""
        candidates = {tuple(np.asarray(s).tolist()): self.candidates(s) for s in sentences}
        union = np.unique(np.concatenate(list(candidates.values())))
        return ShortlistedModel(model, candidates, union, self.outside_mass(model))

    def outside_mass(self, model: nn.Module) -> OutsideMass:
        """``model``'s ``OutsideMass`` for these settings, made on the first call (a
        translator asks when it is built, so that its first batch does not wait for it)."""
        return outside_mass(model.decoder.output, self.table.frequent[:self.frequent])


class ShortlistedModel(nn.Module):
    """``model`` decoding one batch of sentences over the union of their candidates (module
    docstring): search sees a vocabulary of ``len(union)`` positions, and each sentence's
    log-probabilities are normalised over its candidates and the estimated mass of what it
    left out."""

    def __init__(self, model: nn.Module, candidates: dict[tuple[int, ...], np.ndarray],
                 union: np.ndarray, mass: OutsideMass) -> None:
        """``candidates``: each sentence's (token ids, no EOS) candidate ids; ``union``: all
        of them, ascending."""
        super().__init__()
        if not np.array_equal(union[:SPECIALS], np.arange(SPECIALS)):
            raise ValueError("a shortlist union must start with the special pieces")
        self.model, self.candidates, self.union, self.mass = model, candidates, union, mass
        self.register_buffer("output_ids", torch.from_numpy(union), persistent=False)
        # one matmul gives the union's logits and the groups' (``OutsideMass``)
        self.output = _output_columns(model.decoder.output, self.output_ids, mass.rows)

    def forward(self, *inputs: Tensor, **options: Tensor | None) -> Tensor:
        """The teacher-forced logits of the whole vocabulary (a perplexity stays comparable)."""
        return self.model(*inputs, **options)

    def encode(self, src_ids: Tensor, src_lengths: Tensor, *, for_search: bool = False
               ) -> tuple[ShortlistedEncoded, DecoderState]:
        encoded, state = self.model.encode(src_ids, src_lengths, for_search=for_search)
        offsets = torch.full((len(src_ids), len(self.union) + len(self.mass.sizes)),
                             float("-inf"))
        for row, (sentence, length) in enumerate(zip(src_ids.cpu().numpy(),
                                                     src_lengths.tolist())):
            own = self.candidates[tuple(sentence[:length - 1])]
            offsets[row, torch.from_numpy(np.searchsorted(self.union, own))] = 0.0
            offsets[row, len(self.union):] = self.mass.log_left_out(own)
        return ShortlistedEncoded(encoded, offsets.to(src_ids.device)), state

    def decode_step(self, prev_tokens: Tensor, state: DecoderState,
                    encoded: ShortlistedEncoded) -> Step:
        """Log-probabilities (B G, U) in fp32 over the union's positions (``output_ids``);
        ``prev_tokens`` are positions in it."""
        beams = prev_tokens.size(0) // encoded.offsets.size(0)
        real = self.output_ids.to(prev_tokens.device)[prev_tokens]
        vectors, state, weights = self.model.step_vectors(real, state, encoded.inner)
        offsets = encoded.offsets.repeat_interleave(beams, dim=0)
        scores = self.output.log_softmax(vectors, offsets)
        return Step(scores[:, :len(self.union)], state, weights)


def _output_rows(output: nn.Module) -> tuple[Tensor, Tensor]:
    """The fp32 weights (V, O) and bias (V,) of an output layer, int8 (``s2s.model.int8``)
    or not."""
    weight = output.float_weight() if isinstance(output, Int8Linear) else output.weight
    bias = output.bias if output.bias is not None else torch.zeros(len(weight))
    return weight.detach().float().cpu(), bias.detach().float().cpu()


def _layer_like(output: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    """A layer of these ``weight`` and ``bias``, of the kind, dtype and device of ``output``."""
    if isinstance(output, Int8Linear):
        return Int8Linear(weight, bias).to(output.weight_t.device)
    # skip_init: no draw from the process's RNG
    layer = skip_init(OutputLayer, weight.size(1), len(weight), device=output.weight.device,
                      dtype=output.weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer.requires_grad_(False)


def _output_columns(output: nn.Module, ids: Tensor, extra: nn.Module | None) -> nn.Module:
    """The output layer restricted to the target ids ``ids``, followed by ``extra``'s outputs
    (a layer ``_layer_like`` made for it) in the same matmul: an ``nn.Linear`` of their rows,
    or an int8 layer's (``s2s.model.int8``) rows as they are, not quantised again."""
    if isinstance(output, Int8Linear):
        restricted = output.rows(ids)
        return restricted if extra is None else restricted.joined(extra)
    weight = output.weight[ids]
    bias = output.bias[ids] if output.bias is not None else weight.new_zeros(len(ids))
    if extra is not None:
        weight, bias = torch.cat([weight, extra.weight]), torch.cat([bias, extra.bias])
    return _layer_like(output, weight, bias)
