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

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from s2s.config import DecodeConfig
from s2s.data.batching import pad
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s.model.ensemble import AnyEncoded, AnyState, Decodable
from s2s.search.constraints import (
    NO_TERMS,
    Candidates,
    PackedTerms,
    TargetTerms,
    bar_unfinished_ends,
    constrained_candidates,
    force_prefix,
)
from s2s.search.hypothesis import Hypothesis
from s2s.search.steps import (
    beam_topk,
    keeps_passengers,
    max_output_lengths,
    next_token_log_probs,
    rows_to_keep,
)


class BeamBatch:
    """The running beam search of many sentences, each known by the index its caller gave it."""

    def __init__(self, model: Decodable, config: DecodeConfig, device: torch.device, *,
                 with_attention: bool = False, word_starts: Tensor | None = None) -> None:
        """``with_attention``: hypotheses carry their attention weights (``Hypothesis``);
        ``word_starts`` (V,) bool: the target pieces that may follow a whole word (for
        prefixes that end one and after constraints, ``s2s.search.constraints``); None for
        languages written without spaces."""
        self.model, self.config, self.device = model, config, device
        self.word_starts = word_starts
        self.beam = config.beam_size
        self.with_attention = with_attention
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
        terms = [NO_TERMS] * len(sentences) if terms is None else terms
        if not len(sentences):
            return
        src, src_lengths = (tensor.to(self.device) for tensor in pad(sentences, suffix=EOS_ID))
        encoded, state = self.model.encode(src, src_lengths,
                                           for_search=self.step_layers is None)
        if self.step_layers is None:
            self.step_layers = encoded.step_layers
        encoded = encoded.with_step_layers(self.step_layers)
        count, beam = len(sentences), self.beam
        state = state.select(torch.arange(count, device=self.device).repeat_interleave(beam))
        new = BeamState.start(encoded, state, src_lengths, max_output_lengths(
            src_lengths, self.config), beam, self.with_attention,
            PackedTerms.of(terms, self.device))
        if self.beams is not None:
            self._keep(rows_to_keep(self.beams.done, passengers=False))
        self.beams = new if self.beams is None else self.beams.joined(new)
        self.indices = [*self.indices, *indices]

    @torch.inference_mode()
    def step(self) -> list[tuple[int, list[Hypothesis]]]:
        """One token for every sentence; the (index, ``nbest`` best hypotheses) of those that
        are done now."""
        beams, beam, config = self.beams, self.beam, self.config
        if beams is None:
            return []
        logits, beams.state, weights = self.model.decode_step(beams.prev, beams.state,
                                                              beams.encoded)
        if beams.attention is not None:
            beams.attention = torch.cat([beams.attention, weights.float()[:, None]], dim=1)
        at_limit = (beams.lengths >= beams.limits).repeat_interleave(beam)
        log_probs = next_token_log_probs(logits, beams.history, at_limit, config,
                                         normalised=self.model.gives_log_probs)  # (n K, V)
        if beams.prefix.size(1):
            force_prefix(log_probs, *(tensor.repeat_interleave(beam, dim=0) for tensor in (
                beams.prefix, beams.prefix_lengths, beams.prefix_ends_word, beams.lengths)),
                self.word_starts)
        width = min(2 * beam, log_probs.size(1))
        if beams.constraints.size(1):
            top_scores, tokens, origins, constrained = self._constrained(log_probs, width)
        else:
            top_scores, tokens, origins = beam_topk(log_probs, beams.scores, width)  # (n, 2K)
            constrained = None
        beams.lengths += 1
        beams.finish(top_scores, tokens == EOS_ID, origins, config)
        # the K best candidates that did not end continue
        ended = (tokens == EOS_ID) | torch.isinf(top_scores)
        position = torch.arange(top_scores.size(1), device=self.device)
        keep = torch.argsort(position + ended * top_scores.size(1), dim=1)[:, :beam]  # (n, K)
        beams.scores = top_scores.gather(1, keep)
        beams.extend(origins.gather(1, keep).view(-1), tokens.gather(1, keep).view(-1, 1))
        if constrained is not None:
            beams.met = constrained.met.gather(1, keep[:, :, None].expand(
                -1, -1, constrained.met.size(2))).flatten(0, 1)
            beams.progress = constrained.progress.gather(1, keep).view(-1)
            beams.position = constrained.position.gather(1, keep).view(-1)
            beams.just_met = constrained.just_met.gather(1, keep).view(-1)
        newly_done = (beams.complete() | torch.isinf(beams.scores).all(dim=1)) & ~beams.done
        beams.done |= newly_done
        beams.scores.masked_fill_(beams.done[:, None], float("-inf"))  # passengers add nothing
        results = self._results(newly_done)
        self._keep(rows_to_keep(beams.done, passengers=self.passengers))
        return results

    def _constrained(self, log_probs: Tensor, width: int
                     ) -> tuple[Tensor, Tensor, Tensor, Candidates]:
        """The 2K first candidates of a constrained step (``s2s.search.constraints``): their
        scores, tokens and origin rows (n, 2K), and all of them with their constraint
        states."""
        beams = self.beams
        assert beams is not None
        bar_unfinished_ends(log_probs, beams.met, beams.just_met, self.word_starts)
        candidates = constrained_candidates(
            log_probs, beams.scores, width, constraints=beams.constraints,
            constraint_lengths=beams.constraint_lengths, met=beams.met,
            progress=beams.progress, position=beams.position)
        first = min(2 * self.beam, candidates.scores.size(1))
        candidates.met, candidates.progress, candidates.position, candidates.just_met = (
            candidates.met[:, :first], candidates.progress[:, :first],
            candidates.position[:, :first], candidates.just_met[:, :first])
        return (candidates.scores[:, :first], candidates.tokens[:, :first],
                candidates.origins[:, :first], candidates)

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


