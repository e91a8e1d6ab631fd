"""A line's target-side terms as a user writes them: a prefix the translation must start with
and phrases it must contain (terminology), their input format, and their checks.

On the command line, ``--prefix`` and ``--constraints`` make each input line tab-separated:

    SOURCE<TAB>PREFIX                          (--prefix)
    SOURCE<TAB>PHRASE<TAB>PHRASE...            (--constraints, as fairseq's --constraints)
    SOURCE<TAB>PREFIX<TAB>PHRASE<TAB>PHRASE... (both)

The server takes the same as ``prefix`` and ``constraints`` fields. Search works on token ids
(``s2s.search.constraints.TargetTerms``): ``TermsCompiler`` encodes these terms with the target
vocabulary, checks them against the line's output limit and the beam, and shares a line's terms
among the pieces of a line too long to translate whole (``s2s.translation.splitting``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import torch

from s2s.config import DecodeConfig
from s2s.data.text import normalize
from s2s.data.vocab import EOS_ID, UNK_ID, Tokenizer
from s2s.errors import DataError
from s2s.search.constraints import NO_TERMS, TargetTerms
from s2s.search.hypothesis import Hypothesis
from s2s.search.steps import max_output_lengths
from s2s.translation.splitting import SourcePiece


@dataclass(frozen=True)
class LineTerms:
    """What one line's translation must start with and contain, as text."""

    prefix: str = ""
    constraints: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prefix) or bool(self.constraints)


NO_LINE_TERMS = LineTerms()


class TermsError(DataError):
    """A line's prefix or constraints cannot be kept; the message names the line."""


def parse_terms_line(line: str, *, prefix: bool, constraints: bool, number: int
                     ) -> tuple[str, LineTerms]:
    """Split one input line into its source and terms (module docstring for the format)."""
    if not prefix and not constraints:
        return line, NO_LINE_TERMS
    fields = line.split("\t")
    source, rest = fields[0], fields[1:]
    if prefix and not constraints and len(rest) > 1:
        raise TermsError(f"line {number}: {len(fields)} tab-separated fields, but --prefix "
                         "takes SOURCE<TAB>PREFIX (a prefix may not contain a tab)")
    given_prefix = rest.pop(0) if prefix and rest else ""
    return source, LineTerms(given_prefix, tuple(rest) if constraints else ())


class TermsCompiler:
    """Users' terms (text) made into search's (token ids) for one model's target side."""

    def __init__(self, tokenizer: Tokenizer, normalization: str, joiner: str,
                 device: torch.device) -> None:
        """``normalization`` and ``joiner``: the target side's (``s2s.data.text``)."""
        self.tokenizer, self.normalization, self.joiner = tokenizer, normalization, joiner
        self.device = device
        self._word_starts: torch.Tensor | None = None  # built on first use

    def word_starts(self) -> torch.Tensor | None:
        """(V,) the target pieces that may follow a whole word: those that begin a word,
        punctuation, and EOS; None for a language written without spaces. Built once (a
        Python pass over the vocabulary), not for every batch."""
        if self.joiner == "":
            return None
        if self._word_starts is None:
            tokenizer = self.tokenizer
            starts = torch.tensor([piece.startswith("\u2581") or not piece[:1].isalnum()
                                   for piece in tokenizer.pieces(range(len(tokenizer)))])
            starts[EOS_ID] = True
            self._word_starts = starts.to(self.device)
        return self._word_starts

    def compile(self, terms: LineTerms, source_tokens: int, number: int,
                decode: DecodeConfig) -> TargetTerms:
        """``terms`` in target token ids, checked against the beam and the line's output
        limit (a ``TermsError`` names line ``number`` and what to change)."""
        prefix: list[int] = []
        if terms.prefix.strip():
            prefix = self.tokenizer.encode([normalize(terms.prefix, self.normalization)])[0]
            _check_spelled(prefix, "the prefix", terms.prefix, number)
        phrases = []
        for rank, phrase in enumerate(terms.constraints, 1):
            if not phrase.strip():
                raise TermsError(f"line {number}: constraint {rank} is empty")
            ids = self.tokenizer.encode([normalize(phrase, self.normalization)])[0]
            if ids and self.tokenizer.pieces(ids[:1]) == ["\u2581"]:
                ids = ids[1:]  # a lone word-start piece: languages without spaces need none
            _check_spelled(ids, f"constraint {rank}", phrase, number)
            phrases.append(tuple(ids))
        if phrases and decode.sampling:
            raise TermsError(f"line {number}: constraints need beam search; sampling "
                             "(decode.sampling) cannot keep them")
        if len(phrases) > decode.beam_size:
            raise TermsError(f"line {number}: {len(phrases)} constraints, more than the beam "
                             f"holds (decode.beam_size {decode.beam_size}); give a beam of "
                             f"at least {len(phrases)} or fewer constraints")
        target = TargetTerms(tuple(prefix), tuple(phrases),
                             prefix_ends_word=bool(prefix) and terms.prefix[-1:].isspace()
                             and self.joiner != "")
        limit = int(max_output_lengths(torch.tensor([source_tokens + 1]), decode)[0])
        if target.tokens_needed > limit:
            raise TermsError(
                f"line {number}: the prefix and constraints take {target.tokens_needed} target "
                f"tokens, more than this line's output limit of {limit} (decode.max_len_a x "
                f"{source_tokens} source tokens + decode.max_len_b)")
        return target

    def for_lines(self, terms: Sequence[LineTerms], pieces: Sequence[SourcePiece],
                  line_of_piece: Sequence[int], first_line: int, decode: DecodeConfig
                  ) -> dict[int, TargetTerms]:
        """The checked token-id terms of each non-empty line that has any (line ``first_line
        + i`` is ``terms[i]``, translated as the ``pieces`` whose line is ``i``)."""
        source_tokens: dict[int, int] = {}
        for piece, line in zip(pieces, line_of_piece):
            source_tokens[line] = source_tokens.get(line, 0) + len(piece.ids)
        return {line: self.compile(terms[line], count, first_line + line, decode)
                for line, count in source_tokens.items() if terms[line]}

    def respelled_prefix(self, texts: Sequence[str], prefix_ids: Sequence[int], prefix: str
                         ) -> list[str]:
        """Translations ``texts`` that start with the prefix's tokens, that start written
        exactly as the user's ``prefix`` (the prefix is decoded once for all of them)."""
        decoded = " ".join(self.tokenizer.decode([list(prefix_ids)])[0].split())
        keeps_space = prefix[-1:].isspace()
        return [prefix + (text[len(decoded):].lstrip() if keeps_space else text[len(decoded):])
                if text.startswith(decoded) else text for text in texts]


