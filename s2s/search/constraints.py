"""What a sentence's translation must contain, and how search keeps to it.

``TargetTerms`` are a sentence's target-side demands in token ids: a **prefix** the output must
start with (forced token by token, its log-probabilities counted in the score) and
**constraints**, phrases that must each appear somewhere, whole and in order (terminology).

Constraints are kept by lexically constrained beam search with dynamic beam allocation (Post &
Vilar 2018), vectorised over the batch. Each beam knows which constraints it has met and which
one it is partway through. Every step, besides each beam's best next tokens, every beam is
offered the next token of the constraint it is inside, or else the first token of each
constraint it has not met. Candidates are grouped in banks by how many constraint tokens they
have produced, and the beam is filled round-robin across banks (each bank's best first, the
fullest bank first), so hypotheses that met more constraints are never crowded out by likelier
ones that met fewer. A hypothesis may end only once it has met every constraint; leaving a
constraint partway undoes the progress on it, so a constraint's tokens always appear together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from s2s.data.vocab import EOS_ID, PAD_ID
from s2s.search.steps import joined, row_topk


@dataclass(frozen=True)
class TargetTerms:
    """A sentence's target-side demands, as token ids (no BOS/EOS)."""

    prefix: tuple[int, ...] = ()
    constraints: tuple[tuple[int, ...], ...] = ()
    # the prefix ends a word (its text ended in a space): the next token must start a word
    prefix_ends_word: bool = False

    @property
    def tokens_needed(self) -> int:
        """Output tokens the demands take at least (constraints counted apart from the
        prefix)."""
        return len(self.prefix) + sum(len(phrase) for phrase in self.constraints)


NO_TERMS = TargetTerms()


@dataclass
class PackedTerms:
    """``TargetTerms`` of n sentences as padded tensors."""

    prefix: Tensor  # (n, P) PAD after each prefix
    prefix_lengths: Tensor  # (n,)
    prefix_ends_word: Tensor  # (n,) bool
    constraints: Tensor  # (n, M, L) PAD after each phrase and for missing phrases
    constraint_lengths: Tensor  # (n, M), 0 for missing phrases

    @classmethod
    def of(cls, terms: Sequence[TargetTerms], device: torch.device) -> "PackedTerms":
        count = len(terms)
        longest_prefix = max((len(t.prefix) for t in terms), default=0)
        phrases = max((len(t.constraints) for t in terms), default=0)
        longest_phrase = max((len(p) for t in terms for p in t.constraints), default=0)
        prefix = torch.full((count, longest_prefix), PAD_ID, dtype=torch.long)
        constraints = torch.full((count, phrases, longest_phrase), PAD_ID, dtype=torch.long)
        lengths = torch.zeros((count, phrases), dtype=torch.long)
        for row, of_row in enumerate(terms):
            prefix[row, :len(of_row.prefix)] = torch.tensor(of_row.prefix, dtype=torch.long)
            for column, phrase in enumerate(of_row.constraints):
                constraints[row, column, :len(phrase)] = torch.tensor(phrase, dtype=torch.long)
                lengths[row, column] = len(phrase)
        return cls(prefix.to(device),
                   torch.tensor([len(t.prefix) for t in terms], dtype=torch.long, device=device),
                   torch.tensor([t.prefix_ends_word for t in terms], dtype=torch.bool,
                                device=device),
                   constraints.to(device), lengths.to(device))

    def select(self, rows: Tensor) -> "PackedTerms":
        """The terms of the sentences at ``rows`` (kept or repeated)."""
        return PackedTerms(self.prefix[rows], self.prefix_lengths[rows],
                           self.prefix_ends_word[rows], self.constraints[rows],
                           self.constraint_lengths[rows])

    def joined(self, other: "PackedTerms") -> "PackedTerms":
        """These sentences' terms followed by ``other``'s, padded to the longer of each."""
        return PackedTerms(joined(self.prefix, other.prefix, end_dims=(1,), end_fill=PAD_ID),
                           torch.cat([self.prefix_lengths, other.prefix_lengths]),
                           torch.cat([self.prefix_ends_word, other.prefix_ends_word]),
                           joined(self.constraints, other.constraints, end_dims=(1, 2),
                                  end_fill=PAD_ID),
                           joined(self.constraint_lengths, other.constraint_lengths,
                                  end_dims=(1,)))