def _per_sentence(time_dim: int | None = None, fill: float = 0.0, *,
                  end_dims: tuple[int, ...] = (), end_fill: float = 0.0) -> Any:
    """A field of ``BeamState`` with a row per sentence (see ``_Layout``)."""
    return field(metadata={"layout": _Layout("sentence", time_dim, fill, end_dims, end_fill)})


def _per_beam(time_dim: int | None = None, fill: float = 0.0, *,
              end_dims: tuple[int, ...] = (), end_fill: float = 0.0) -> Any:
    """A field of ``BeamState`` with a row per beam, K consecutive rows per sentence."""
    return field(metadata={"layout": _Layout("beam", time_dim, fill, end_dims, end_fill)})


@dataclass(frozen=True)
class _Layout:
    """How a tensor of ``BeamState`` is selected and joined: its rows are sentences or beams;
    a ``time_dim`` is right-aligned (trimmed to the longest history on select, left-padded with
    ``fill`` on join); ``end_dims`` (a source, constraint phrases) are padded at their end with
    ``end_fill`` to the longer of the two on join."""

    rows: str  # "sentence" or "beam"
    time_dim: int | None
    fill: float
    end_dims: tuple[int, ...]
    end_fill: float


@dataclass
class BeamState:
    """The tensors of a running beam search, n sentences with K beams each. Every field says
    how it is kept and joined (``_per_sentence``, ``_per_beam``); ``selected`` and ``joined``
    read that, so adding a tensor is adding a field.

    Token histories and attention are right-aligned in time, and so are the finished
    hypotheses of each sentence (its K best ended so far).
    """

    beam: int = field(metadata={"layout": None})
    encoded: AnyEncoded = field(metadata={"layout": None})  # n sentences
    state: AnyState = field(metadata={"layout": None})  # n K beams
    src_lengths: Tensor = _per_sentence()  # (n,) EOS included
    limits: Tensor = _per_sentence()  # (n,) most tokens each may get
    lengths: Tensor = _per_sentence()  # (n,) tokens chosen so far
    done: Tensor = _per_sentence()  # (n,) bool: passengers
    scores: Tensor = _per_sentence()  # (n, K) raw log-probabilities of the live beams
    history: Tensor = _per_beam(time_dim=1, fill=PAD_ID)  # (n K, t) tokens chosen
    prev: Tensor = _per_beam()  # (n K,) the last of them (BOS at first)
    attention: Tensor | None = _per_beam(time_dim=1, end_dims=(2,))  # (n K, t, S) or None
    finished_scores: Tensor = _per_sentence()  # (n, K) length-penalised, -inf where none yet
    finished_tokens: Tensor = _per_sentence(time_dim=2, fill=PAD_ID)  # (n, K, t') no EOS
    finished_attention: Tensor | None = _per_sentence(time_dim=2, end_dims=(3,))
    # (n, K, t' + 1, S) or None
    # target terms (s2s.search.constraints): the prefix each must start with
    prefix: Tensor = _per_sentence(end_dims=(1,), end_fill=PAD_ID)  # (n, P)
    prefix_lengths: Tensor = _per_sentence()  # (n,)
    prefix_ends_word: Tensor = _per_sentence()  # (n,) bool
    # the phrases each must contain, and each beam's progress through them
    constraints: Tensor = _per_sentence(end_dims=(1, 2), end_fill=PAD_ID)  # (n, M, L)
    constraint_lengths: Tensor = _per_sentence(end_dims=(1,))  # (n, M), 0: no phrase
    met: Tensor = _per_beam(end_dims=(1,), end_fill=True)  # (n K, M) bool
    progress: Tensor = _per_beam()  # (n K,) the phrase it is inside, -1: none
    position: Tensor = _per_beam()  # (n K,) tokens of that phrase produced
    just_met: Tensor = _per_beam()  # (n K,) bool: its last token completed a phrase

    @classmethod
    def start(cls, encoded: AnyEncoded, state: AnyState, src_lengths: Tensor, limits: Tensor,
              beam: int, with_attention: bool, terms: PackedTerms) -> "BeamState":
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
            prefix=terms.prefix, prefix_lengths=terms.prefix_lengths,
            prefix_ends_word=terms.prefix_ends_word, constraints=terms.constraints,
            constraint_lengths=terms.constraint_lengths,
            met=(terms.constraint_lengths == 0).repeat_interleave(beam, dim=0),
            progress=torch.full((count * beam,), -1, dtype=torch.long, device=device),
            position=torch.zeros(count * beam, dtype=torch.long, device=device),
            just_met=torch.zeros(count * beam, dtype=torch.bool, device=device))

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

        def select(tensor: Tensor, layout: _Layout) -> Tensor:
            tensor = tensor[kept if layout.rows == "sentence" else beam_rows]
            return tensor if layout.time_dim is None else _last(tensor, longest,
                                                                 layout.time_dim)

        return self._mapped(select, encoded=self.encoded.select(kept),
                            state=self.state.select(beam_rows))

    def joined(self, new: "BeamState") -> "BeamState":
        """These sentences followed by ``new`` ones (which start at their first step)."""
        def join(tensor: Tensor, layout: _Layout, name: str) -> Tensor:
            other = getattr(new, name)
            for dim in layout.end_dims:
                size = max(tensor.size(dim), other.size(dim))
                tensor, other = (_padded(t, dim, size, layout.end_fill) for t in (tensor, other))
            if layout.time_dim is not None:
                time = max(tensor.size(layout.time_dim), other.size(layout.time_dim))
                tensor, other = (_padded(t, layout.time_dim, time, layout.fill, left=True)
                                 for t in (tensor, other))
            return torch.cat([tensor, other])

        return self._mapped(join, encoded=self.encoded.joined(new.encoded),
                            state=self.state.joined(new.state), with_name=True)

    def _mapped(self, change: Callable[..., Tensor], *, encoded: AnyEncoded, state: AnyState,
                with_name: bool = False) -> "BeamState":
        """A new state whose tensors are ``change(tensor, layout[, name])`` of these."""
        values: dict[str, Any] = {"beam": self.beam, "encoded": encoded, "state": state}
        for item in fields(self):
            layout, tensor = item.metadata["layout"], getattr(self, item.name)
            if layout is None:
                continue
            values[item.name] = None if tensor is None else (
                change(tensor, layout, item.name) if with_name else change(tensor, layout))
        return BeamState(**values)


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
