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
sentence's other columns are -inf, so its distribution is renormalised over its own
candidates and its translation does not depend on its batch. (Renormalising over the whole
union instead scored higher on one model, but would let other sentences of the batch, in a
server other clients' lines, change a translation.)
Search works in positions of the union, where the special pieces keep their ids (they come
first); ``decode_corpus`` maps the results back to vocabulary ids.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from s2s.data.store import EncodedSplit
from s2s.errors import CheckpointError
from s2s.model.seq2seq import DecoderState, Encoded
from s2s.model.step_layers import StepLayer

STORED_PER_SOURCE = 100  # the table keeps this many per source piece; decoding uses fewer
STORED_FREQUENT = 2000
MAX_PAIRS = 2_000_000  # pairs counted (a sample of the rest adds little)
SPECIALS = 4  # pad, unk, bos, eos: ids 0..3, first in every candidate list


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
    for start in range(0, count, 20_000):
        chunk = []
        for index in range(start, min(start + 20_000, count)):
            source = np.unique(pairs.src.sentence(index)).astype(np.int64)
            target = np.unique(pairs.tgt.sentence(index)).astype(np.int64)
            source_counts[source] += 1
            target_counts[target] += 1
            chunk.append((source[:, None] * target_size + target[None, :]).ravel())
        keys.append(_counted(np.concatenate(chunk) if chunk else np.zeros(0, np.int64)))
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


def _counted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(keys, return_counts=True)


def _merged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum the counts of equal keys across chunks."""
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique))


class ShortlistedEncoded(NamedTuple):
    """A batch's encoding with, per sentence, 0 on its candidates' columns of the batch's
    union and -inf on the others."""

    inner: Encoded
    outside: Tensor  # (B, U)

    @property
    def states(self) -> Tensor:
        return self.inner.states

    @property
    def step_layers(self) -> list[StepLayer] | None:
        return self.inner.step_layers

    def with_step_layers(self, layers: list[StepLayer] | None) -> "ShortlistedEncoded":
        return self._replace(inner=self.inner.with_step_layers(layers))

    def select(self, index: Tensor) -> "ShortlistedEncoded":
        return ShortlistedEncoded(self.inner.select(index), self.outside.index_select(0, index))

    def joined(self, other: "ShortlistedEncoded") -> "ShortlistedEncoded":
        return ShortlistedEncoded(self.inner.joined(other.inner),
                                  torch.cat([self.outside, other.outside]))


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
        return ShortlistedModel(model, candidates, union)


class ShortlistedModel(nn.Module):
    """``model`` decoding one batch of sentences over the union of their candidates (module
    docstring): search sees a vocabulary of ``len(union)`` positions, and each sentence's
    distribution is renormalised over its own candidates among them."""

    gives_log_probs = False

    def __init__(self, model: nn.Module, candidates: dict[tuple[int, ...], np.ndarray],
                 union: np.ndarray) -> None:
        """``candidates``: each sentence's (token ids, no EOS) candidate ids; ``union``: all
        of them, ascending."""
        super().__init__()
        if not np.array_equal(union[:SPECIALS], np.arange(SPECIALS)):
            raise ValueError("a shortlist union must start with the special pieces")
        self.model, self.candidates, self.union = model, candidates, union
        self.register_buffer("union_ids", torch.from_numpy(union), persistent=False)
        self.output = _output_columns(model.decoder.output, self.union_ids)

    def forward(self, *inputs: Tensor, **options: Tensor | None) -> Tensor:
        """The teacher-forced logits of the whole vocabulary (a perplexity stays comparable)."""
        return self.model(*inputs, **options)

    def encode(self, src_ids: Tensor, src_lengths: Tensor, *, for_search: bool = False
               ) -> tuple[ShortlistedEncoded, DecoderState]:
        encoded, state = self.model.encode(src_ids, src_lengths, for_search=for_search)
        outside = torch.full((len(src_ids), len(self.union)), float("-inf"))
        for row, (sentence, length) in enumerate(zip(src_ids.cpu().numpy(),
                                                     src_lengths.tolist())):
            own = np.searchsorted(self.union, self.candidates[tuple(sentence[:length - 1])])
            outside[row, torch.from_numpy(own)] = 0.0
        return ShortlistedEncoded(encoded, outside.to(src_ids.device)), state

    def decode_step(self, prev_tokens: Tensor, state: DecoderState,
                    encoded: ShortlistedEncoded) -> tuple[Tensor, DecoderState, Tensor]:
        """Logits (B G, U) over the union; ``prev_tokens`` are positions in it."""
        beams = prev_tokens.size(0) // encoded.outside.size(0)
        real = self.union_ids.to(prev_tokens.device)[prev_tokens]
        vectors, state, weights = self.model.decoder(real[:, None], state, encoded.inner)
        logits = self.output(vectors[:, 0]).float()
        logits += encoded.outside.repeat_interleave(beams, dim=0)
        return logits, state, weights[:, 0]


def _output_columns(output: nn.Module, ids: Tensor) -> nn.Module:
    """The output layer restricted to the target ids ``ids``: an ``nn.Linear`` of their rows,
    or an int8 layer's (``s2s.model.int8``) rows as they are, not quantised again."""
    if isinstance(output, nn.Linear):
        restricted = nn.Linear(output.in_features, len(ids), bias=output.bias is not None)
        restricted.to(output.weight.device, output.weight.dtype)
        with torch.no_grad():
            restricted.weight.copy_(output.weight[ids])
            if output.bias is not None:
                restricted.bias.copy_(output.bias[ids])
        return restricted.requires_grad_(False)
    return output.rows(ids)


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
