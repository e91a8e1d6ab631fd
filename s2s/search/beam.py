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
passenger (scores -inf) until the running ones fit a smaller bucket size, where that pays
(``rows_to_keep``, ``keeps_passengers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.data.batching import pad
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s.model.decodable import Decodable, SearchEncoded
from s2s.search.constraints import NO_TERMS, BeamTerms, PackedTerms, TargetTerms
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.search.steps import (
    beam_topk,
    joined,
    keeps_passengers,
    max_output_lengths,
    padded,
    restrict,
    rows_to_keep,
)


class BeamBatch:
    """The running beam search of many sentences, each known by the index its caller gave it."""

    def __init__(self, model: Decodable, options: SearchOptions) -> None:
        self.model, self.options, self.config = model, options, options.config
        self.beam = options.config.beam_size
        self.passengers = keeps_passengers(model)
        self.step_layers: Any = None  # the model's joined step layers: built once, reused
        self.indices: list[int] = []  # the caller's index of each sentence row
        self.beams: BeamState | None = None  # None while empty

    def __len__(self) -> int:
        """Sentences in the batch, passengers included."""
        return len(self.indices)

    @property
    def running_tokens(self) -> int:
        """Source tokens (EOS included) of the sentences not yet done."""
        if self.beams is None:
            return 0
        return int(self.beams.src_lengths[~self.beams.done].sum())

    @torch.inference_mode()
    def add(self, sentences: Sequence[np.ndarray | list[int]], indices: Sequence[int],
            terms: Sequence[TargetTerms] | None = None) -> None:
        """Encode ``sentences`` (token ids without EOS) and start them at the next step, each
        with its ``terms`` (a prefix, constraints) if given."""
        if len(sentences) != len(indices):
            raise ValueError(f"{len(sentences)} sentences but {len(indices)} indices")
        if not len(sentences):
            return
        device = self.options.device
        src, src_lengths = (tensor.to(device) for tensor in pad(sentences, suffix=EOS_ID))
        encoded, state = self.model.encode(src, src_lengths,
                                           for_search=self.step_layers is None)
        if self.step_layers is None:
            self.step_layers = encoded.step_layers
        encoded = encoded.with_step_layers(self.step_layers)
        count, beam = len(sentences), self.beam
        state = state.select(torch.arange(count, device=device).repeat_interleave(beam))
        demands = None
        if terms is not None and any(t != NO_TERMS for t in terms):
            demands = BeamTerms.start(PackedTerms.of(terms, device), beam)
        new = BeamState.start(encoded, state, src_lengths, max_output_lengths(
            src_lengths, self.config), beam, self.options.with_attention, demands)
        if self.beams is not None:
            self._keep(rows_to_keep(self.beams.done, passengers=False))
        self.beams = new if self.beams is None else self.beams.joined(new)
        self.indices = [*self.indices, *indices]

    @torch.inference_mode()
    def step(self) -> list[tuple[int, list[Hypothesis]]]:
        """One token for every sentence; the (index, ``nbest`` best hypotheses) of those that
        are done now."""
        beams, beam, options = self.beams, self.beam, self.options
        if beams is None:
            return []
        log_probs, beams.state, weights = self.model.decode_step(beams.prev, beams.state,
                                                                 beams.encoded)
        if beams.attention is not None:
            beams.attention = torch.cat([beams.attention, weights.float()[:, None]], dim=1)
        at_limit = (beams.lengths >= beams.limits).repeat_interleave(beam)
        restrict(log_probs, beams.history, at_limit, self.config)  # (n K, V)
        width = min(2 * beam, log_probs.size(1))
        terms, candidates = beams.terms, None
        if terms is not None:
            terms.force_prefix(log_probs, beams.lengths, beam, options.word_starts)
        if terms is not None and terms.constrained:
            candidates = terms.candidates(log_probs, beams.scores, width, options.word_starts)
            top_scores, tokens, origins = (candidates.scores, candidates.tokens,
                                           candidates.origins)
        else:
            top_scores, tokens, origins = beam_topk(log_probs, beams.scores, width)  # (n, 2K)
        beams.lengths += 1
        beams.finish(top_scores, tokens == EOS_ID, origins, self.config)
        # the K best candidates that did not end continue
        ended = (tokens == EOS_ID) | torch.isinf(top_scores)
        position = torch.arange(top_scores.size(1), device=options.device)
        keep = torch.argsort(position + ended * top_scores.size(1), dim=1)[:, :beam]  # (n, K)
        beams.scores = top_scores.gather(1, keep)
        beams.extend(origins.gather(1, keep).view(-1), tokens.gather(1, keep).view(-1, 1))
        if terms is not None and candidates is not None:
            terms.advance(candidates, keep)
        newly_done = (beams.complete() | torch.isinf(beams.scores).all(dim=1)) & ~beams.done
        beams.done |= newly_done
        beams.scores.masked_fill_(beams.done[:, None], float("-inf"))  # passengers add nothing
        results = self._results(newly_done)
        self._keep(rows_to_keep(beams.done, passengers=self.passengers))
        return results

    def _results(self, newly_done: Tensor) -> list[tuple[int, list[Hypothesis]]]:
        rows = newly_done.nonzero().squeeze(1).tolist()
        if not rows:
            return []
        assert self.beams is not None
        hypotheses = self.beams.hypotheses(rows, self.config.nbest)
        return [(self.indices[row], of_row) for row, of_row in zip(rows, hypotheses)]

    def _keep(self, kept: Tensor | None) -> None:
        """Keep only the sentence rows ``kept`` (None: all)."""
        if kept is None or self.beams is None:
            return
        if len(kept) == 0:
            self.indices, self.beams = [], None
            return
        self.beams = self.beams.selected(kept)
        self.indices = [self.indices[row] for row in kept.tolist()]


@dataclass
class BeamState:
    """The tensors of a running beam search, n sentences with K beams each.

    Token histories and attention are right-aligned in time, and so are the finished
    hypotheses of each sentence (its K best ended so far).
    """

    beam: int
    encoded: SearchEncoded  # n sentences
    state: Any  # n K beams (``s2s.model.decodable.SearchRows``)
    src_lengths: Tensor  # (n,) EOS included
    limits: Tensor  # (n,) most tokens each may get
    lengths: Tensor  # (n,) tokens chosen so far
    done: Tensor  # (n,) bool: passengers
    scores: Tensor  # (n, K) raw log-probabilities of the live beams
    history: Tensor  # (n K, t) tokens chosen
    prev: Tensor  # (n K,) the last of them (BOS at first)
    attention: Tensor | None  # (n K, t, S) or None
    finished_scores: Tensor  # (n, K) length-penalised, -inf where none yet
    finished_tokens: Tensor  # (n, K, t') no EOS
    finished_attention: Tensor | None  # (n, K, t' + 1, S) or None
    terms: BeamTerms | None  # prefixes and constraints, when any sentence has them

    @classmethod
    def start(cls, encoded: SearchEncoded, state: Any, src_lengths: Tensor, limits: Tensor,
              beam: int, with_attention: bool, terms: BeamTerms | None) -> "BeamState":
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
            attention=torch.empty((count * beam, 0, source), device=device) if with_attention
            else None,
            finished_scores=torch.full((count, beam), float("-inf"), device=device),
            finished_tokens=torch.empty((count, beam, 0), dtype=torch.long, device=device),
            finished_attention=torch.empty((count, beam, 0, source), device=device)
            if with_attention else None,
            terms=terms)

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
        prefixes = self.history[origins.reshape(-1)].view(count, width, -1)  # (n, 2K, t)
        all_scores = torch.cat([self.finished_scores, new_scores], dim=1)  # (n, 3K)
        self.finished_scores, best = all_scores.topk(self.beam, dim=1)
        self.finished_tokens = _best_of(self.finished_tokens, prefixes, best, PAD_ID)
        if self.attention is not None and self.finished_attention is not None:
            attention = self.attention[origins.reshape(-1)].view(count, width,
                                                              *self.attention.shape[1:])
            self.finished_attention = _best_of(self.finished_attention, attention, best, 0.0)

    def extend(self, beam_rows: Tensor, tokens: Tensor) -> None:
        """The beams continue from ``beam_rows`` with ``tokens`` (n K, 1)."""
        self.history = torch.cat([self.history[beam_rows], tokens], dim=1)
        self.prev = tokens[:, 0]
        self.state = self.state.select(beam_rows)
        if self.attention is not None:
            self.attention = self.attention[beam_rows]

    def complete(self) -> Tensor:
        """(n,) True where K hypotheses have ended."""
        return ~torch.isinf(self.finished_scores[:, -1])

    def hypotheses(self, indices: list[int], nbest: int) -> list[list[Hypothesis]]:
        """The ``nbest`` best finished hypotheses of the sentences at ``indices``."""
        scores = self.finished_scores[indices, :nbest].tolist()
        tokens = self.finished_tokens[indices, :nbest].tolist()
        sources = self.src_lengths[indices].tolist()
        sentences = []
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
            sentences.append(hypotheses)
        return sentences

    def selected(self, kept: Tensor) -> "BeamState":
        """Only the sentences ``kept``, with time trimmed to their longest history."""
        beam_rows = (kept[:, None] * self.beam + torch.arange(self.beam, device=kept.device)
                     ).view(-1)
        running = self.lengths[kept][~self.done[kept]]
        longest = int(running.max()) if len(running) else 0
        attention, finished_attention = self.attention, self.finished_attention
        return BeamState(
            beam=self.beam, encoded=self.encoded.select(kept),
            state=self.state.select(beam_rows), src_lengths=self.src_lengths[kept],
            limits=self.limits[kept], lengths=self.lengths[kept], done=self.done[kept],
            scores=self.scores[kept], history=_last(self.history[beam_rows], longest, 1),
            prev=self.prev[beam_rows],
            attention=None if attention is None else _last(attention[beam_rows], longest, 1),
            finished_scores=self.finished_scores[kept],
            finished_tokens=_last(self.finished_tokens[kept], longest, 2),
            finished_attention=None if finished_attention is None
            else _last(finished_attention[kept], longest, 2),
            terms=None if self.terms is None else self.terms.selected(kept, beam_rows))

    def joined(self, new: "BeamState") -> "BeamState":
        """These sentences followed by ``new`` ones (which start at their first step)."""
        attention = finished_attention = None
        if self.attention is not None and new.attention is not None:
            attention = joined(self.attention, new.attention, end_dims=(2,), time_dim=1)
        if self.finished_attention is not None and new.finished_attention is not None:
            finished_attention = joined(self.finished_attention, new.finished_attention,
                                        end_dims=(3,), time_dim=2)
        return BeamState(
            beam=self.beam, encoded=self.encoded.joined(new.encoded),
            state=self.state.joined(new.state), src_lengths=torch.cat([
                self.src_lengths, new.src_lengths]),
            limits=torch.cat([self.limits, new.limits]),
            lengths=torch.cat([self.lengths, new.lengths]),
            done=torch.cat([self.done, new.done]), scores=torch.cat([self.scores, new.scores]),
            history=joined(self.history, new.history, time_dim=1, time_fill=PAD_ID),
            prev=torch.cat([self.prev, new.prev]), attention=attention,
            finished_scores=torch.cat([self.finished_scores, new.finished_scores]),
            finished_tokens=joined(self.finished_tokens, new.finished_tokens, time_dim=2,
                                   time_fill=PAD_ID),
            finished_attention=finished_attention, terms=self._joined_terms(new))

    def _joined_terms(self, new: "BeamState") -> BeamTerms | None:
        """Both batches' terms, where either has any (the other's sentences have none)."""
        if self.terms is None and new.terms is None:
            return None
        mine, theirs = (state.terms or BeamTerms.start(PackedTerms.of(
            [NO_TERMS] * len(state.src_lengths), state.src_lengths.device), self.beam)
            for state in (self, new))
        return mine.joined(theirs)


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
    both = torch.cat([padded(kept, 2, time, fill, left=True),
                      padded(new, 2, time, fill, left=True)], dim=1)
    return both[torch.arange(len(best), device=best.device)[:, None], best]


def _last(tensor: Tensor, size: int, dim: int) -> Tensor:
    """The last ``size`` entries along ``dim`` (right-aligned data keeps all it needs)."""
    return tensor.narrow(dim, tensor.size(dim) - size, size) if tensor.size(dim) > size else (
        tensor)
