"""A training corpus streamed in fixed chunks of raw line pairs, and the work done on each.

`s2s prepare` reads the training pairs three times (filter and find duplicates, sample the
vocabulary's sentences, encode) without ever holding the corpus: each pass walks the two files
in lockstep, in chunks of ``CHUNK_PAIRS`` pairs. The chunk boundaries never depend on the
machine, and a pool of worker processes hands results back in chunk order, so the prepared
files are the same whatever the worker count. The functions that run on a chunk
(``scan_chunk``, ``encode_chunk``) are plain functions of their inputs: a worker process runs
them exactly as the main process does when there is one worker.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from s2s.data.text import (
    DAMAGED,
    Normalization,
    damaged_error,
    decode_line,
    has_control_characters,
    in_wrong_script,
    normalize,
    open_stream,
)
from s2s.data.vocab import Tokenizer
from s2s.errors import DataError

CHUNK_PAIRS = 20_000
AHEAD_PER_WORKER = 2  # chunks read ahead of the results, per worker
# what scan_chunk says of each pair (and DUPLICATE: what the first pass finds of some kept ones)
KEPT, EMPTY, TOO_LONG, DUPLICATE, WRONG_SCRIPT, CONTROL_CHARACTERS = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Chunk:
    """Consecutive raw pairs of one corpus file pair: ``first_line`` is the 1-based line of
    the first in its files, ``start`` its position among all the training pairs (several
    corpora are read one after another)."""

    first_line: int
    start: int
    sources: list[bytes]
    targets: list[bytes]

    def part(self, per_pair: np.ndarray) -> np.ndarray:
        """This chunk's entries of an array with one entry per training pair."""
        return per_pair[self.start:self.start + len(self.sources)]


@dataclass(frozen=True)
class TextRules:
    """How a raw pair becomes text and which text filters it must pass."""

    src_normalization: Normalization
    tgt_normalization: Normalization
    invalid_utf8: str  # error or replace
    max_chars: int
    paths: tuple[str, str]  # for error messages
    # every corpus's tag, with the option that sets it: no text may contain one
    tags: tuple[tuple[str, str], ...] = ()
    # the languages whose script each side must be in (data.script_filter), or None: no check
    script_languages: tuple[str, str] | None = None


def read_chunks(paths: tuple[Path, Path], start: int = 0) -> Iterator[Chunk]:
    """The pairs of a parallel corpus in chunks, the first at position ``start``; a side that
    ends before the other, or compressed data that breaks off, is a DataError naming the file
    and line."""
    with open_stream(paths[0]) as sources, open_stream(paths[1]) as targets:
        line = 1
        while True:
            chunk_src = _read_lines(sources, paths[0], line)
            chunk_tgt = _read_lines(targets, paths[1], line)
            if len(chunk_src) != len(chunk_tgt):
                shorter, longer = (paths[0], paths[1]) if len(chunk_src) < len(chunk_tgt) else (
                    paths[1], paths[0])
                last = line + min(len(chunk_src), len(chunk_tgt)) - 1
                raise DataError(f"{shorter}: ends after line {last} but {longer} goes on; "
                                "parallel files must align line by line")
            if not chunk_src:
                return
            yield Chunk(line, start + line - 1, chunk_src, chunk_tgt)
            line += len(chunk_src)


def scan_chunk(rules: TextRules, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, int]:
    """Each pair's fate under the text filters (KEPT, EMPTY, TOO_LONG, WRONG_SCRIPT,
    CONTROL_CHARACTERS), the 64-bit hashes of
    the kept pairs' normalised text (for duplicates), and how many lines had invalid UTF-8."""
    status = np.zeros(len(chunk.sources), dtype=np.uint8)
    hashes = np.zeros(len(chunk.sources), dtype=np.uint64)
    replaced = 0
    for index, (raw_src, raw_tgt) in enumerate(zip(chunk.sources, chunk.targets)):
        source, target, bad = pair_text(rules, chunk.first_line + index, raw_src, raw_tgt)
        replaced += bad
        _check_no_tags(rules, chunk.first_line + index, source, target)
        if not source or not target:
            status[index] = EMPTY
        elif max(len(source), len(target)) > rules.max_chars:
            status[index] = TOO_LONG
        elif rules.script_languages and (
                in_wrong_script(source, rules.script_languages[0])
                or in_wrong_script(target, rules.script_languages[1])):
            status[index] = WRONG_SCRIPT
        elif rules.script_languages and (
                has_control_characters(source) or has_control_characters(target)):
            status[index] = CONTROL_CHARACTERS
        else:
            digest = hashlib.blake2b(source.encode() + b"\0" + target.encode(), digest_size=8)
            hashes[index] = int.from_bytes(digest.digest(), "little")
    return status, hashes, replaced


