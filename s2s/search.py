"""Greedy and beam search: free functions over a model's ``encode`` and ``decode_step``.

Both are batched with no Python loop over sentences or beams inside a step. The encoder runs
once per batch, and a sentence's beams share its encoder states. Sentences that are done leave
the batch (in steps of a few bucket sizes, see ``_rows_to_keep``), so the rest of the batch
stops paying for them. Beam search keeps 2K candidates per step so that K hypotheses stay alive
after some of them end (as fairseq does) and stops a sentence once K hypotheses have ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from s2s.batching import pad, token_batches
from s2s.config import DecodeConfig
from s2s.model import Seq2Seq
from s2s.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without BOS/EOS
    score: float  # log-probability, length-penalised for beam search
    # only when asked for: (len(tokens) + 1, source length + 1) attention weights, the last
    # row the step that chose EOS, the last column the source EOS
    attention: np.ndarray | None = None


def max_output_lengths(src_lengths: Tensor, config: DecodeConfig) -> Tensor:
    """Most tokens (EOS excluded) each sentence may get: a * source length + b."""
    source_tokens = (src_lengths - 1).clamp(min=0).double()  # minus the source EOS
    return (config.max_len_a * source_tokens + config.max_len_b).floor().long()


@torch.inference_mode()
def greedy_search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, config: DecodeConfig, *,
                  with_attention: bool = False) -> list[list[Hypothesis]]:
    """The most probable next token at every step; one hypothesis per sentence."""
    encoded, state = model.encode(src, src_lengths, for_search=True)
    limits = max_output_lengths(src_lengths, config).to(src.device)
    batch = len(src)
    steps = int(limits.max()) + 1
    outputs = torch.full((batch, steps), PAD_ID, dtype=torch.long, device=src.device)
    scores = torch.zeros(batch, dtype=torch.float32, device=src.device)
    active = torch.arange(batch, device=src.device)  # the sentence of each row
    ended = torch.zeros(batch, dtype=torch.bool, device=src.device)  # rows that are passengers
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    attention = torch.zeros((batch, steps, src.size(1)), device=src.device) if (
        with_attention) else None
    for step in range(steps):
        logits, state, weights = model.decode_step(prev, state, encoded)
        if attention is not None:
            attention[active, step] = weights.float()
        log_probs = _next_token_log_probs(logits, outputs[active, :step],
                                          step >= limits[active], config)  # (n, V)
        best, tokens = (column[:, 0] for column in row_topk(log_probs, 1))  # (n,)
        best = best.float()
        tokens, best = tokens.masked_fill(ended, PAD_ID), best.masked_fill(ended, 0.0)
        outputs[active, step] = tokens
        scores[active] += best
        ended |= tokens == EOS_ID
        kept = _rows_to_keep(ended)
        if kept is not None and len(kept) == 0:
            break
        if kept is not None:
            active, ended, tokens = active[kept], ended[kept], tokens[kept]
            encoded, state = encoded.select(kept), state.select(kept)
        prev = tokens
    tokens = [_strip(row) for row in outputs.tolist()]
    return [[Hypothesis(row, float(score), _attention_of(attention, index, len(row),
                                                         src_lengths))]
            for index, (row, score) in enumerate(zip(tokens, scores.tolist()))]


@torch.inference_mode()
def beam_search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, config: DecodeConfig, *,
                with_attention: bool = False) -> list[list[Hypothesis]]:
    """The ``config.nbest`` best of ``config.beam_size`` beams for each sentence, best first."""
    beam, device = config.beam_size, src.device
    batch = len(src)
    encoded, state = model.encode(src, src_lengths, for_search=True)
    # each sentence's K beams share one copy of its encoder states
    state = state.select(torch.arange(batch, device=device).repeat_interleave(beam))
    limits = max_output_lengths(src_lengths, config).to(device)
    steps = int(limits.max()) + 1
    finished = _Finished(batch, beam, steps, device, src.size(1) if with_attention else 0)
    sentences = torch.arange(batch, device=device)  # active sentences
    scores = torch.full((batch, beam), float("-inf"), device=device)  # raw log-probabilities
    scores[:, 0] = 0.0
    history = torch.empty((batch * beam, 0), dtype=torch.long, device=device)
    # each beam's attention so far, (n K, steps, S); None unless asked for
    looked = torch.empty((batch * beam, 0, src.size(1)), device=device) if (
        with_attention) else None
    prev = torch.full((batch * beam,), BOS_ID, dtype=torch.long, device=device)
    for step in range(steps):
        logits, state, weights = model.decode_step(prev, state, encoded)
        if looked is not None:
            looked = torch.cat([looked, weights.float()[:, None]], dim=1)
        at_limit = (step >= limits[sentences]).repeat_interleave(beam)
        log_probs = _next_token_log_probs(logits, history, at_limit, config)  # (n K, V)
        # a sentence's best 2K continuations are among each beam's best 2K: select per beam
        width = min(2 * beam, log_probs.size(1))
        row_scores, row_tokens = row_topk(log_probs, width)  # (n K, 2K)
        row_scores = row_scores.float()
        candidates = (scores.view(-1, 1) + row_scores).view(len(sentences), -1)
        top_scores, top_ids = candidates.topk(min(2 * beam, candidates.size(1)), dim=1)
        origins = top_ids // width  # (n, 2K) beam of each candidate
        tokens = row_tokens.view(len(sentences), -1).gather(1, top_ids)
        rows = (torch.arange(len(sentences), device=device)[:, None] * beam + origins)
        finished.add(sentences, top_scores, tokens == EOS_ID, history, rows, step + 1, config,
                     looked)
        # the K best candidates that did not end continue
        ended = (tokens == EOS_ID) | torch.isinf(top_scores)
        position = torch.arange(top_scores.size(1), device=device)
        keep = torch.argsort(position + ended * top_scores.size(1), dim=1)[:, :beam]  # (n, K)
        scores = top_scores.gather(1, keep)
        chosen_rows = rows.gather(1, keep).view(-1)
        history = torch.cat([history[chosen_rows], tokens.gather(1, keep).view(-1, 1)], dim=1)
        if looked is not None:
            looked = looked[chosen_rows]
        state = state.select(chosen_rows)
        prev = history[:, -1]
        done = finished.complete(sentences) | torch.isinf(scores).all(dim=1)
        scores.masked_fill_(done[:, None], float("-inf"))  # a passenger adds no hypotheses
        kept = _rows_to_keep(done)
        if kept is not None and len(kept) == 0:
            break
        if kept is not None:
            beam_rows = (kept[:, None] * beam + torch.arange(beam, device=device)).view(-1)
            sentences, scores = sentences[kept], scores[kept]
            history, prev = history[beam_rows], prev[beam_rows]
            looked = looked[beam_rows] if looked is not None else None
            encoded, state = encoded.select(kept), state.select(beam_rows)
    return finished.best(config.nbest, src_lengths)


def _rows_to_keep(done: Tensor) -> Tensor | None:
    """Which batch rows the next step keeps, or None to keep them all.

    Rows still running are kept; finished ones stay on as passengers until the running rows
    fit a smaller bucket size, and then fill it up. Every new batch size costs oneDNN new
    matmul kernels (about 1.5 ms per weight shape on first use): a few bucket sizes cost less
    than one size for every count of running sentences.
    """
    running = (~done).nonzero().squeeze(1)
    size = bucket_size(len(running))
    if size >= len(done):
        return None
    passengers = done.nonzero().squeeze(1)[:size - len(running)]
    return torch.cat([running, passengers])


def bucket_size(count: int) -> int:
    """``count`` rounded up to one of four sizes per power of two (at most 25% more)."""
    if count <= 8:
        return count
    step = 1 << (count.bit_length() - 3)
    return -(-count // step) * step


class _Finished:
    """The K best ended hypotheses of every sentence, kept as tensors (no per-sentence loop)."""

    def __init__(self, batch: int, beam: int, steps: int, device: torch.device,
                 source_length: int = 0) -> None:
        """``source_length``: keep each hypothesis' attention too (0: do not)."""
        self.beam = beam
        self.scores = torch.full((batch, beam), float("-inf"), device=device)
        self.tokens = torch.full((batch, beam, steps), PAD_ID, dtype=torch.long, device=device)
        self.attention = torch.zeros((batch, beam, steps, source_length), device=device) if (
            source_length) else None

    def add(self, sentences: Tensor, raw_scores: Tensor, is_eos: Tensor, history: Tensor,
            rows: Tensor, length: int, config: DecodeConfig, looked: Tensor | None) -> None:
        """Merge candidates that chose EOS (among the first K) into each sentence's best K.

        ``rows`` (n, 2K) are the history rows the candidates extend; ``looked`` their
        attention, this step's included.
        """
        in_beam = torch.arange(raw_scores.size(1), device=raw_scores.device) < self.beam
        ending = is_eos & in_beam & ~torch.isinf(raw_scores)
        if not bool(ending.any()):
            return
        prefixes = history[rows.view(-1)].view(*rows.shape, history.size(1))  # (n, 2K, t)
        normalized = raw_scores / _length_penalty(length, config)
        new_scores = torch.where(ending, normalized, torch.full_like(normalized, float("-inf")))
        new_tokens = torch.full((*prefixes.shape[:2], self.tokens.size(2)), PAD_ID,
                                dtype=torch.long, device=prefixes.device)
        new_tokens[:, :, :prefixes.size(2)] = prefixes
        all_scores = torch.cat([self.scores[sentences], new_scores], dim=1)  # (n, 3K)
        all_tokens = torch.cat([self.tokens[sentences], new_tokens], dim=1)
        best_scores, best = all_scores.topk(self.beam, dim=1)
        self.scores[sentences] = best_scores
        self.tokens[sentences] = all_tokens.gather(
            1, best[:, :, None].expand(-1, -1, all_tokens.size(2)))
        if self.attention is not None and looked is not None:
            new_attention = torch.zeros((*rows.shape, *self.attention.shape[2:]),
                                        device=looked.device)  # (n, 2K, steps, S)
            new_attention[:, :, :looked.size(1)] = looked[rows.view(-1)].view(
                *rows.shape, *looked.shape[1:])
            all_attention = torch.cat([self.attention[sentences], new_attention], dim=1)
            self.attention[sentences] = all_attention[
                torch.arange(len(best), device=best.device)[:, None], best]

    def complete(self, sentences: Tensor) -> Tensor:
        return ~torch.isinf(self.scores[sentences, -1])

    def best(self, nbest: int, src_lengths: Tensor) -> list[list[Hypothesis]]:
        results = []
        for sentence, (scores, tokens) in enumerate(zip(self.scores.tolist(),
                                                        self.tokens.tolist())):
            hypotheses = []
            for rank, (score, row) in enumerate(zip(scores[:nbest], tokens[:nbest])):
                if score == float("-inf"):
                    continue
                row = _strip(row)
                attention = None if self.attention is None else self.attention[sentence, rank]
                hypotheses.append(Hypothesis(row, score, _attention_of(
                    attention, None, len(row), src_lengths[sentence:sentence + 1])))
            results.append(hypotheses)
        return results


