"""Subword regularisation: training batches whose sentences are segmented anew every time.

With ``vocab.sampling_alpha`` above 0, each training sentence is cut into pieces drawn from
its sentencepiece model (unigram sampling, Kudo 2018; BPE-dropout for BPE models) whenever a
batch holds it, so the model sees many segmentations of the same text and relies less on any
one. Validation, test and translation keep the one best segmentation.

The prepared arrays hold the best segmentation; a batch's sentences are decoded back to text
and segmented again, in one worker process a few steps ahead of the training step, off its
critical path. A sentence's draw is never longer than the longest sentence of its batch as
prepared (a unigram draw is among the n best that fit; a BPE-dropout draw that does not fit
gives way to the best), so a batch keeps its padded size and a step its cost.

The draws come from a numpy generator seeded by a hash of (seed, epoch, the batch's pairs),
so a batch is segmented the same in an uninterrupted and a resumed run, and differently the
next epoch. Not from sentencepiece's own sampling: its generator is salted per process, so
two processes given one seed draw differently and a resumed run would not see the batches an
uninterrupted one saw.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from s2s.data.batching import Batch, batch_of
from s2s.data.store import EncodedSide, load_split, spm_paths


@dataclass(frozen=True)
class Resegmentation:
    """How training sentences are segmented anew (the vocab.sampling_* settings)."""

    alpha: float  # unigram: smoothing of the segmentation distribution; BPE: dropout rate
    nbest: int  # unigram: sample among the n best segmentations
    tags: tuple[str, ...]  # corpus tags: a source's leading tag piece stays as it is


class ResegmentedBatches:
    """Makes the training batches of a run whose sentences are segmented anew, in a worker
    process that keeps ``ahead`` steps ready. Close it (or use it as a context manager)."""

    def __init__(self, data_dir: Path, settings: Resegmentation, seed: int, ahead: int = 4
                 ) -> None:
        self.seed, self.ahead = seed, ahead
        # spawn: no inherited threads or locks; a worker that cannot start breaks the pool,
        # which the next result raises, rather than being started again and again
        self._pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"),
                                         initializer=_start_worker,
                                         initargs=(str(data_dir), settings))

    def steps(self, steps: Iterable[list[np.ndarray]], epoch: int) -> Iterator[list[Batch]]:
        """For each step's list of index arrays, its batches: the pairs, segmented anew."""
        pending: collections.deque[tuple[list[np.ndarray], Future]] = collections.deque()
        for step in steps:
            jobs = [(batch_seed(self.seed, epoch, indices), indices) for indices in step]
            pending.append((step, self._pool.submit(_resegment_step, jobs)))
            if len(pending) > self.ahead:
                yield _batches(*pending.popleft())
        while pending:
            yield _batches(*pending.popleft())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ResegmentedBatches":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def batch_seed(seed: int, epoch: int, indices: np.ndarray) -> int:
    """The seed of one batch's segmentations: a function of the run's seed, the epoch and the
    batch's pairs, not of when or in which process the batch is made."""
    digest = hashlib.blake2b(np.asarray([seed, epoch], dtype=np.int64).tobytes()
                             + np.ascontiguousarray(indices, dtype=np.int64).tobytes(),
                             digest_size=4)
    return int.from_bytes(digest.digest(), "little")


def _batches(step: list[np.ndarray], result: Future) -> list[Batch]:
    return [batch_of(sources, targets, indices)
            for indices, (sources, targets) in zip(step, result.result())]


# ----------------------------------------------------------------- drawing segmentations

class UnigramSampler:
    """Kudo's (2018) n-best sampling: one of a sentence's ``nbest`` best segmentations under
    a unigram model, drawn with probability proportional to exp(alpha x its log-likelihood)."""

    def __init__(self, processor: spm.SentencePieceProcessor, alpha: float, nbest: int) -> None:
        self.processor, self.alpha, self.nbest = processor, alpha, nbest
        # a segmentation's log-likelihood is its pieces' scores summed; adding them up here
        # costs a third of asking sentencepiece for its scored n-best proto
        self.scores = [processor.get_score(piece) for piece in range(len(processor))]

    def __call__(self, text: str, rng: np.random.Generator, longest: int | None = None
                 ) -> list[int]:
        """A segmentation of ``text``, drawn among the n best of at most ``longest`` pieces."""
        candidates = self.processor.nbest_encode(text, nbest_size=self.nbest, out_type=int)
        if longest is not None:
            candidates = [candidate for candidate in candidates if len(candidate) <= longest]
        if len(candidates) < 2:
            return candidates[0] if candidates else []
        scores = self.alpha * np.array([sum(map(self.scores.__getitem__, candidate))
                                        for candidate in candidates])
        cumulative = np.cumsum(np.exp(scores - scores.max()))
        drawn = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        return candidates[min(drawn, len(candidates) - 1)]


