"""A vocabulary shortlist: each sentence decodes over the target pieces likely to appear in
its translation, not the whole vocabulary.

The table (built once from a run's prepared training pairs, stored in the run as
``data/shortlist.npz``) lists, for every source piece, the target pieces that co-occur with it
most strongly, and the target pieces by frequency. Association is c(s, t) log(N c(s, t) /
(c(s) c(t))) over the N sentence pairs: pointwise mutual information weighted by the count,
which covered the fp32 translations' pieces better than the Dice coefficient or p(t | s) at the
same size (BENCHMARKS.md, "Shortlist"). A sentence's candidates are the special
pieces, the ``frequent`` most frequent pieces and the ``per_source`` best of each of its
source pieces.

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

import hashlib
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from s2s.data.store import EncodedSide, EncodedSplit
from s2s.errors import CheckpointError
from s2s.model.int8 import Int8Linear
from s2s.model.seq2seq import DecoderState, Encoded
from s2s.model.step_layers import StepLayer
from s2s.tokens import SPECIAL_PIECES

STORED_PER_SOURCE = 100  # the table keeps this many per source piece; decoding uses fewer
STORED_FREQUENT = 2000
MAX_PAIRS = 2_000_000  # pairs counted (a sample of the rest adds little)
COUNTED_AT_ONCE = 100_000  # pairs whose co-occurrences are counted in one vectorised step
SPECIALS = len(SPECIAL_PIECES)  # their ids come first in every candidate list
OUTSIDE_GROUPS = 256  # groups of pieces whose mass outside a list is estimated


def vocabulary_fingerprint(src_model: bytes, tgt_model: bytes) -> str:
    """What ties a table to the vocabularies it was counted in."""
    return hashlib.sha256(src_model + b"\0" + tgt_model).hexdigest()[:16]


@dataclass(frozen=True)
class ShortlistTable:
    """Per source piece, its associated target pieces, best first (-1: none); and target
    pieces by frequency."""

    ranked: np.ndarray  # (source vocabulary, STORED_PER_SOURCE) int32
    frequent: np.ndarray  # (STORED_FREQUENT,) int32
    fingerprint: str

    def candidates(self, sentence: Sequence[int] | np.ndarray, per_source: int,
                   frequent: int) -> np.ndarray:
        """A sentence's candidate target ids, ascending (so the specials, 0..3, come first)."""
        rows = self.ranked[np.asarray(sentence, dtype=np.int64), :per_source].ravel()
        found = np.concatenate([np.arange(SPECIALS), self.frequent[:frequent], rows])
        return np.unique(found[found >= 0]).astype(np.int64)

    def save(self, path: Path) -> None:
        """Written whole or not at all."""
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, ranked=self.ranked, frequent=self.frequent,
                         fingerprint=np.array(self.fingerprint))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> "ShortlistTable":
        """The table at ``path``; refused unless it was counted in these vocabularies."""
        with np.load(path) as stored:
            table = cls(stored["ranked"], stored["frequent"], str(stored["fingerprint"]))
        if table.fingerprint != fingerprint:
            raise CheckpointError(f"{path}: this shortlist was built for other vocabularies "
                                  "than the model's; delete it to build it again")
        return table


def build_table(pairs: EncodedSplit, vocab_sizes: tuple[int, int], fingerprint: str
                ) -> ShortlistTable:
    """Count which target pieces co-occur with each source piece in ``pairs`` (up to
    MAX_PAIRS) and rank them by association (module docstring)."""
    source_size, target_size = vocab_sizes
    count = min(len(pairs), MAX_PAIRS)
    keys, source_counts = [], np.zeros(source_size, dtype=np.int64)
    target_counts = np.zeros(target_size, dtype=np.int64)
    for start in range(0, count, COUNTED_AT_ONCE):
        stop = min(start + COUNTED_AT_ONCE, count)
        source_of, source_ids = _distinct_per_sentence(pairs.src, start, stop, source_size)
        target_of, target_ids = _distinct_per_sentence(pairs.tgt, start, stop, target_size)
        source_counts += np.bincount(source_ids, minlength=source_size)
        target_counts += np.bincount(target_ids, minlength=target_size)
        keys.append(_counted(_co_occurrences(source_of, source_ids, target_of, target_ids,
                                             stop - start, target_size)))
    joined, together = _merged(keys)
    source_ids, target_ids = joined // target_size, joined % target_size
    expected = source_counts[source_ids] * target_counts[target_ids] / max(count, 1)
    association = together * np.log(together / expected)
    order = np.lexsort((target_ids, -association, source_ids))  # by source, best first
    source_ids, target_ids = source_ids[order], target_ids[order]
    starts = np.searchsorted(source_ids, np.arange(source_size))
    rank = np.arange(len(source_ids)) - starts[source_ids]
    kept = rank < STORED_PER_SOURCE
    ranked = np.full((source_size, STORED_PER_SOURCE), -1, dtype=np.int32)
    ranked[source_ids[kept], rank[kept]] = target_ids[kept]
    frequent = np.argsort(-target_counts, kind="stable")[:STORED_FREQUENT].astype(np.int32)
    return ShortlistTable(ranked, frequent, fingerprint)


