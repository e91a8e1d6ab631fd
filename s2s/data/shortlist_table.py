"""The vocabulary shortlist's table, counted from a run's prepared training pairs: for every
source piece, the target pieces that co-occur with it most strongly, and the target pieces by
frequency. Stored in the run as ``data/shortlist.npz`` and applied at decoding time by
``s2s.model.shortlist``.

Association is c(s, t) log(N c(s, t) / (c(s) c(t))) over the N sentence pairs: pointwise
mutual information weighted by the count, which covered the fp32 translations' pieces better
than the Dice coefficient or p(t | s) at the same size (BENCHMARKS.md, "Shortlist").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from s2s.data.store import EncodedSide, EncodedSplit
from s2s.errors import CheckpointError
from s2s.files import written_whole
from s2s.tokens import SPECIAL_PIECES

STORED_PER_SOURCE = 100  # the table keeps this many per source piece; decoding uses fewer
STORED_FREQUENT = 2000
MAX_PAIRS = 2_000_000  # pairs counted (a sample of the rest adds little)
COUNTED_AT_ONCE = 100_000  # pairs whose co-occurrences are counted in one vectorised step
SPECIALS = len(SPECIAL_PIECES)  # their ids come first in every candidate list


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
        with written_whole(path) as file:
            np.savez(file, ranked=self.ranked, frequent=self.frequent,
                     fingerprint=np.array(self.fingerprint))

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