def _attention_of(attention: Tensor | None, index: int | None, length: int,
                  src_lengths: Tensor) -> np.ndarray | None:
    """One hypothesis' (length + 1, its source length) weights out of a padded tensor."""
    if attention is None:
        return None
    rows = attention if index is None else attention[index]
    source = int(src_lengths[0 if index is None else index])
    return rows[:length + 1, :source].cpu().numpy()


def _length_penalty(length: int, config: DecodeConfig) -> float:
    if config.length_penalty == "gnmt":
        return ((5.0 + length) / 6.0) ** config.alpha
    if config.length_penalty == "average":
        return float(length)
    return 1.0


def _next_token_log_probs(logits: Tensor, history: Tensor, at_limit: Tensor,
                          config: DecodeConfig) -> Tensor:
    """Log-probabilities (N, V) of the next token, with the search's restrictions applied.

    They keep the logits' dtype: for a bf16 model one fused log-softmax (fp32 inside) rounds
    them to bf16, an error of at most 0.4% of each value, smaller than the bf16 logits' own;
    hypothesis scores add them up in fp32. The distribution is normalised before the
    restrictions, so a forced EOS keeps its probability under the model.
    """
    log_probs = torch.log_softmax(logits, dim=-1)
    _restrict(log_probs, history, at_limit, config)
    return log_probs