@dataclass
class BeamTerms:
    """The terms of the n sentences of a beam search (K beams each), and each beam's progress
    through its sentence's constraints: all that beam search keeps for terms, and nothing
    that beam search without them carries (``s2s.search.beam``)."""

    terms: PackedTerms  # per sentence
    met: Tensor  # (n K, M) bool: the constraints each beam has met (True for missing phrases)
    progress: Tensor  # (n K,) the phrase it is inside, -1: none
    position: Tensor  # (n K,) tokens of that phrase produced
    just_met: Tensor  # (n K,) bool: its last token completed a phrase

    @classmethod
    def start(cls, terms: PackedTerms, beam: int) -> "BeamTerms":
        rows, device = len(terms.prefix_lengths) * beam, terms.prefix.device
        return cls(terms, (terms.constraint_lengths == 0).repeat_interleave(beam, dim=0),
                   torch.full((rows,), -1, dtype=torch.long, device=device),
                   torch.zeros(rows, dtype=torch.long, device=device),
                   torch.zeros(rows, dtype=torch.bool, device=device))

    @property
    def constrained(self) -> bool:
        """Whether any sentence has constraints (else beam search takes plain top-k)."""
        return bool(self.terms.constraints.size(1))

    def force_prefix(self, log_probs: Tensor, lengths: Tensor, beam: int,
                     word_starts: Tensor | None) -> None:
        """``force_prefix`` on the (n K, V) log-probabilities of beams that have chosen
        ``lengths`` (n,) tokens."""
        terms = self.terms
        if terms.prefix.size(1):
            force_prefix(log_probs, *(tensor.repeat_interleave(beam, dim=0) for tensor in (
                terms.prefix, terms.prefix_lengths, terms.prefix_ends_word, lengths)),
                word_starts)

    def candidates(self, log_probs: Tensor, beam_scores: Tensor, width: int,
                   word_starts: Tensor | None) -> Candidates:
        """The 2K first candidates of a constrained step (``constrained_candidates`` over each
        beam's ``width`` best tokens, after ``bar_unfinished_ends``)."""
        bar_unfinished_ends(log_probs, self.met, self.just_met, word_starts)
        found = constrained_candidates(
            log_probs, beam_scores, width, constraints=self.terms.constraints,
            constraint_lengths=self.terms.constraint_lengths, met=self.met,
            progress=self.progress, position=self.position)
        first = 2 * beam_scores.size(1)
        return Candidates(*(tensor[:, :first] for tensor in (
            found.scores, found.tokens, found.origins, found.met, found.progress,
            found.position, found.just_met)))

    def advance(self, candidates: Candidates, keep: Tensor) -> None:
        """The beams go on as the candidates ``keep`` (n, K) of ``candidates``."""
        self.met = candidates.met.gather(1, keep[:, :, None].expand(
            -1, -1, candidates.met.size(2))).flatten(0, 1)
        self.progress, self.position, self.just_met = (
            tensor.gather(1, keep).view(-1) for tensor in (
                candidates.progress, candidates.position, candidates.just_met))

    def selected(self, sentences: Tensor, beam_rows: Tensor) -> "BeamTerms":
        return BeamTerms(self.terms.select(sentences), self.met[beam_rows],
                         self.progress[beam_rows], self.position[beam_rows],
                         self.just_met[beam_rows])

    def joined(self, other: "BeamTerms") -> "BeamTerms":
        return BeamTerms(self.terms.joined(other.terms),
                         joined(self.met, other.met, end_dims=(1,), end_fill=True),
                         *(torch.cat([mine, theirs]) for mine, theirs in (
                             (self.progress, other.progress), (self.position, other.position),
                             (self.just_met, other.just_met))))


