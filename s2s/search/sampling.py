"""Sampling search: every token drawn from the model's next-token distribution.

The distribution may be sharpened or flattened (``temperature``), cut to the ``top_k`` likeliest
tokens, and cut to the smallest set of likeliest tokens whose probability reaches ``top_p``
(nucleus sampling), in that order. A draw inverts the cumulative distribution at one uniform
number per row and step, made by a counter-based hash of (seed, the line's tokens, the sample's
number, the step): a line's samples depend on the seed and the line only, never on the lines
batched with it, so `s2s translate`, `evaluate` and the server agree and a rerun gives the same
file. Nothing here touches torch's random streams.

A sample's score is its log-probability under the model itself (untempered, uncut), so samples
of one line can be ranked, best first, like n-best lists.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.model.decodable import Decodable
from s2s.search.constraints import PackedTerms
from s2s.search.greedy import token_by_token
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.search.steps import row_topk

_MASK_64 = (1 << 64) - 1


def line_keys(sentences: Sequence[np.ndarray | list[int]], samples: int, seed: int) -> Tensor:
    """(n samples,) int64 keys: sentence i's sample j from (seed, its token ids, j)."""
    keys = []
    for sentence in sentences:
        digest = hashlib.blake2b(np.asarray(sentence, dtype=np.int64).tobytes(), digest_size=8,
                                 key=seed.to_bytes(8, "little"))
        base = int.from_bytes(digest.digest(), "little")
        keys.extend(_signed((base + sample * 0x9E3779B97F4A7C15) & _MASK_64)
                    for sample in range(samples))
    return torch.tensor(keys, dtype=torch.long)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_MIX_1, _MIX_2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shifted(x: Tensor, bits: int) -> Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform(keys: Tensor, step: int) -> Tensor:
    """(rows,) float64 uniforms in [0, 1), a pure function of (key, step): splitmix64's
    finaliser over a counter (integer arithmetic wraps modulo 2^64)."""
    x = keys + _signed(((step + 1) * 0x9E3779B97F4A7C15) & _MASK_64)
    x = (x ^ _shifted(x, 30)) * _MIX_1
    x = (x ^ _shifted(x, 27)) * _MIX_2
    x = x ^ _shifted(x, 31)
    return _shifted(x, 11).double() / float(1 << 53)


def restricted_log_probs(log_probs: Tensor, config: DecodeConfig) -> Tensor:
    """(rows, V) the log-probabilities sampling draws from: tempered, renormalised, cut to
    top-k and to the top-p nucleus (-inf outside)."""
    scores = torch.log_softmax(log_probs.float() / config.temperature, dim=-1)
    if config.top_k and config.top_k < scores.size(1):
        kth = row_topk(scores, config.top_k)[0][:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=1, descending=True)
        probs = sorted_scores.exp()
        # keep a token while the tokens before it have not yet reached top_p (within fp32
        # rounding: probabilities of 0.5 and 0.3 reach 0.8)
        before = probs.double().cumsum(dim=1) - probs.double()
        drop = before >= config.top_p - 1e-6
        scores = scores.scatter(1, order, sorted_scores.masked_fill(drop, float("-inf")))
    if config.top_k or config.top_p < 1.0:
        scores = torch.log_softmax(scores, dim=-1)  # what is kept sums to one again
    return scores


def draw(log_probs: Tensor, keys: Tensor, step: int, config: DecodeConfig,
         chunk: int = 128) -> Tensor:
    """(rows,) one token per row from ``log_probs`` (restricted as the config says): where
    the row's uniform falls in the cumulative distribution.

    In two passes, as the chunked top-k (``s2s.search.steps.beam_topk``): the point is found
    among chunk totals, then within its chunk, so only a row's chunk totals and one chunk are
    summed cumulatively.
    """
    plain = config.temperature == 1.0 and not config.top_k and config.top_p == 1.0
    probs = (log_probs.float() if plain else restricted_log_probs(log_probs, config)).exp()
    rows, width = probs.shape
    padded = -(-width // chunk) * chunk
    chunks = torch.nn.functional.pad(probs, (0, padded - width)).view(rows, -1, chunk)
    totals = chunks.sum(dim=2).double().cumsum(dim=1)  # (rows, chunks)
    point = uniform(keys, step).to(probs.device) * totals[:, -1]
    which = torch.searchsorted(totals, point[:, None], right=True)[:, 0].clamp(
        max=totals.size(1) - 1)
    before = torch.where(which > 0, totals.gather(1, (which - 1).clamp(min=0)[:, None])[:, 0],
                         0.0)
    inside = chunks[torch.arange(rows, device=probs.device), which]  # (rows, chunk)
    running = before[:, None] + inside.double().cumsum(dim=1)
    offset = torch.searchsorted(running, point[:, None], right=True)[:, 0]
    # rounding may put the point just past the chunk's end: take its last possible token
    last = chunk - 1 - (inside > 0).flip(1).int().argmax(dim=1)
    return which * chunk + torch.minimum(offset, last)


@torch.inference_mode()
def sample_search(model: Decodable, src: Tensor, src_lengths: Tensor, keys: Tensor,
                  options: SearchOptions, terms: PackedTerms | None = None
                  ) -> list[list[Hypothesis]]:
    """``config.nbest`` samples of each sentence of a padded batch, best-scoring first;
    ``keys`` (n nbest,) from ``line_keys``; ``terms``: prefixes to start with."""
    config = options.config
    samples, batch = config.nbest, len(src)
    rows_of = torch.arange(batch, device=src.device).repeat_interleave(samples)
    encoded, state = model.encode(src, src_lengths, for_search=True)
    hypotheses = token_by_token(
        model, encoded.select(rows_of), state.select(rows_of), src_lengths[rows_of], options,
        lambda log_probs, rows, step: draw(log_probs, keys[rows.cpu()], step, config),
        terms.select(rows_of) if terms is not None else None)
    return [sorted(hypotheses[i * samples:(i + 1) * samples], key=lambda h: -h.score)
            for i in range(batch)]