@dataclass(frozen=True)
class TokenRules:
    """The token filters, and how ids are stored."""

    max_tokens: int
    max_length_ratio: float
    dtypes: tuple[type, type]  # of the source and target ids


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk's pairs that pass every filter, as flat ids and lengths per side, and how many
    pairs each token filter dropped."""

    ids: tuple[np.ndarray, np.ndarray]
    lengths: tuple[np.ndarray, np.ndarray]
    too_many_tokens: int
    length_ratio: int


def encode_chunk(rules: TextRules, token_rules: TokenRules, protos: tuple[bytes, bytes],
                 chunk: Chunk, kept: np.ndarray, tag_id: int | None = None) -> EncodedChunk:
    """Encode the pairs ``kept`` (a mask over the chunk) marks with the sentencepiece models
    ``protos``, each source after the piece ``tag_id`` when the corpus has a tag, and apply
    the token filters; numpy arrays travel back from a worker cheaply."""
    sources, targets = [], []
    for index in np.flatnonzero(kept):
        source, target, _ = pair_text(rules, chunk.first_line + int(index),
                                      chunk.sources[index], chunk.targets[index])
        sources.append(source)
        targets.append(target)
    encoded = (Tokenizer(protos[0]).encode(sources), Tokenizer(protos[1]).encode(targets))
    if tag_id is not None:
        encoded = ([[tag_id, *ids] for ids in encoded[0]], encoded[1])
    lengths = [np.fromiter(map(len, side), dtype=np.int64, count=len(side)) for side in encoded]
    shorter, longer = np.minimum(*lengths), np.maximum(*lengths)
    too_long = longer > token_rules.max_tokens
    unbalanced = ~too_long & (longer > token_rules.max_length_ratio * np.maximum(shorter, 1))
    passing = ~(too_long | unbalanced)
    ids = tuple(np.fromiter(itertools.chain.from_iterable(itertools.compress(side, passing)),
                            dtype=dtype, count=int(side_lengths[passing].sum()))
                for side, side_lengths, dtype in zip(encoded, lengths, token_rules.dtypes))
    return EncodedChunk(ids, (lengths[0][passing], lengths[1][passing]),  # type: ignore[arg-type]
                        int(too_long.sum()), int(unbalanced.sum()))


def pair_text(rules: TextRules, line: int, raw_src: bytes, raw_tgt: bytes
              ) -> tuple[str, str, int]:
    """One pair as normalised text, and how many of its two lines had invalid UTF-8."""
    source, bad_src = _decoded(raw_src, rules, 0, line)
    target, bad_tgt = _decoded(raw_tgt, rules, 1, line)
    return (normalize(source, rules.src_normalization),
            normalize(target, rules.tgt_normalization), bad_src + bad_tgt)


def _check_no_tags(rules: TextRules, line: int, source: str, target: str) -> None:
    """A tag that occurs in the text would be read as that tag: refuse it."""
    for tag, option in rules.tags:
        for side, text in ((0, source), (1, target)):
            if tag in text:
                raise DataError(f"{rules.paths[side]}:{line}: the text contains {tag!r}, the tag "
                                f"{option} sets; a tag must never occur in the text: choose "
                                "another")


def in_order(work: Callable[..., Any], items: Iterator[tuple], workers: int) -> Iterator[Any]:
    """``work(*item)`` for every item, results in item order, on ``workers`` processes (in
    this process when there is one, or only one item: starting processes costs more than a
    chunk). ``work`` must be a module-level function.

    At most ``AHEAD_PER_WORKER`` items per worker are read ahead of the results taken:
    ``Pool.imap`` feeds its task queue from the input as fast as it can read it, so workers
    slower than the reader would leave the corpus piling up in memory.
    """
    first = list(itertools.islice(items, 2))
    items = itertools.chain(first, items)
    if workers <= 1 or len(first) < 2:
        yield from (work(*item) for item in items)
        return
    context = multiprocessing.get_context("spawn")  # no inherited threads or locks
    with context.Pool(workers) as pool:
        pending: collections.deque[Any] = collections.deque()
        for item in items:
            pending.append(pool.apply_async(work, item))
            if len(pending) >= AHEAD_PER_WORKER * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, so `taskset` is honoured); the same
    count as s2s.device's, without importing torch into `s2s prepare` and its workers."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _decoded(raw: bytes, rules: TextRules, side: int, line: int) -> tuple[str, int]:
    raw = raw.rstrip(b"\n").rstrip(b"\r") if raw.endswith(b"\n") else raw
    text, bad = decode_line(raw, rules.paths[side], line, rules.invalid_utf8)
    return text, int(bad)


def _read_lines(stream: BinaryIO, path: Path, first_line: int) -> list[bytes]:
    lines = []
    try:
        for _ in range(CHUNK_PAIRS):
            line = stream.readline()
            if not line:
                break
            lines.append(line)
    except DAMAGED as error:
        raise damaged_error(path, first_line + len(lines) - 1, error) from None
    return lines
