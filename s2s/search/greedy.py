"""Greedy search: the most probable next token at every step, for a padded batch.

Batched with no Python loop over sentences inside a step; finished sentences leave the batch
as they finish, or in steps of a few bucket sizes where that pays (``rows_to_keep``,
``keeps_passengers``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s.model.decodable import Decodable, SearchEncoded
from s2s.search.constraints import PackedTerms, force_prefix
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.search.steps import (
    attention_of,
    keeps_passengers,
    max_output_lengths,
    restrict,
    row_topk,
    rows_to_keep,
    strip,
)

# (log-probabilities (n, V), the rows' indices in the batch, step) -> a token per row (n,)
Choose = Callable[[Tensor, Tensor, int], Tensor]


@torch.inference_mode()
def greedy_search(model: Decodable, src: Tensor, src_lengths: Tensor, options: SearchOptions,
                  terms: PackedTerms | None = None) -> list[list[Hypothesis]]:
    """The most probable next token at every step; one hypothesis per sentence. ``terms``:
    prefixes to start with (greedy search takes no constraints)."""
    encoded, state = model.encode(src, src_lengths, for_search=True)
    return [[hypothesis] for hypothesis in token_by_token(
        model, encoded, state, src_lengths, options,
        lambda log_probs, rows, step: row_topk(log_probs, 1)[1][:, 0], terms)]


def token_by_token(model: Decodable, encoded: SearchEncoded, state: Any, src_lengths: Tensor,
                   options: SearchOptions, choose: Choose, terms: PackedTerms | None = None
                   ) -> list[Hypothesis]:
    """One hypothesis per row, each token the one ``choose`` picks from the restricted
    log-probabilities (a prefix forced first); scores add up those log-probabilities."""
    device = src_lengths.device
    limits = max_output_lengths(src_lengths, options.config).to(device)
    batch = len(src_lengths)
    steps = int(limits.max()) + 1
    outputs = torch.full((batch, steps), PAD_ID, dtype=torch.long, device=device)
    scores = torch.zeros(batch, dtype=torch.float32, device=device)
    active = torch.arange(batch, device=device)  # the row of each running sentence
    ended = torch.zeros(batch, dtype=torch.bool, device=device)  # rows that are passengers
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    attention = torch.zeros((batch, steps, encoded.states.size(1)), device=device) if (
        options.with_attention) else None
    passengers = keeps_passengers(model)
    for step in range(steps):
        log_probs, state, weights = model.decode_step(prev, state, encoded)
        if attention is not None:
            attention[active, step] = weights.float()
        restrict(log_probs, outputs[active, :step], step >= limits[active], options.config)
        if terms is not None and terms.prefix.size(1):
            force_prefix(log_probs, terms.prefix[active], terms.prefix_lengths[active],
                         terms.prefix_ends_word[active], torch.full_like(active, step),
                         options.word_starts)
        tokens = choose(log_probs, active, step)  # (n,)
        best = log_probs.gather(1, tokens[:, None])[:, 0].float()
        tokens, best = tokens.masked_fill(ended, PAD_ID), best.masked_fill(ended, 0.0)
        outputs[active, step] = tokens
        scores[active] += best
        ended |= tokens == EOS_ID
        kept = rows_to_keep(ended, passengers=passengers)
        if kept is not None and len(kept) == 0:
            break
        if kept is not None:
            active, ended, tokens = active[kept], ended[kept], tokens[kept]
            encoded, state = encoded.select(kept), state.select(kept)
        prev = tokens
    tokens = [strip(row) for row in outputs.tolist()]
    return [Hypothesis(row, float(score), attention_of(attention, index, len(row), src_lengths))
            for index, (row, score) in enumerate(zip(tokens, scores.tolist()))]