def force_prefix(log_probs: Tensor, prefix: Tensor, prefix_lengths: Tensor,
                 prefix_ends_word: Tensor, lengths: Tensor, word_starts: Tensor | None) -> None:
    """In place on (N, V) log-probabilities of rows that have chosen ``lengths`` tokens: rows
    still inside their prefix may only take its next token (at its own log-probability); rows
    just past a prefix that ends a word may only start a word (or end)."""
    if prefix.size(1) == 0:
        return
    inside = lengths < prefix_lengths
    if bool(inside.any()):
        position = lengths.clamp(max=prefix.size(1) - 1)[:, None]
        forced = prefix.gather(1, position)  # (N, 1)
        kept = log_probs.gather(1, forced)
        log_probs.masked_fill_(inside[:, None], float("-inf"))
        log_probs.scatter_(1, forced, torch.where(inside[:, None], kept,
                                                  log_probs.gather(1, forced)))
    if word_starts is not None:
        starting = prefix_ends_word & (lengths == prefix_lengths)
        if bool(starting.any()):
            log_probs.masked_fill_(starting[:, None] & ~word_starts[None], float("-inf"))


@dataclass
class Candidates:
    """A step's candidates per sentence (n, C), in the order the beam takes them."""

    scores: Tensor  # raw log-probabilities of the hypotheses they make
    tokens: Tensor
    origins: Tensor  # the beam row each extends
    met: Tensor  # (n, C, M) constraints met after the token
    progress: Tensor  # (n, C) the constraint it is inside (-1: none)
    position: Tensor  # (n, C) its tokens produced so far
    just_met: Tensor  # (n, C) bool: its token completed a constraint


def constrained_candidates(log_probs: Tensor, beam_scores: Tensor, width: int, *,
                           constraints: Tensor, constraint_lengths: Tensor, met: Tensor,
                           progress: Tensor, position: Tensor) -> Candidates:
    """The candidates of one step of constrained beam search, in dynamic-beam-allocation
    order (module docstring), for n sentences of K beams.

    ``log_probs`` (n K, V) are the restricted next-token log-probabilities (EOS already barred
    where constraints are unmet); ``beam_scores`` (n, K); ``constraints`` (n, M, L) with
    ``constraint_lengths`` (n, M); per beam ``met`` (n K, M), ``progress`` and ``position``
    (n K,).
    """
    count, beam = beam_scores.shape
    rows = torch.arange(count * beam, device=log_probs.device)
    phrases = constraints.size(1)
    row_constraints = constraints.repeat_interleave(beam, dim=0)  # (n K, M, L)
    row_lengths = constraint_lengths.repeat_interleave(beam, dim=0)  # (n K, M)
    next_in_progress = row_constraints[rows, progress.clamp(min=0),
                                       position.clamp(max=constraints.size(2) - 1)]  # (n K,)
    inside = progress >= 0
    # offered tokens: the next token of the constraint a beam is inside, else each unmet
    # constraint's first token
    offered = torch.where(inside[:, None], next_in_progress[:, None], row_constraints[:, :, 0])
    columns = torch.arange(phrases, device=log_probs.device)
    offer = torch.where(inside[:, None], columns[None] == progress[:, None],
                        ~met & (row_lengths > 0))
    top_scores, top_tokens = row_topk(log_probs, width)  # (n K, W)
    offer &= ~(offered[:, :, None] == top_tokens[:, None, :]).any(dim=2)  # not already there
    earlier = torch.ones(phrases, phrases, dtype=torch.bool, device=offer.device).tril(-1)
    same = (offered[:, :, None] == offered[:, None, :]) & offer[:, None, :] & earlier
    offer &= ~same.any(dim=2)  # an offered token once per beam
    offered_scores = log_probs.gather(1, offered).masked_fill(~offer, float("-inf"))
    tokens = torch.cat([top_tokens, offered], dim=1)  # (n K, W + M)
    scores = torch.cat([top_scores.float(), offered_scores.float()], dim=1)
    per_beam = tokens.size(1)
    scores = (beam_scores.reshape(-1, 1) + scores).view(count, -1)  # (n, C)
    tokens = tokens.view(count, -1)
    origins = rows.repeat_interleave(per_beam).view(count, -1)
    new_met, new_progress, new_position, just_met = _advanced(
        tokens, origins, constraints, constraint_lengths, met, progress, position,
        next_in_progress)
    bank = (new_met * constraint_lengths[:, None]).sum(dim=2) + new_position  # (n, C)
    order = _allocation_order(scores, bank, int(constraint_lengths.sum(dim=1).max()) + 1)
    scores, tokens, origins, new_progress, new_position, just_met = (
        tensor.gather(1, order) for tensor in (scores, tokens, origins, new_progress,
                                               new_position, just_met))
    return Candidates(scores, tokens, origins,
                      new_met.gather(1, order[:, :, None].expand(-1, -1, phrases)),
                      new_progress, new_position, just_met)


