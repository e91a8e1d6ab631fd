"""Search a corpus: greedy search here, beam search in ``s2s.beam``.

Both are batched with no Python loop over sentences or beams inside a step, and run the encoder
once per group of sentences. Greedy search decodes fixed length-sorted batches whose finished
sentences leave (in steps of a few bucket sizes, see ``rows_to_keep``); beam search keeps one
running batch that is topped up with the next sentences as others finish.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from s2s.batching import pad, token_batches
from s2s.beam import BeamBatch
from s2s.config import DecodeConfig
from s2s.model import Seq2Seq
from s2s.search_steps import (Hypothesis, attention_of, max_output_lengths,
                              next_token_log_probs, row_topk, rows_to_keep, strip)
from s2s.vocab import BOS_ID, EOS_ID, PAD_ID

# a running beam batch is topped up when its source tokens fall below this share of the budget
TOP_UP_BELOW = 0.75


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
        log_probs = next_token_log_probs(logits, outputs[active, :step],
                                          step >= limits[active], config)  # (n, V)
        best, tokens = (column[:, 0] for column in row_topk(log_probs, 1))  # (n,)
        best = best.float()
        tokens, best = tokens.masked_fill(ended, PAD_ID), best.masked_fill(ended, 0.0)
        outputs[active, step] = tokens
        scores[active] += best
        ended |= tokens == EOS_ID
        kept = rows_to_keep(ended)
        if kept is not None and len(kept) == 0:
            break
        if kept is not None:
            active, ended, tokens = active[kept], ended[kept], tokens[kept]
            encoded, state = encoded.select(kept), state.select(kept)
        prev = tokens
    tokens = [strip(row) for row in outputs.tolist()]
    return [[Hypothesis(row, float(score), attention_of(attention, index, len(row),
                                                         src_lengths))]
            for index, (row, score) in enumerate(zip(tokens, scores.tolist()))]


def beam_search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, config: DecodeConfig, *,
                with_attention: bool = False) -> list[list[Hypothesis]]:
    """The ``config.nbest`` best of ``config.beam_size`` beams for each sentence of a padded
    batch, best first."""
    sentences = [row[:length - 1] for row, length in zip(src.tolist(), src_lengths.tolist())]
    batch = BeamBatch(model, config, src.device, with_attention=with_attention)
    batch.add(sentences, range(len(sentences)))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    while len(batch):
        for index, hypotheses in batch.step():
            results[index] = hypotheses  # type: ignore[index]
    return results


def decode_corpus(model: Seq2Seq, sentences: Sequence[np.ndarray | list[int]],
                  config: DecodeConfig, device: torch.device, *, with_attention: bool = False
                  ) -> list[list[Hypothesis]]:
    """Translate id sequences in length order; results come back in input order.

    Greedy search when ``config`` asks for one hypothesis of one beam, else beam search.
    ``config.batch_tokens`` bounds the source tokens (padding included) times the beam size
    decoded at once.
    """
    lengths = np.fromiter((len(s) + 1 for s in sentences), dtype=np.int64, count=len(sentences))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    budget = max(config.batch_tokens // config.beam_size, 1)
    if config.beam_size == 1 and config.nbest == 1:
        for indices in token_batches(lengths, budget):
            src, src_lengths = pad([sentences[i] for i in indices], suffix=EOS_ID)
            found = greedy_search(model, src.to(device), src_lengths.to(device), config,
                                  with_attention=with_attention)
            for index, hypotheses in zip(indices, found):
                results[index] = hypotheses
        return results
    batch = BeamBatch(model, config, device, with_attention=with_attention)
    waiting = list(np.argsort(lengths, kind="stable")[::-1])  # the shortest at the end
    while waiting or len(batch):
        if waiting and batch.running_tokens < TOP_UP_BELOW * budget:
            group = _next_group(waiting, lengths, budget - batch.running_tokens)
            batch.add([sentences[i] for i in group], group)
        for index, hypotheses in batch.step():
            results[index] = hypotheses  # type: ignore[index]
    return results


def _next_group(waiting: list[int], lengths: np.ndarray, budget: int) -> list[int]:
    """Take the shortest waiting sentences whose padded size fits ``budget`` (at least one)."""
    group = [waiting.pop()]
    while waiting and int(lengths[waiting[-1]]) * (len(group) + 1) <= budget:
        group.append(waiting.pop())
    return group
