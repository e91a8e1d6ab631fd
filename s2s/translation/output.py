"""How translations are written out: the CLI's lines and the server's JSON share these rules.

A line's output is its best translation, or with n-best K tab-separated translation/score
pairs; with an alignment each translation is followed by it, hard (``src-tgt`` word pairs) or
soft (the target x source word matrix).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from s2s.errors import UsageError
from s2s.translation.alignment import Alignment
from s2s.translation.result import TranslationResult

ALIGNMENTS = ("none", "hard", "soft")


def alignment_value(alignment: Alignment, mode: str) -> str | list[list[float]]:
    """The hard alignment as text, or the soft one as a matrix (JSON's shape)."""
    return alignment.hard() if mode == "hard" else alignment.soft()


@dataclass(frozen=True)
class OutputFormat:
    """What each output line holds: ``nbest`` translations, each with its ``alignment``
    (none, hard or soft)."""

    nbest: int = 1
    alignment: str = "none"

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise UsageError(f"--alignment {self.alignment!r}: choose one of "
                             f"{', '.join(ALIGNMENTS)}")

    @property
    def with_attention(self) -> bool:
        """Whether search must keep attention for this format."""
        return self.alignment != "none"

    def line(self, result: TranslationResult) -> str:
        """The output line of one result; an empty line for empty input."""
        if not result.texts:
            return ""
        columns = []
        for rank, text in enumerate(result.texts if self.nbest > 1 else result.texts[:1]):
            columns.append(text)
            if self.nbest > 1:
                columns.append(f"{result.scores[rank]:.4f}")
            if self.with_attention:
                columns.append(self.alignment_text(result, rank))
        return "\t".join(columns)

    def alignment_text(self, result: TranslationResult, rank: int = 0) -> str:
        """The alignment of a result's ``rank``-th translation as one column ("" for an
        empty line)."""
        if not result.alignments:
            return ""
        value = alignment_value(result.alignments[rank], self.alignment)
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

