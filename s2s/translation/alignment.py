"""Word alignments from subword attention, in the formats word aligners use.

The model attends from each target piece to each source piece. A word is a run of non-space
characters, or a single character in languages written without spaces (Chinese, Japanese,
Thai): a source word receives the attention its pieces receive (summed), a target word
attends as its pieces do on average. The hard alignment links each target word to the
source word it attends to most, written ``srcIndex-tgtIndex`` (0-based, space-separated), as
fast_align and Marian write it; the soft alignment is the whole word-level matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from s2s.data.vocab import Tokenizer
from s2s.translation.splitting import SourcePiece

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Alignment:
    """Where one translation looked: piece-level attention weights and the word-level matrix."""

    weights: np.ndarray  # (target pieces + EOS, source pieces + EOS), rows sum to 1
    src_pieces: list[str]
    tgt_pieces: list[str]
    words: np.ndarray  # (target words, source words)

    def hard(self) -> str:
        """``src-tgt`` word pairs (see ``hard_alignment``)."""
        return hard_alignment(self.words)

    def soft(self) -> list[list[float]]:
        """The word matrix, rounded to 4 decimals: target words x source words."""
        return np.round(self.words, 4).tolist()


def align_piece(source: SourcePiece, tokens: list[int], weights: np.ndarray,
                tokenizers: tuple[Tokenizer, Tokenizer], by_character: tuple[bool, bool]
                ) -> Alignment:
    """The alignment of one translated source piece: ``tokens`` are the translation's ids,
    ``weights`` its (tokens + EOS, source ids + EOS) attention; ``by_character`` says, per side,
    whether that language is written without spaces (its words are characters).

    The words of a line are those of its pieces in order; the later cuts of a single word over
    the limit add no words (their attention is left out of the word matrix).
    """
    src_tokenizer, tgt_tokenizer = tokenizers
    source_text = source.text if source.start == 0 else ""
    _, all_spans = src_tokenizer.encode_with_spans(source.text)
    source_spans = all_spans[source.start:source.start + len(source.ids)] if (
        source.start == 0) else [(0, 0)] * len(source.ids)
    target_text, target_spans = tgt_tokenizer.decode_with_spans(tokens)
    source_words = word_spans(source_text, by_character[0])
    target_words = word_spans(target_text, by_character[1])
    words = word_matrix(weights[:-1, :-1], piece_words(source_spans, source_words),
                        piece_words(target_spans, target_words), len(source_words),
                        len(target_words))
    return Alignment(weights, src_tokenizer.pieces(source.ids) + ["</s>"],
                     tgt_tokenizer.pieces(tokens) + ["</s>"], words)


def joined_alignment(parts: list[Alignment]) -> Alignment:
    """One line's alignment from those of its consecutive pieces."""
    return Alignment(block_diagonal([part.weights for part in parts]),
                     [piece for part in parts for piece in part.src_pieces],
                     [piece for part in parts for piece in part.tgt_pieces],
                     block_diagonal([part.words for part in parts]))


def word_spans(text: str, by_character: bool) -> list[tuple[int, int]]:
    """The UTF-8 byte spans of the words of ``text`` (sentencepiece reports byte offsets)."""
    spans = []
    for match in _WORD.finditer(text):
        start = len(text[:match.start()].encode("utf-8"))
        if not by_character:
            spans.append((start, start + len(match.group().encode("utf-8"))))
            continue
        for character in match.group():
            width = len(character.encode("utf-8"))
            spans.append((start, start + width))
            start += width
    return spans


def piece_words(piece_spans: list[tuple[int, int]], spans: list[tuple[int, int]]
                ) -> list[list[int]]:
    """The words each piece belongs to: those its bytes overlap; a piece without text of its
    own (a word-boundary marker, the leading bytes of a byte-fallback character) belongs to
    the next word."""
    result = []
    for begin, end in piece_spans:
        overlapping = [index for index, (start, stop) in enumerate(spans)
                       if start < end and begin < stop]
        if not overlapping and spans:
            following = [index for index, (_, stop) in enumerate(spans) if stop > begin]
            overlapping = [following[0] if following else len(spans) - 1]
        result.append(overlapping)
    return result


def word_matrix(weights: np.ndarray, src_words: list[list[int]], tgt_words: list[list[int]],
                src_count: int, tgt_count: int) -> np.ndarray:
    """(target words, source words) from (target pieces, source pieces) weights, whose extra
    last row and column (the EOS step and the source EOS) are left out."""
    by_source = np.zeros((weights.shape[0], src_count))
    for piece, words in enumerate(src_words):
        for word in words:  # a piece spanning several characters shares its weight
            by_source[:, word] += weights[:, piece] / len(words)
    matrix = np.zeros((tgt_count, src_count))
    counts = np.zeros(tgt_count)
    for piece, words in enumerate(tgt_words):
        for word in words:
            matrix[word] += by_source[piece]
            counts[word] += 1
    return matrix / np.maximum(counts, 1)[:, None]


def hard_alignment(matrix: np.ndarray) -> str:
    """``src-tgt`` pairs: each target word with the source word it attends to most."""
    if matrix.size == 0:
        return ""
    return " ".join(f"{source}-{target}"
                    for target, source in enumerate(matrix.argmax(axis=1).tolist()))


def block_diagonal(parts: list[np.ndarray]) -> np.ndarray:
    """One matrix from the matrices of a line's consecutive pieces."""
    rows, columns = sum(p.shape[0] for p in parts), sum(p.shape[1] for p in parts)
    joined = np.zeros((rows, columns))
    row = column = 0
    for part in parts:
        joined[row:row + part.shape[0], column:column + part.shape[1]] = part
        row, column = row + part.shape[0], column + part.shape[1]
    return joined
