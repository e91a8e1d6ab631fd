"""What a translator returns for a line (``TranslationResult``), and how the translations of
the pieces of a line too long to translate whole (``s2s.translation.splitting``) become one."""

from __future__ import annotations

from dataclasses import dataclass

from s2s.translation.alignment import Alignment, joined_alignment


@dataclass(frozen=True)
class TranslationResult:
    """The translations of one input line, best first, with their scores (empty for "") and,
    when asked for, where each looked (``s2s.translation.alignment``)."""

    texts: list[str]
    scores: list[float]
    alignments: list[Alignment] | None = None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


def joined_pieces(parts: list[TranslationResult], joiner: str) -> TranslationResult:
    """One line's result from its pieces': the k-th translation joins each piece's k-th (or
    its last, when a piece has fewer) with ``joiner``, the scores add up, alignments go block
    by block."""
    if len(parts) == 1:
        return parts[0]
    texts, scores, alignments = [], [], []
    for rank in range(max(len(part.texts) for part in parts)):
        chosen = [min(rank, len(part.texts) - 1) for part in parts]
        texts.append(joiner.join(part.texts[k] for part, k in zip(parts, chosen)
                                 if part.texts[k]))
        scores.append(sum(part.scores[k] for part, k in zip(parts, chosen)))
        if parts[0].alignments is not None:
            alignments.append(joined_alignment(
                [part.alignments[k] for part, k in zip(parts, chosen)]))
    return TranslationResult(texts, scores,
                             alignments if parts[0].alignments is not None else None)
