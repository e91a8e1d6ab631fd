"""`s2s translate`: stream text through a trained model, one output line per input line.

Input is read in chunks; each chunk is sorted by length for batching and written back in input
order, so memory stays bounded and the first lines come out before the input ends. When the
input pauses (an interactive pipe), the lines read so far are translated at once.
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Sequence, TextIO

import torch

from s2s.alignment import Attention, block_diagonal, piece_words, word_matrix, word_spans
from s2s.checkpoint import LoadedModel, load_model
from s2s.config import DecodeConfig
from s2s.device import (check_precision, cpu_supports_bf16, resolve_device, resolve_precision,
                        thread_scope)
from s2s.errors import UsageError
from s2s.report import Reporter
from s2s.search import decode_corpus
from s2s.search_steps import Hypothesis
from s2s.splitting import SourcePiece, split_to_limit
from s2s.textio import joiner, normalize, side_normalization

CHUNK_LINES = 2000


ALIGNMENTS = ("none", "hard", "soft")


@dataclass(frozen=True)
class TranslationResult:
    """The translations of one input line, best first, with their scores (empty for "") and,
    when asked for, where each looked (s2s.alignment)."""

    texts: list[str]
    scores: list[float]
    attentions: list[Attention] | None = None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


class Translator:
    """A loaded model with its tokenizers and decoding settings; translates lists of lines."""

    def __init__(self, loaded: LoadedModel, *, decode: DecodeConfig | None = None,
                 device: str | torch.device = "auto", threads: int | None = None,
                 alignment: str = "none", reporter: Reporter = Reporter()) -> None:
        """``decode`` and ``threads`` replace the settings stored in the checkpoint;
        ``alignment`` (none, hard or soft) adds word alignments to every output line.

        The model is moved to the device and decoding dtype, and put in eval mode, in place.
        """
        if alignment not in ALIGNMENTS:
            raise UsageError(f"--alignment {alignment!r}: choose one of {', '.join(ALIGNMENTS)}")
        self.loaded = loaded
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.threads = loaded.config.train.threads if threads is None else threads
        self.decode: DecodeConfig = decode if decode is not None else loaded.config.decode
        self.alignment = alignment
        dtype = decode_dtype(self.decode, loaded.config.train.precision, self.device)
        self.model = loaded.model.to(self.device, dtype).eval()
        self.reporter = reporter
        data = loaded.config.data
        self.max_tokens = data.max_tokens
        self.normalization = side_normalization(data.normalization, data.src_lang)
        self.joiner = joiner(data.tgt_lang)
        # languages written without spaces align character by character
        self.by_character = (joiner(data.src_lang) == "", self.joiner == "")

    @classmethod
    def from_checkpoint(cls, path: Path, *, overrides: Sequence[str] = (),
                        option_names: Mapping[str, str] | None = None, **options
                        ) -> "Translator":
        return cls(load_model(path, overrides, option_names), **options)

    def translate(self, lines: list[str], first_line: int = 1, *,
                  with_attention: bool | None = None) -> list[TranslationResult]:
        """Translate already-decoded lines; empty lines give empty translations.

        A line over the model's limit is translated in pieces (``s2s.splitting``) whose
        translations are joined, so every line is translated whole. Attention comes with the
        results when ``with_attention`` says so (by default: when an alignment is wanted).
        """
        prepared = self.prepare(lines, first_line, with_attention=with_attention)
        with thread_scope(self.threads):
            found = decode_corpus(self.model, prepared.sources, self.decode, self.device,
                                  with_attention=prepared.with_attention)
        return self.assemble(prepared, found)

    def prepare(self, lines: list[str], first_line: int = 1, *,
                with_attention: bool | None = None) -> "PreparedLines":
        """Lines as the source pieces to decode (see ``translate``); ``assemble`` turns the
        pieces' hypotheses into results."""
        attend = self.alignment != "none" if with_attention is None else with_attention
        texts = [normalize(line, self.normalization) for line in lines]
        wanted = [index for index, text in enumerate(texts) if text]
        pieces: list[SourcePiece] = []
        owners: list[int] = []  # the line of each piece
        # one batched encode; only the rare line over the limit is encoded again in pieces
        for index, ids in zip(wanted, self.loaded.src_tokenizer.encode(
                [texts[i] for i in wanted])):
            parts = [SourcePiece(texts[index], ids)] if len(ids) <= self.max_tokens else (
                split_to_limit(texts[index], self.encode_source, self.max_tokens))
            if len(parts) > 1:
                self.reporter.warn(f"line {first_line + index}: longer than the model's limit "
                                   f"of {self.max_tokens} tokens, translated in {len(parts)} "
                                   "pieces")
            pieces.extend(parts)
            owners.extend([index] * len(parts))
        return PreparedLines(len(lines), pieces, owners, attend)

    def assemble(self, prepared: "PreparedLines", found: list[list[Hypothesis]]
                 ) -> list[TranslationResult]:
        """One result per prepared line from the hypotheses of its pieces, in order."""
        attend = prepared.with_attention
        piece_texts = self.loaded.tgt_tokenizer.decode(
            [hypothesis.tokens for hypotheses in found for hypothesis in hypotheses])
        texts_of = iter(piece_texts)
        by_line: dict[int, list[_Piece]] = {}
        for owner, source, hypotheses in zip(prepared.owners, prepared.pieces, found):
            by_line.setdefault(owner, []).append(_Piece(
                [_one_line(next(texts_of)) for _ in hypotheses], [h.score for h in hypotheses],
                [self._attention(source, h) for h in hypotheses] if attend else None))
        results = [TranslationResult([], [], [] if attend else None)
                   for _ in range(prepared.line_count)]
        for index, parts in by_line.items():
            results[index] = self._joined(parts)
        return results

    def encode_source(self, text: str) -> list[int]:
        """The source token ids of one normalised line (no EOS)."""
        return self.loaded.src_tokenizer.encode([text])[0]

    def _attention(self, source: SourcePiece, hypothesis: Hypothesis) -> Attention:
        """Piece- and word-level attention of one hypothesis of one source piece.

        The words of a line are those of its pieces in order; the later cuts of a single word
        over the limit add no words (their attention is left out of the word matrix).
        """
        src_tokenizer, tgt_tokenizer = self.loaded.src_tokenizer, self.loaded.tgt_tokenizer
        source_text = source.text if source.start == 0 else ""
        _, all_spans = src_tokenizer.encode_with_spans(source.text)
        source_spans = all_spans[source.start:source.start + len(source.ids)] if (
            source.start == 0) else [(0, 0)] * len(source.ids)
        target_text, target_spans = tgt_tokenizer.decode_with_spans(hypothesis.tokens)
        source_words = word_spans(source_text, self.by_character[0])
        target_words = word_spans(target_text, self.by_character[1])
        assert hypothesis.attention is not None
        weights = hypothesis.attention  # (target pieces + EOS, source pieces + EOS)
        words = word_matrix(weights[:-1, :-1], piece_words(source_spans, source_words),
                            piece_words(target_spans, target_words), len(source_words),
                            len(target_words))
        return Attention(weights, src_tokenizer.pieces(source.ids) + ["</s>"],
                         tgt_tokenizer.pieces(hypothesis.tokens) + ["</s>"], words)

    def _joined(self, parts: list["_Piece"]) -> TranslationResult:
        """One line's result from its pieces': the k-th translation joins each piece's k-th
        (or its last, when a piece has fewer), the scores add up, attention goes block by
        block."""
        if len(parts) == 1:
            return TranslationResult(parts[0].texts, parts[0].scores, parts[0].attentions)
        texts, scores, attentions = [], [], []
        for rank in range(max(len(part.texts) for part in parts)):
            chosen = [min(rank, len(part.texts) - 1) for part in parts]
            texts.append(self.joiner.join(part.texts[k] for part, k in zip(parts, chosen)
                                          if part.texts[k]))
            scores.append(sum(part.scores[k] for part, k in zip(parts, chosen)))
            if parts[0].attentions is not None:
                attentions.append(_joined_attention(
                    [part.attentions[k] for part, k in zip(parts, chosen)]))
        return TranslationResult(texts, scores, attentions if parts[0].attentions is not None
                                 else None)

    def format(self, result: TranslationResult) -> str:
        """The output line: the best translation, or ``nbest`` tab-separated text/score pairs,
        each followed by its alignment when one is wanted; an empty line for empty input."""
        if not result.texts:
            return ""
        columns = []
        for rank, text in enumerate(result.texts if self.decode.nbest > 1 else result.texts[:1]):
            columns.append(text)
            if self.decode.nbest > 1:
                columns.append(f"{result.scores[rank]:.4f}")
            if self.alignment != "none":
                columns.append(self.alignment_of(result, rank))
        return "\t".join(columns)

    def alignment_of(self, result: TranslationResult, rank: int = 0) -> str:
        """The hard or soft word alignment of a result's ``rank``-th translation ("" for an
        empty line)."""
        if not result.attentions:
            return ""
        attention = result.attentions[rank]
        return attention.hard() if self.alignment == "hard" else attention.soft()


