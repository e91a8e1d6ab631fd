"""Search a corpus: greedy search (``s2s.search.greedy``) over fixed length-sorted batches, or
beam search (``s2s.search.beam``) over one running batch topped up with the next sentences as
others finish. Both run the encoder once per group of sentences.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from s2s.data.batching import pad, token_batches
from s2s.data.vocab import EOS_ID
from s2s.model.decodable import Decodable
from s2s.search.beam import BeamBatch
from s2s.search.constraints import NO_TERMS, PackedTerms, TargetTerms
from s2s.search.greedy import greedy_search
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.search.sampling import line_keys, sample_search


def top_up_below(device: torch.device) -> float:
    """The share of the budget below which a running beam batch's source tokens are topped up.

    On a CPU a quarter: fewer, larger groups of sentences join, and int8 beam 5 ran 3-4%
    faster than with three quarters, fp32 and bf16 as fast, with the same translations in fp32
    and int8 (BENCHMARKS.md, "The search tail, third round"). On a GPU three quarters, as the
    running batch was built, where a fuller batch costs little more per step (not measured
    again).
    """
    return 0.25 if device.type == "cpu" else 0.75


def decode_corpus(model: Decodable, sentences: Sequence[np.ndarray | list[int]],
                  options: SearchOptions, terms: Sequence[TargetTerms] | None = None
                  ) -> list[list[Hypothesis]]:
    """Translate id sequences in length order; results come back in input order (``_search``).
    ``terms``: each sentence's prefix and constraints (``s2s.search.constraints``).

    With ``options.shortlist`` (``s2s.model.shortlist``), fixed length-sorted batches each
    decode over the union of their sentences' candidates, and the hypotheses' tokens are
    mapped back to vocabulary ids.
    """
    if options.shortlist is None:
        return _search(model, sentences, options, terms)
    config = options.config
    lengths = np.fromiter((len(s) + 1 for s in sentences), dtype=np.int64, count=len(sentences))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    budget = max(config.batch_tokens // max(config.beam_size, config.nbest), 1)
    # the union's positions stand for vocabulary ids: word starts are not known there
    within = replace(options, word_starts=None)
    for indices in token_batches(lengths, budget):
        group = [sentences[i] for i in indices]
        batch_model = options.shortlist.for_batch(model, group)
        found = _search(batch_model, group, within,
                        [terms[i] for i in indices] if terms is not None else None)
        for index, hypotheses in zip(indices, found):
            results[index] = [replace(hypothesis,
                                      tokens=batch_model.union[hypothesis.tokens].tolist())
                              for hypothesis in hypotheses]
    return results


def _search(model: Decodable, sentences: Sequence[np.ndarray | list[int]],
            options: SearchOptions, terms: Sequence[TargetTerms] | None = None
            ) -> list[list[Hypothesis]]:
    """Search id sequences in length order; results come back in input order.

    Sampling search when ``config.sampling`` (``s2s.search.sampling``; it keeps prefixes,
    not constraints). Greedy search when ``config`` asks for one hypothesis of one beam and
    no sentence has constraints, else beam search. ``config.batch_tokens`` bounds the source
    tokens (padding included) times the beam size (or samples) decoded at once.
    """
    config, device = options.config, options.device
    lengths = np.fromiter((len(s) + 1 for s in sentences), dtype=np.int64, count=len(sentences))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    budget = max(config.batch_tokens // config.beam_size, 1)
    terms = [NO_TERMS] * len(sentences) if terms is None else terms
    if config.sampling:
        for indices in token_batches(lengths, max(config.batch_tokens // config.nbest, 1)):
            group = [sentences[i] for i in indices]
            src, src_lengths = pad(group, suffix=EOS_ID)
            batch_results = sample_search(
                model, src.to(device), src_lengths.to(device),
                line_keys(group, config.nbest, config.seed), options,
                PackedTerms.of([terms[i] for i in indices], device))
            for index, hypotheses in zip(indices, batch_results):
                results[index] = hypotheses
        return results
    if config.beam_size == 1 and config.nbest == 1 and not any(t.constraints for t in terms):
        for indices in token_batches(lengths, budget):
            src, src_lengths = pad([sentences[i] for i in indices], suffix=EOS_ID)
            batch_results = greedy_search(model, src.to(device), src_lengths.to(device), options,
                                          PackedTerms.of([terms[i] for i in indices], device))
            for index, hypotheses in zip(indices, batch_results):
                results[index] = hypotheses
        return results
    batch = BeamBatch(model, options)
    waiting = np.argsort(lengths, kind="stable")[::-1].tolist()  # the shortest at the end
    refill = top_up_below(device) * budget
    while waiting or len(batch):
        if waiting and batch.running_tokens < refill:
            group = _next_group(waiting, lengths, budget - batch.running_tokens)
            batch.add([sentences[i] for i in group], group, [terms[i] for i in group])
        for index, hypotheses in batch.step():
            results[index] = hypotheses
    return results


def _next_group(waiting: list[int], lengths: np.ndarray, budget: int) -> list[int]:
    """Take the shortest waiting sentences whose padded size fits ``budget`` (at least one)."""
    group = [waiting.pop()]
    while waiting and int(lengths[waiting[-1]]) * (len(group) + 1) <= budget:
        group.append(waiting.pop())
    return group
