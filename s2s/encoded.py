"""The prepared-data format: token ids of a split as one flat numpy array plus offsets.

A split of N pairs is stored per side as ``<split>.<side>.ids.npy`` (all sentences'
ids concatenated, uint16 when the vocabulary fits, else int32) and ``<split>.<side>.offsets.npy``
(N+1 int64). Loading 100k pairs is a few small file reads, with no re-tokenising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDES = ("src", "tgt")


@dataclass(frozen=True)
class EncodedSide:
    ids: np.ndarray  # (total_tokens,)
    offsets: np.ndarray  # (N + 1,)

    @classmethod
    def from_lists(cls, sentences: list[list[int]], vocab_size: int) -> "EncodedSide":
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((token for s in sentences for token in s), dtype=dtype,
                          count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sentence(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index]:self.offsets[index + 1]]


@dataclass(frozen=True)
class EncodedSplit:
    src: EncodedSide
    tgt: EncodedSide

    def __len__(self) -> int:
        return len(self.src)


def save_split(directory: Path, split: str, encoded: EncodedSplit) -> None:
    for side in SIDES:
        part: EncodedSide = getattr(encoded, side)
        np.save(directory / f"{split}.{side}.ids.npy", part.ids)
        np.save(directory / f"{split}.{side}.offsets.npy", part.offsets)


def load_split(directory: Path, split: str) -> EncodedSplit:
    sides = [EncodedSide(np.load(directory / f"{split}.{side}.ids.npy"),
                         np.load(directory / f"{split}.{side}.offsets.npy")) for side in SIDES]
    return EncodedSplit(*sides)