def _distinct_per_sentence(side: EncodedSide, start: int, stop: int, size: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids of sentences ``start`` to ``stop``: (sentence - start, id) pairs,
    by sentence, then id."""
    ids = np.asarray(side.ids[side.offsets[start]:side.offsets[stop]], dtype=np.int64)
    sentence = np.repeat(np.arange(stop - start), np.diff(side.offsets[start:stop + 1]))
    keys = np.sort(sentence * size + ids)  # runs by sentence already: a cheap sort
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    return keys // size, keys % size


def _co_occurrences(source_of: np.ndarray, source_ids: np.ndarray, target_of: np.ndarray,
                    target_ids: np.ndarray, sentences: int, target_size: int) -> np.ndarray:
    """source id x target_size + target id for every distinct source id and distinct target
    id of the same pair: each source entry repeated once per target of its pair."""
    targets_per_pair = np.bincount(target_of, minlength=sentences)
    first_target = np.cumsum(targets_per_pair) - targets_per_pair
    repeats = targets_per_pair[source_of]
    block_start = np.repeat(first_target[source_of], repeats)
    within = np.arange(int(repeats.sum())) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    return np.repeat(source_ids, repeats) * target_size + target_ids[block_start + within]


def _counted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(keys, return_counts=True)


def _merged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum the counts of equal keys across chunks."""
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique))


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

    gives_log_probs = True

    def __init__(self, model: nn.Module, candidates: dict[tuple[int, ...], np.ndarray],
                 union: np.ndarray, mass: OutsideMass) -> None:
        """``candidates``: each sentence's (token ids, no EOS) candidate ids; ``union``: all
        of them, ascending."""
        super().__init__()
        if not np.array_equal(union[:SPECIALS], np.arange(SPECIALS)):
            raise ValueError("a shortlist union must start with the special pieces")
        self.model, self.candidates, self.union, self.mass = model, candidates, union, mass
        self.register_buffer("union_ids", torch.from_numpy(union), persistent=False)
        # one matmul gives the union's logits and the groups' (``OutsideMass``)
        self.output = _output_columns(model.decoder.output, self.union_ids, mass.rows)

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
                    encoded: ShortlistedEncoded) -> tuple[Tensor, DecoderState, Tensor]:
        """Log-probabilities (B G, U) over the union; ``prev_tokens`` are positions in it."""
        beams = prev_tokens.size(0) // encoded.offsets.size(0)
        real = self.union_ids.to(prev_tokens.device)[prev_tokens]
        vectors, state, weights = self.model.decoder(real[:, None], state, encoded.inner)
        offsets = encoded.offsets.repeat_interleave(beams, dim=0)
        if isinstance(self.output, Int8Linear):
            scores = self.output.log_softmax(vectors[:, 0], offsets)
        else:
            scores = torch.log_softmax(self.output(vectors[:, 0]).float() + offsets, dim=1)
        return scores[:, :len(self.union)], state, weights[:, 0]


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
    layer = skip_init(nn.Linear, weight.size(1), len(weight), device=output.weight.device,
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


def shortlist_path(data_directory: Path) -> Path:
    return data_directory / "shortlist.npz"


def load_or_build_table(data_directory: Path, fingerprint: str, vocab_sizes: tuple[int, int],
                        pairs: Callable[[], EncodedSplit]) -> tuple[ShortlistTable, bool]:
    """The run's table, built from ``pairs()`` and stored when it has none yet; and whether it
    was built now."""
    path = shortlist_path(data_directory)
    if path.exists():
        return ShortlistTable.load(path, fingerprint), False
    table = build_table(pairs(), vocab_sizes, fingerprint)
    table.save(path)
    return table, True