def row_topk(scores: Tensor, k: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """``scores.topk(k, dim=1)`` in two passes, each cheaper than a top-k over a whole row.

    The k best entries of a row lie in the k chunks with the largest maxima, so only those
    k * chunk entries are searched: a row's top-k then costs a max per chunk plus a small
    top-k, instead of a selection over the whole vocabulary at every decoding step.
    """
    rows, width = scores.shape
    if width <= k * chunk:
        return scores.topk(k, dim=1)
    whole = width // chunk * chunk
    chunk_max = scores[:, :whole].view(rows, -1, chunk).amax(dim=2)  # (N, width // chunk)
    if whole < width:
        chunk_max = torch.cat([chunk_max, scores[:, whole:].amax(dim=1, keepdim=True)], dim=1)
    best_chunks = chunk_max.topk(k, dim=1).indices  # (N, k)
    offsets = torch.arange(chunk, device=scores.device)
    columns = (best_chunks[:, :, None] * chunk + offsets).view(rows, -1)  # (N, k chunk)
    outside = columns >= width  # the last chunk may be short
    candidates = scores.gather(1, columns.clamp(max=width - 1)).masked_fill_(
        outside, float("-inf"))
    values, positions = candidates.topk(k, dim=1)
    return values, columns.gather(1, positions)


def _restrict(log_probs: Tensor, history: Tensor, at_limit: Tensor, config: DecodeConfig) -> None:
    """In place on log-probabilities: force EOS at the length limit; block repeated n-grams."""
    if config.no_repeat_ngram:
        _block_repeats(log_probs, history, config.no_repeat_ngram)
    if bool(at_limit.any()):
        eos_scores = log_probs[:, EOS_ID].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[:, EOS_ID] = torch.where(at_limit, eos_scores, log_probs[:, EOS_ID])
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")


def _block_repeats(log_probs: Tensor, history: Tensor, size: int) -> None:
    """Forbid any token that would repeat an n-gram of ``size`` already in the history."""
    length = history.size(1)
    if length < size:
        return
    if size == 1:
        log_probs.scatter_(1, history, float("-inf"))
        return
    windows = history.unfold(1, size, 1)  # (N, length - size + 1, size)
    last = history[:, length - size + 1:]  # (N, size - 1)
    matches = (windows[:, :, :-1] == last[:, None]).all(dim=-1)  # (N, windows)
    banned = torch.zeros_like(log_probs)
    banned.scatter_add_(1, windows[:, :, -1], matches.to(log_probs.dtype))
    log_probs.masked_fill_(banned > 0, float("-inf"))


def _strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first EOS or padding."""
    for index, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:index]
    return row


def decode_corpus(model: Seq2Seq, sentences: Sequence[np.ndarray | list[int]],
                  config: DecodeConfig, device: torch.device, *, with_attention: bool = False
                  ) -> list[list[Hypothesis]]:
    """Translate id sequences in length-sorted token batches; results come back in input order.

    Greedy search when ``config`` asks for one hypothesis of one beam, else beam search.
    """
    lengths = np.fromiter((len(s) + 1 for s in sentences), dtype=np.int64, count=len(sentences))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    if not len(sentences):
        return results
    search = greedy_search if config.beam_size == 1 and config.nbest == 1 else beam_search
    for indices in token_batches(lengths, max(config.batch_tokens // config.beam_size, 1)):
        src, src_lengths = pad([sentences[i] for i in indices], suffix=EOS_ID)
        hypotheses = search(model, src.to(device), src_lengths.to(device), config,
                            with_attention=with_attention)
        for index, hypothesis in zip(indices, hypotheses):
            results[index] = hypothesis
    return results
