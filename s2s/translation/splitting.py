"""Splitting a source line that is longer than the model's limit into pieces it handles.

Training drops pairs over ``data.max_tokens`` subwords, so the model has never seen longer
inputs and its output limit (a x source length + b) would be reached early on them. A long line
is therefore cut at sentence boundaries (sentences packed greedily up to the limit), a sentence
that is still too long at spaces between words, and a run without spaces (Chinese, Japanese)
between characters; the pieces' translations are joined again by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

# end of a sentence: terminal punctuation and closing quotes/brackets, then a space; full-width
# terminal punctuation ends a sentence even without a space
_SENTENCE_END = re.compile(r"(?<=[.!?…][\"'”’»)\]])\s+|(?<=[.!?…])\s+|(?<=[。！？])")

Encode = Callable[[str], list[int]]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (never empty strings); text without an ending is one sentence."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


@dataclass(frozen=True)
class SourcePiece:
    """Part of a line: the ids of ``text`` encoded alone, or (a word over the limit, cut)
    ids ``start`` onwards of its encoding."""

    text: str
    ids: list[int]
    start: int = 0


def split_to_limit(text: str, encode: Encode, limit: int) -> list[SourcePiece]:
    """``text`` in pieces of at most ``limit`` tokens, in order, each at most a few sentences
    or words of it.

    The pieces' ids are those of their own text, encoded alone, so each piece is a
    well-formed input; a line within the limit comes back whole.
    """
    ids = encode(text)
    if len(ids) <= limit:
        return [SourcePiece(text, ids)]
    pieces: list[SourcePiece] = []
    for part in _pack(split_sentences(text), " ", encode, limit):
        part_ids = encode(part)
        if len(part_ids) <= limit:
            pieces.append(SourcePiece(part, part_ids))
            continue
        words = part.split(" ")
        units, glue = (words, " ") if len(words) > 1 else (list(part), "")
        for chunk in _pack(units, glue, encode, limit):
            chunk_ids = encode(chunk)
            # a single unit over the limit (a very long "word"): cut its ids
            pieces.extend(SourcePiece(chunk, chunk_ids[start:start + limit], start)
                          for start in range(0, len(chunk_ids), limit))
    return pieces


def _pack(units: Sequence[str], glue: str, encode: Encode, limit: int) -> list[str]:
    """Join consecutive units with ``glue`` into as few strings as fit within ``limit``."""
    packed: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}{glue}{unit}" if current else unit
        if current and len(encode(candidate)) > limit:
            packed.append(current)
            current = unit
        else:
            current = candidate
    if current:
        packed.append(current)
    return packed
