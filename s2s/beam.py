"""Beam search over a batch that sentences join and leave between steps.

``BeamBatch.add`` encodes new sentences and joins them to the running batch; ``step`` moves
every sentence on by one token and hands back the sentences that are done. ``decode_corpus``
tops the batch up from length-sorted input as sentences finish, so the last steps of a batch
do not run with a handful of sentences.

Each sentence keeps K beams, all its rows in one batch with no Python loop over sentences or
beams inside a step; its K beams share one copy of its encoder states. Per step it keeps 2K
candidates so that K hypotheses stay alive after some of them end (as fairseq does), and it is
done once K hypotheses have ended. Sentences that joined at different steps have histories of
different lengths: histories are right-aligned, padded on the left with PAD (which search never
chooses, so padding cannot match a repeated n-gram). A finished sentence stays on as a
passenger (scores -inf) until the running ones fit a smaller bucket size (``rows_to_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from s2s.batching import pad
from s2s.config import DecodeConfig
from s2s.model import DecoderState, Encoded, Seq2Seq
from s2s.search_steps import (Hypothesis, max_output_lengths, next_token_log_probs, row_topk,
                              rows_to_keep)
from s2s.vocab import BOS_ID, EOS_ID, PAD_ID


class BeamBatch:
    """The running beam search of many sentences, each with a tag the caller chooses."""

    def __init__(self, model: Seq2Seq, config: DecodeConfig, device: torch.device, *,
                 with_attention: bool = False) -> None:
        """``with_attention``: hypotheses carry their attention weights (``Hypothesis``)."""
        self.model, self.config, self.device = model, config, device
        self.beam = config.beam_size
        self.with_attention = with_attention
        self.step_weights: list[tuple[Tensor, Tensor]] | None = None  # joined once, reused
        self.tags: list[Hashable] = []  # per sentence row
        self.rows: _Rows | None = None  # None while empty

    def __len__(self) -> int:
        """Sentences in the batch, passengers included."""
        return len(self.tags)

    @property
    def running_tokens(self) -> int:
        """Source tokens (EOS included) of the sentences not yet done."""
        if self.rows is None:
            return 0
        return int(self.rows.src_lengths[~self.rows.done].sum())

    @torch.inference_mode()
    def add(self, sentences: Sequence[np.ndarray | list[int]], tags: Sequence[Hashable]) -> None:
        """Encode ``sentences`` (token ids without EOS) and start them at the next step."""
        if len(sentences) != len(tags):
            raise ValueError(f"{len(sentences)} sentences but {len(tags)} tags")
        if not len(sentences):
            return
        src, src_lengths = (tensor.to(self.device) for tensor in pad(sentences, suffix=EOS_ID))
        encoded, state = self.model.encode(src, src_lengths,
                                           for_search=self.step_weights is None)
        if self.step_weights is None:
            self.step_weights = encoded.step_weights
        encoded = encoded._replace(step_weights=self.step_weights)
        count, beam = len(sentences), self.beam
        state = state.select(torch.arange(count, device=self.device).repeat_interleave(beam))
        new = _Rows.start(encoded, state, src_lengths, max_output_lengths(
            src_lengths, self.config), beam, self.with_attention)
        if self.rows is not None:
            self._keep(rows_to_keep(self.rows.done, passengers=False))
        self.rows = new if self.rows is None else self.rows.joined(new)
        self.tags = [*self.tags, *tags]

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, list[Hypothesis]]]:
        """One token for every sentence; the (tag, ``nbest`` best hypotheses) of those that
        are done now."""
        rows, beam, config = self.rows, self.beam, self.config
        if rows is None:
            return []
        count = len(self.tags)
        logits, rows.state, weights = self.model.decode_step(rows.prev, rows.state,
                                                             rows.encoded)
        if rows.looked is not None:
            rows.looked = torch.cat([rows.looked, weights.float()[:, None]], dim=1)
        at_limit = (rows.lengths >= rows.limits).repeat_interleave(beam)
        log_probs = next_token_log_probs(logits, rows.history, at_limit, config)  # (n K, V)
        # a sentence's best 2K continuations are among each beam's best 2K: select per beam
        width = min(2 * beam, log_probs.size(1))
        row_scores, row_tokens = row_topk(log_probs, width)  # (n K, 2K)
        candidates = (rows.scores.view(-1, 1) + row_scores.float()).view(count, -1)
        top_scores, top_ids = candidates.topk(min(2 * beam, candidates.size(1)), dim=1)
        tokens = row_tokens.view(count, -1).gather(1, top_ids)  # (n, 2K)
        origins = torch.arange(count, device=self.device)[:, None] * beam + top_ids // width
        rows.lengths += 1
        rows.finish(top_scores, tokens == EOS_ID, origins, config)
        # the K best candidates that did not end continue
        ended = (tokens == EOS_ID) | torch.isinf(top_scores)
        position = torch.arange(top_scores.size(1), device=self.device)
        keep = torch.argsort(position + ended * top_scores.size(1), dim=1)[:, :beam]  # (n, K)
        rows.scores = top_scores.gather(1, keep)
        rows.extend(origins.gather(1, keep).view(-1), tokens.gather(1, keep).view(-1, 1))
        newly_done = (rows.complete() | torch.isinf(rows.scores).all(dim=1)) & ~rows.done
        rows.done |= newly_done
        rows.scores.masked_fill_(rows.done[:, None], float("-inf"))  # passengers add nothing
        results = self._results(newly_done)
        self._keep(rows_to_keep(rows.done))
        return results

    def _results(self, newly_done: Tensor) -> list[tuple[Hashable, list[Hypothesis]]]:
        indices = newly_done.nonzero().squeeze(1).tolist()
        if not indices:
            return []
        assert self.rows is not None
        hypotheses = self.rows.hypotheses(indices, self.config.nbest)
        return [(self.tags[index], found) for index, found in zip(indices, hypotheses)]

    def _keep(self, kept: Tensor | None) -> None:
        """Keep only the sentence rows ``kept`` (None: all)."""
        if kept is None or self.rows is None:
            return
        if len(kept) == 0:
            self.tags, self.rows = [], None
            return
        self.rows = self.rows.selected(kept)
        self.tags = [self.tags[index] for index in kept.tolist()]


@dataclass
class _Rows:
    """The tensors of a running beam search: per sentence (n, ...) and per beam (n K, ...).

    Token histories and attention are right-aligned in time, and so are the finished
    hypotheses of each sentence (its K best ended so far).
    """

    beam: int
    encoded: Encoded  # n sentences
    state: DecoderState  # n K beams
    src_lengths: Tensor  # (n,) EOS included
    limits: Tensor  # (n,) most tokens each may get
    lengths: Tensor  # (n,) tokens chosen so far
    done: Tensor  # (n,) bool: passengers
    scores: Tensor  # (n, K) raw log-probabilities of the live beams
    history: Tensor  # (n K, t) tokens chosen
    prev: Tensor  # (n K,) the last of them (BOS at first)
    looked: Tensor | None  # (n K, t, S) attention, when asked for
    finished_scores: Tensor  # (n, K) length-penalised, -inf where none yet
    finished_tokens: Tensor  # (n, K, t') without EOS
    finished_attention: Tensor | None  # (n, K, t' + 1, S)

    @classmethod
    def start(cls, encoded: Encoded, state: DecoderState, src_lengths: Tensor, limits: Tensor,
              beam: int, with_attention: bool) -> "_Rows":
        count, device = len(src_lengths), src_lengths.device
        scores = torch.full((count, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live beam to start from
        source = encoded.states.size(1)
        return cls(
            beam=beam, encoded=encoded, state=state, src_lengths=src_lengths,
            limits=limits.to(device), lengths=torch.zeros(count, dtype=torch.long, device=device),
            done=torch.zeros(count, dtype=torch.bool, device=device), scores=scores,
            history=torch.empty((count * beam, 0), dtype=torch.long, device=device),
            prev=torch.full((count * beam,), BOS_ID, dtype=torch.long, device=device),
            looked=torch.empty((count * beam, 0, source), device=device) if with_attention
            else None,
            finished_scores=torch.full((count, beam), float("-inf"), device=device),
            finished_tokens=torch.empty((count, beam, 0), dtype=torch.long, device=device),
            finished_attention=torch.empty((count, beam, 0, source), device=device)
            if with_attention else None)

    def finish(self, raw_scores: Tensor, is_eos: Tensor, origins: Tensor,
               config: DecodeConfig) -> None:
        """Merge this step's candidates (n, 2K) that chose EOS among the first K into each
        sentence's K best; ``origins`` are the beam rows they extend, ``lengths`` already
        count their EOS."""
        count, width = origins.shape
        in_beam = torch.arange(width, device=origins.device) < self.beam
        ending = is_eos & in_beam & ~torch.isinf(raw_scores)
        if not bool(ending.any()):
            return
        penalty = length_penalty(self.lengths, config)[:, None]  # (n, 1)
        new_scores = torch.where(ending, raw_scores / penalty, float("-inf"))
        prefixes = self.history[origins.view(-1)].view(count, width, -1)  # (n, 2K, t)
        all_scores = torch.cat([self.finished_scores, new_scores], dim=1)  # (n, 3K)
        self.finished_scores, best = all_scores.topk(self.beam, dim=1)
        self.finished_tokens = _best_of(self.finished_tokens, prefixes, best, PAD_ID)
        if self.looked is not None and self.finished_attention is not None:
            looked = self.looked[origins.view(-1)].view(count, width, *self.looked.shape[1:])
            self.finished_attention = _best_of(self.finished_attention, looked, best, 0.0)

    def extend(self, beam_rows: Tensor, tokens: Tensor) -> None:
        """The beams continue from ``beam_rows`` with ``tokens`` (n K, 1)."""
        self.history = torch.cat([self.history[beam_rows], tokens], dim=1)
        self.prev = tokens[:, 0]
        self.state = self.state.select(beam_rows)
        if self.looked is not None:
            self.looked = self.looked[beam_rows]

    def complete(self) -> Tensor:
        """(n,) True where K hypotheses have ended."""
        return ~torch.isinf(self.finished_scores[:, -1])

    def hypotheses(self, indices: list[int], nbest: int) -> list[list[Hypothesis]]:
        """The ``nbest`` best finished hypotheses of the sentences at ``indices``."""
        scores = self.finished_scores[indices, :nbest].tolist()
        tokens = self.finished_tokens[indices, :nbest].tolist()
        sources = self.src_lengths[indices].tolist()
        found = []
        for row, (row_scores, row_tokens, source) in enumerate(zip(scores, tokens, sources)):
            hypotheses = []
            for rank, (score, ids) in enumerate(zip(row_scores, row_tokens)):
                if score == float("-inf"):
                    continue
                ids = [token for token in ids if token != PAD_ID]
                attention = None
                if self.finished_attention is not None:
                    weights = self.finished_attention[indices[row], rank]  # (t' + 1, S)
                    attention = weights[weights.size(0) - len(ids) - 1:, :source].cpu().numpy()
                hypotheses.append(Hypothesis(ids, score, attention))
            found.append(hypotheses)
        return found

    def selected(self, kept: Tensor) -> "_Rows":
        """Only the sentences ``kept``, with time trimmed to their longest history."""
        beam_rows = (kept[:, None] * self.beam + torch.arange(self.beam, device=kept.device)
                     ).view(-1)
        lengths = self.lengths[kept]
        running = lengths[~self.done[kept]]
        longest = int(running.max()) if len(running) else 0
        return _Rows(
            beam=self.beam, encoded=self.encoded.select(kept),
            state=self.state.select(beam_rows), src_lengths=self.src_lengths[kept],
            limits=self.limits[kept], lengths=lengths, done=self.done[kept],
            scores=self.scores[kept], history=_last(self.history[beam_rows], longest, 1),
            prev=self.prev[beam_rows],
            looked=None if self.looked is None else _last(self.looked[beam_rows], longest, 1),
            finished_scores=self.finished_scores[kept],
            finished_tokens=_last(self.finished_tokens[kept], longest, 2),
            finished_attention=None if self.finished_attention is None
            else _last(self.finished_attention[kept], longest, 2))

    def joined(self, new: "_Rows") -> "_Rows":
        """These sentences followed by ``new`` ones (which start at their first step)."""
        source = max(self.encoded.states.size(1), new.encoded.states.size(1))
        encoded = Encoded(*(torch.cat([_padded(a, 1, source, fill), _padded(b, 1, source, fill)])
                            for a, b, fill in zip(self.encoded[:3], new.encoded[:3],
                                                  (0.0, 0.0, False))),
                          self.encoded.step_weights)
        state = DecoderState(
            torch.cat([self.state.hidden, new.state.hidden], dim=1),
            None if self.state.cell is None else torch.cat([self.state.cell, new.state.cell],
                                                           dim=1),
            torch.cat([self.state.feed, new.state.feed]))

        def stacked(a: Tensor | None, b: Tensor | None, time_dim: int, fill: float | int
                    ) -> Tensor | None:
            """a over b, both left-padded to the longer time (and attention to ``source``)."""
            if a is None or b is None:
                return None
            if a.dim() > time_dim + 1:
                a, b = _padded(a, -1, source, 0.0), _padded(b, -1, source, 0.0)
            time = max(a.size(time_dim), b.size(time_dim))
            return torch.cat([_padded(a, time_dim, time, fill, left=True),
                              _padded(b, time_dim, time, fill, left=True)])

        return _Rows(
            beam=self.beam, encoded=encoded, state=state,
            src_lengths=torch.cat([self.src_lengths, new.src_lengths]),
            limits=torch.cat([self.limits, new.limits]),
            lengths=torch.cat([self.lengths, new.lengths]),
            done=torch.cat([self.done, new.done]), scores=torch.cat([self.scores, new.scores]),
            history=stacked(self.history, new.history, 1, PAD_ID),
            prev=torch.cat([self.prev, new.prev]),
            looked=stacked(self.looked, new.looked, 1, 0.0),
            finished_scores=torch.cat([self.finished_scores, new.finished_scores]),
            finished_tokens=stacked(self.finished_tokens, new.finished_tokens, 2, PAD_ID),
            finished_attention=stacked(self.finished_attention, new.finished_attention, 2, 0.0))


def length_penalty(lengths: Tensor, config: DecodeConfig) -> Tensor:
    """(n,) the divisor of each hypothesis' log-probability; ``lengths`` count the EOS.

    Computed in fp64 and rounded once, as a Python float divisor would be.
    """
    lengths = lengths.double()
    if config.length_penalty == "gnmt":
        return (((5.0 + lengths) / 6.0) ** config.alpha).float()
    if config.length_penalty == "average":
        return lengths.float()
    return torch.ones_like(lengths, dtype=torch.float32)


def _best_of(kept: Tensor, new: Tensor, best: Tensor, fill: float | int) -> Tensor:
    """Rows (n, K, t, ...) of [kept, new] along dim 1 picked by ``best`` (n, K), after
    left-padding both to one length in time."""
    time = max(kept.size(2), new.size(2))
    both = torch.cat([_padded(kept, 2, time, fill, left=True),
                      _padded(new, 2, time, fill, left=True)], dim=1)
    return both[torch.arange(len(best), device=best.device)[:, None], best]


def _padded(tensor: Tensor, dim: int, size: int, fill: float | int | bool, *,
            left: bool = False) -> Tensor:
    """``tensor`` padded with ``fill`` to ``size`` along ``dim`` (at the end, or the start)."""
    dim = dim % tensor.dim()
    missing = size - tensor.size(dim)
    if missing <= 0:
        return tensor
    widths = [0] * (2 * (tensor.dim() - dim))  # pad() lists the last dim first, ``dim`` last
    widths[-2 if left else -1] = missing
    return nn.functional.pad(tensor, widths, value=fill)


def _last(tensor: Tensor, size: int, dim: int) -> Tensor:
    """The last ``size`` entries along ``dim`` (right-aligned data keeps all it needs)."""
    return tensor.narrow(dim, tensor.size(dim) - size, size) if tensor.size(dim) > size else (
        tensor)