@dataclass(frozen=True)
class PreparedLines:
    """Lines made ready for search: their non-empty source pieces and each piece's line."""

    line_count: int
    pieces: list[SourcePiece]
    owners: list[int]
    with_attention: bool

    @property
    def sources(self) -> list[list[int]]:
        return [piece.ids for piece in self.pieces]


@dataclass(frozen=True)
class _Piece:
    """The hypotheses of one translated piece of a line."""

    texts: list[str]
    scores: list[float]
    attentions: list[Attention] | None


def _joined_attention(parts: list[Attention]) -> Attention:
    return Attention(block_diagonal([part.weights for part in parts]),
                     [piece for part in parts for piece in part.src_pieces],
                     [piece for part in parts for piece in part.tgt_pieces],
                     block_diagonal([part.words for part in parts]))


def decode_dtype(config: DecodeConfig, train_precision: str, device: torch.device
                 ) -> torch.dtype:
    """The weights' dtype for decoding: ``auto`` is bf16 when the model trained in bf16 and
    the device runs bf16 (else fp32); an explicit bf16 the device cannot run is an error."""
    precision = config.precision
    if precision == "auto":
        trained = resolve_precision(device, train_precision)
        precision = "bf16" if trained == "bf16" else "fp32"
        if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            precision = "fp32"
    check_precision(device, precision, "decode.precision")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def translate_stream(translator: Translator, source: BinaryIO, target: TextIO, *,
                     chunk_lines: int = CHUNK_LINES, progress_total: int | None = None) -> int:
    """Translate every line of ``source`` to ``target`` in order; return the line count.

    A progress bar is shown only for input of known size (a file) on a terminal.
    """
    count = 0
    reporter = translator.reporter if progress_total is not None else Reporter()
    with reporter.progress("translate", total=progress_total) as bar:
        for chunk in _chunks(source, chunk_lines):
            lines = [_decode_line(raw, count + offset + 1, translator.reporter)
                     for offset, raw in enumerate(chunk)]
            for result in translator.translate(lines, first_line=count + 1):
                target.write(translator.format(result) + "\n")
            target.flush()
            count += len(chunk)
            bar.advance(len(chunk))
    return count


def _chunks(source: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """Groups of raw lines: full chunks, or what arrived before the input paused."""
    lines: list[bytes] = []
    while True:
        if lines and not _input_ready(source):
            yield lines
            lines = []
        raw = source.readline()
        if not raw:
            break
        lines.append(raw)
        if len(lines) >= size:
            yield lines
            lines = []
    if lines:
        yield lines


def _input_ready(source: BinaryIO, wait: float = 0.01) -> bool:
    try:
        ready, _, _ = select.select([source], [], [], wait)
    except (OSError, ValueError, TypeError, AttributeError):
        return True  # not a selectable stream (a file or an in-memory buffer): read on
    return bool(ready)


def _decode_line(raw: bytes, number: int, reporter: Reporter) -> str:
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        reporter.warn(f"line {number}: invalid UTF-8, replaced with U+FFFD")
        return raw.decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())
