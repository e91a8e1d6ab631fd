"""A line's target-side terms as a user writes them: a prefix the translation must start with
and phrases it must contain (terminology), their input format, and their checks.

On the command line, ``--prefix`` and ``--constraints`` make each input line tab-separated:

    SOURCE<TAB>PREFIX                          (--prefix)
    SOURCE<TAB>PHRASE<TAB>PHRASE...            (--constraints, as fairseq's --constraints)
    SOURCE<TAB>PREFIX<TAB>PHRASE<TAB>PHRASE... (both)

The server takes the same as ``prefix`` and ``constraints`` fields. Search works on token ids
(``s2s.search.constraints.TargetTerms``); ``s2s.translation.translator`` encodes these terms with
the target vocabulary and checks them against the line's output limit and the beam.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2s.errors import DataError


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