class BpeDropout:
    """BPE-dropout (Provilkov et al., 2020) over a sentencepiece BPE model: its merges in its
    order, each merge the search pops skipped with chance ``dropout``. With dropout 0 this is
    the model's own segmentation (a test holds it to sentencepiece's), so only the draws are
    s2s's: sentencepiece's sampling draws from a generator it salts per process."""

    def __init__(self, processor: spm.SentencePieceProcessor, dropout: float) -> None:
        self.processor, self.dropout = processor, dropout
        model = sentencepiece_model_pb2.ModelProto()
        model.ParseFromString(processor.serialized_model_proto())
        kinds = sentencepiece_model_pb2.ModelProto.SentencePiece
        self.pieces = {piece.piece: (index, piece.score)
                       for index, piece in enumerate(model.pieces) if piece.type == kinds.NORMAL}
        self.bytes = {int(piece.piece[3:5], 16): index for index, piece in enumerate(model.pieces)
                      if piece.type == kinds.BYTE}
        self.unknown = processor.unk_id()

    def __call__(self, text: str, rng: np.random.Generator, longest: int | None = None
                 ) -> list[int]:
        """A segmentation of ``text`` with merges dropped (``longest`` is for the caller to
        check: how long a draw will be is known only once it is made)."""
        ids: list[int] = []
        for symbol in self.symbols(self.processor.normalize(text), rng):
            entry = self.pieces.get(symbol)
            if entry is not None:
                ids.append(entry[0])
            elif self.bytes:
                ids.extend(self.bytes[value] for value in symbol.encode("utf-8"))
            else:
                ids.append(self.unknown)
        return ids

    def symbols(self, text: str, rng: np.random.Generator) -> list[str]:
        """``text`` (normalised) cut into characters and merged: always the best-scoring
        adjacent pair first (the leftmost among equals), as sentencepiece merges."""
        symbols: list[str | None] = list(text)
        following = list(range(1, len(symbols))) + [-1]
        preceding = list(range(-1, len(symbols) - 1))
        agenda: list[tuple[float, int, str]] = []

        def propose(left: int) -> None:
            right = following[left] if left >= 0 else -1
            if right < 0:
                return
            merged = symbols[left] + symbols[right]  # type: ignore[operator]
            entry = self.pieces.get(merged)
            if entry is not None:
                heapq.heappush(agenda, (-entry[1], left, merged))

        for left in range(len(symbols) - 1):
            propose(left)
        while agenda:
            _, left, merged = heapq.heappop(agenda)
            right = following[left]
            if (symbols[left] is None or right < 0
                    or symbols[left] + symbols[right] != merged):  # type: ignore[operator]
                continue  # a pair an earlier merge took apart
            if self.dropout and rng.random() < self.dropout:
                continue
            symbols[left], symbols[right] = merged, None
            following[left] = following[right]
            if following[right] >= 0:
                preceding[following[right]] = left
            propose(preceding[left])
            propose(left)
        return [symbol for symbol in symbols if symbol is not None]


# ----------------------------------------------------------------- in the worker process

_WORKER: dict[str, Any] = {}


def _start_worker(data_dir: str, settings: Resegmentation) -> None:
    # a Ctrl-C or a closed terminal is the training process's to handle: it stops the worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    split = load_split(Path(data_dir), "train")
    processors = [spm.SentencePieceProcessor(model_file=str(path))
                  for path in spm_paths(Path(data_dir))]
    tags = {processors[0].piece_to_id(tag) for tag in settings.tags}
    _WORKER.update(split=split, processors=processors, settings=settings, tags=tags,
                   samplers=[sampler_for(processor, settings) for processor in processors])


def sampler_for(processor: spm.SentencePieceProcessor, settings: Resegmentation
                ) -> UnigramSampler | BpeDropout:
    """The way ``processor``'s kind of model draws segmentations."""
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(processor.serialized_model_proto())
    if model.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE:
        return BpeDropout(processor, settings.alpha)
    return UnigramSampler(processor, settings.alpha, settings.nbest)


def _resegment_step(jobs: list[tuple[int, np.ndarray]]
                    ) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    return [_resegment(job) for job in jobs]


def _resegment(job: tuple[int, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One batch's source and target sentences, each segmented anew."""
    seed, indices = job
    split, processors, samplers = _WORKER["split"], _WORKER["processors"], _WORKER["samplers"]
    rng = np.random.default_rng(seed)
    sides = []
    for side, processor, sampler, tags in (
            (split.src, processors[0], samplers[0], _WORKER["tags"]),
            (split.tgt, processors[1], samplers[1], set())):
        # no draw outgrows the batch's longest sentence: the batch keeps its padded size
        longest = int(max(side.lengths[indices]))
        sides.append([resegmented(side, int(index), processor, sampler, rng, longest, tags)
                      for index in indices])
    return sides[0], sides[1]


def resegmented(side: EncodedSide, index: int, processor: spm.SentencePieceProcessor,
                sampler: UnigramSampler | BpeDropout, rng: np.random.Generator,
                longest: int, tags: set[int]) -> np.ndarray:
    """Sentence ``index`` of ``side`` cut into at most ``longest`` pieces drawn by
    ``sampler`` (its leading tag piece kept and counted), or as it is when no such draw
    came."""
    best = side.sentence(index)
    tagged = len(best) > 0 and int(best[0]) in tags
    drawn = sampler(processor.decode(best[int(tagged):].tolist()), rng, longest - tagged)
    if len(drawn) + tagged > longest:
        return best
    return np.asarray(best[:1].tolist() + drawn if tagged else drawn, dtype=best.dtype)