def _advanced(tokens: Tensor, origins: Tensor, constraints: Tensor, lengths: Tensor,
              met: Tensor, progress: Tensor, position: Tensor, next_in_progress: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each candidate's constraint state (met (n, C, M), progress, position) after its
    token, and whether that token completed a constraint."""
    was_met, was_inside = met[origins], progress[origins]  # (n, C, M), (n, C)
    goes_on = (was_inside >= 0) & (tokens == next_in_progress[origins])
    new_position = torch.where(goes_on, position[origins] + 1, 0)
    new_progress = torch.where(goes_on, was_inside, -1)
    # not going on (or never inside): the token may start an unmet constraint
    starts = (~was_met & (lengths[:, None] > 0) & (tokens[:, :, None] == constraints[:, None, :, 0])
              & ~goes_on[:, :, None])
    starting = starts.any(dim=2)
    first = starts.int().argmax(dim=2)
    new_progress = torch.where(starting, first, new_progress)
    new_position = torch.where(starting, 1, new_position)
    # a constraint whose last token this was is met
    current = new_progress.clamp(min=0)
    length_of_current = lengths.gather(1, current)
    done = (new_progress >= 0) & (new_position == length_of_current)
    new_met = was_met | (functional.one_hot(current, lengths.size(1)).bool() & done[:, :, None])
    new_progress = new_progress.masked_fill(done, -1)
    new_position = new_position.masked_fill(done, 0)
    return new_met, new_progress, new_position, done


def _allocation_order(scores: Tensor, bank: Tensor, banks: int) -> Tensor:
    """Candidate indices (n, C) round-robin over banks: every bank's best, fullest bank
    first, then every bank's second best, ...; impossible candidates (-inf) last."""
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    sorted_bank = bank.gather(1, by_score)
    seen = functional.one_hot(sorted_bank, banks).cumsum(dim=1)  # (n, C, banks)
    rank = seen.gather(2, sorted_bank[:, :, None])[:, :, 0] - 1  # rank within its bank
    priority = rank * banks + (banks - 1 - sorted_bank)
    impossible = torch.isinf(scores.gather(1, by_score))
    priority = priority.masked_fill(impossible, torch.iinfo(priority.dtype).max)
    return by_score.gather(1, priority.argsort(dim=1, stable=True))


def bar_unfinished_ends(log_probs: Tensor, met: Tensor, just_met: Tensor,
                        word_starts: Tensor | None) -> None:
    """In place: rows that have not met every constraint may not choose EOS; rows that have
    just completed one may not continue its last word (with ``word_starts``: languages
    written with spaces)."""
    unmet = ~met.all(dim=1)
    log_probs[:, EOS_ID] = log_probs[:, EOS_ID].masked_fill(unmet, float("-inf"))
    if word_starts is not None and bool(just_met.any()):
        log_probs.masked_fill_(just_met[:, None] & ~word_starts[None], float("-inf"))