def for_pieces(targets: Mapping[int, TargetTerms], line_of_piece: Sequence[int]
               ) -> list[TargetTerms]:
    """Each piece's terms: a line's prefix goes to its first piece; its constraints to the
    piece when the line is whole, and wait for ``constrain_split_lines`` when it is split."""
    first_piece: dict[int, int] = {}
    for index, line in enumerate(line_of_piece):
        first_piece.setdefault(line, index)
    piece_count = Counter(line_of_piece)
    return [TargetTerms(
        prefix=targets[line].prefix if first_piece[line] == index else (),
        prefix_ends_word=targets[line].prefix_ends_word and first_piece[line] == index,
        constraints=targets[line].constraints if piece_count[line] == 1 else ())
        if line in targets else NO_TERMS for index, line in enumerate(line_of_piece)]


# translates pieces with their terms: the hypotheses of each, best first
Decode = Callable[[Sequence[SourcePiece], Sequence[TargetTerms]], list[list[Hypothesis]]]


def constrain_split_lines(pieces: Sequence[SourcePiece], line_of_piece: list[int],
                          targets: Mapping[int, TargetTerms], piece_terms: list[TargetTerms],
                          hypotheses: list[list[Hypothesis]], decode: Decode,
                          settings: DecodeConfig, first_line: int) -> None:
    """Give each constraint of a line that was split to the piece whose first translation
    shares most of the phrase's tokens (the longer source on a tie, within each piece's beam
    and output limit), and translate those pieces again with them (``decode``), in place."""
    redo: list[int] = []
    for line, target in targets.items():
        indices = [i for i, of in enumerate(line_of_piece) if of == line]
        if len(indices) == 1 or not target.constraints:
            continue
        given: dict[int, list[tuple[int, ...]]] = {index: [] for index in indices}
        for phrase in target.constraints:
            room = [index for index in indices if _holds(
                pieces[index], piece_terms[index], given[index] + [phrase], settings)]
            if not room:
                raise TermsError(f"line {first_line + line}: its constraints do not fit "
                                 "the pieces it is split into (it is over the model's "
                                 "length limit); split the line or give fewer")
            given[max(room, key=lambda index: (
                _shared_tokens(phrase, hypotheses[index]), len(pieces[index].ids)))
                  ].append(phrase)
        for index, phrases in given.items():
            if phrases:
                piece_terms[index] = replace(piece_terms[index], constraints=tuple(phrases))
                redo.append(index)
    if redo:
        again = decode([pieces[i] for i in redo], [piece_terms[i] for i in redo])
        for index, of_piece in zip(redo, again):
            hypotheses[index] = of_piece


def _holds(piece: SourcePiece, terms: TargetTerms, phrases: list[tuple[int, ...]],
           decode: DecodeConfig) -> bool:
    limit = int(max_output_lengths(torch.tensor([len(piece.ids) + 1]), decode)[0])
    needed = len(terms.prefix) + sum(len(phrase) for phrase in phrases)
    return len(phrases) <= decode.beam_size and needed <= limit


def _shared_tokens(phrase: Sequence[int], hypotheses: list[Hypothesis]) -> int:
    """How many of ``phrase``'s tokens the best of ``hypotheses`` has."""
    best = hypotheses[0].tokens if hypotheses else []
    return sum(token in best for token in phrase)


def _check_spelled(ids: Sequence[int], what: str, text: str, number: int) -> None:
    if UNK_ID in ids:
        raise TermsError(f"line {number}: {what} ({text!r}) has characters the target "
                         "vocabulary cannot spell (it has no byte fallback)")
