"""The translator: a model ready to decode with its tokenizers and settings, text in and
translations out; and ``load_translator``, the one way to build one from a run's checkpoint.

A translator never changes the model it is given: it decodes the model as it is when the
device and dtype already match (training's validation shares the live weights that way), and a
converted copy of its own otherwise. Dropout is off while it translates and the model's
train/eval mode is restored afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import torch

from s2s.config import DecodeConfig
from s2s.data.text import joiner, normalize, side_normalization
from s2s.device import (
    check_precision,
    cpu_supports_bf16,
    resolve_device,
    thread_scope,
    with_resolved_precision,
)
from s2s.model.seq2seq import Seq2Seq, evaluating
from s2s.report import Reporter
from s2s.run.checkpoint import LoadedModel, check_vocabulary, load_model, resolve_checkpoint
from s2s.search.corpus import decode_corpus
from s2s.search.hypothesis import Hypothesis
from s2s.translation.alignment import Alignment, align_piece, joined_alignment
from s2s.translation.splitting import SourcePiece, split_to_limit


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


class Translator:
    """A model with its tokenizers and decoding settings; translates lists of lines."""

    def __init__(self, loaded: LoadedModel, *, decode: DecodeConfig, device: torch.device,
                 dtype: torch.dtype, threads: int, reporter: Reporter = Reporter()) -> None:
        """Decode ``loaded.model`` on ``device`` in ``dtype`` (see ``decode_dtype``) with
        ``threads`` CPU threads; the model itself is left as it is (module docstring)."""
        self.loaded = loaded
        self.decode = decode
        self.device, self.dtype = device, dtype
        self.threads = threads
        self.reporter = reporter
        self.model = _decoding_model(loaded.model, device, dtype)
        data = loaded.config.data
        self.max_tokens = data.max_tokens
        self.normalization = side_normalization(data.normalization, data.src_lang)
        self.joiner = joiner(data.tgt_lang)
        # languages written without spaces align character by character
        self.by_character = (joiner(data.src_lang) == "", self.joiner == "")

    def with_decode(self, decode: DecodeConfig) -> "Translator":
        """The same model (shared, not copied) with other decoding settings."""
        other = copy.copy(self)
        other.decode = decode
        return other

    def translate(self, lines: list[str], first_line: int = 1, *,
                  with_attention: bool = False) -> list[TranslationResult]:
        """Translate already-decoded lines; empty lines give empty translations.

        A line over the model's limit is translated in pieces (``s2s.translation.splitting``)
        whose translations are joined, so every line is translated whole. ``with_attention``
        adds each translation's word alignment. ``first_line`` numbers the lines in warnings.
        """
        texts = [normalize(line, self.normalization) for line in lines]
        pieces, line_of_piece = self._source_pieces(texts, first_line)
        with thread_scope(self.threads), evaluating(self.model):
            hypotheses = decode_corpus(self.model, [piece.ids for piece in pieces], self.decode,
                                       self.device, with_attention=with_attention)
        piece_texts = iter(self.loaded.tgt_tokenizer.decode(
            [hypothesis.tokens for of_piece in hypotheses for hypothesis in of_piece]))
        parts_of_line: dict[int, list[_TranslatedPiece]] = {}
        for line, source, of_piece in zip(line_of_piece, pieces, hypotheses):
            parts_of_line.setdefault(line, []).append(_TranslatedPiece(
                [_one_line(next(piece_texts)) for _ in of_piece], [h.score for h in of_piece],
                [self._alignment(source, h) for h in of_piece] if with_attention else None))
        results = [TranslationResult([], [], [] if with_attention else None) for _ in lines]
        for line, parts in parts_of_line.items():
            results[line] = self._joined(parts)
        return results

    def encode_source(self, text: str) -> list[int]:
        """The source token ids of one normalised line (no EOS)."""
        return self.loaded.src_tokenizer.encode([text])[0]

    def _source_pieces(self, texts: list[str], first_line: int
                       ) -> tuple[list[SourcePiece], list[int]]:
        """The non-empty lines as pieces within the model's limit, and each piece's line."""
        nonempty = [index for index, text in enumerate(texts) if text]
        pieces: list[SourcePiece] = []
        line_of_piece: list[int] = []
        # one batched encode; only the rare line over the limit is encoded again in pieces
        for index, ids in zip(nonempty, self.loaded.src_tokenizer.encode(
                [texts[i] for i in nonempty])):
            parts = [SourcePiece(texts[index], ids)] if len(ids) <= self.max_tokens else (
                split_to_limit(texts[index], self.encode_source, self.max_tokens))
            if len(parts) > 1:
                self.reporter.warn(f"line {first_line + index}: longer than the model's limit "
                                   f"of {self.max_tokens} tokens, translated in {len(parts)} "
                                   "pieces")
            pieces.extend(parts)
            line_of_piece.extend([index] * len(parts))
        return pieces, line_of_piece

    def _alignment(self, source: SourcePiece, hypothesis: Hypothesis) -> Alignment:
        assert hypothesis.attention is not None
        return align_piece(source, hypothesis.tokens, hypothesis.attention,
                           (self.loaded.src_tokenizer, self.loaded.tgt_tokenizer),
                           self.by_character)

    def _joined(self, parts: list["_TranslatedPiece"]) -> TranslationResult:
        """One line's result from its pieces': the k-th translation joins each piece's k-th
        (or its last, when a piece has fewer), the scores add up, alignments go block by
        block."""
        if len(parts) == 1:
            return TranslationResult(parts[0].texts, parts[0].scores, parts[0].alignments)
        texts, scores, alignments = [], [], []
        for rank in range(max(len(part.texts) for part in parts)):
            chosen = [min(rank, len(part.texts) - 1) for part in parts]
            texts.append(self.joiner.join(part.texts[k] for part, k in zip(parts, chosen)
                                          if part.texts[k]))
            scores.append(sum(part.scores[k] for part, k in zip(parts, chosen)))
            if parts[0].alignments is not None:
                alignments.append(joined_alignment(
                    [part.alignments[k] for part, k in zip(parts, chosen)]))
        return TranslationResult(texts, scores, alignments if parts[0].alignments is not None
                                 else None)


@dataclass(frozen=True)
class _TranslatedPiece:
    """The translations of one piece of a line."""

    texts: list[str]
    scores: list[float]
    alignments: list[Alignment] | None


def load_translator(run_dir: Path, checkpoint: str = "best", *,
                    decode: DecodeConfig | None = None, threads: int | None = None,
                    overrides: Sequence[str] = (),
                    option_names: Mapping[str, str] | None = None, device: str = "auto",
                    check_run_vocabulary: bool = True, reporter: Reporter = Reporter()
                    ) -> Translator:
    """The translator of a run's checkpoint (best, last, avg or a file path).

    ``decode`` and ``threads`` (a config's) replace the settings stored in the checkpoint;
    ``overrides`` (``--set`` items; ``option_names`` maps keys to the options they came from,
    for errors) change the stored ones. With ``check_run_vocabulary`` a checkpoint whose
    vocabulary is not the run's is refused. The device and the precisions are resolved here,
    once.
    """
    path = resolve_checkpoint(run_dir, checkpoint, reporter=reporter)
    loaded = load_model(path, overrides, option_names)
    if check_run_vocabulary:
        check_vocabulary(loaded, run_dir)
    target = resolve_device(device)
    # a checkpoint stores the precision its training resolved; older ones may say auto
    loaded = replace(loaded, config=with_resolved_precision(loaded.config, target))
    decode = loaded.config.decode if decode is None else decode
    dtype = decode_dtype(decode, loaded.config.train.precision, target)
    loaded.model.to(target, dtype).eval()  # the loader's own model: set up in place
    threads = loaded.config.train.threads if threads is None else threads
    return Translator(loaded, decode=decode, device=target, dtype=dtype, threads=threads,
                      reporter=reporter)


def decode_dtype(config: DecodeConfig, train_precision: str, device: torch.device
                 ) -> torch.dtype:
    """The weights' dtype for decoding: ``auto`` is bf16 when the model trained in bf16
    (``train_precision``, resolved) and the device runs bf16, else fp32; an explicit bf16 the
    device cannot run is an error."""
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if train_precision == "bf16" else "fp32"
        if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            precision = "fp32"
    check_precision(device, precision, "decode.precision")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _decoding_model(model: Seq2Seq, device: torch.device, dtype: torch.dtype) -> Seq2Seq:
    """``model`` itself when its weights are on ``device`` in ``dtype``, else a converted
    copy (the caller's model is never changed)."""
    weight = next(model.parameters())
    same_device = (weight.device.type == device.type
                   and (weight.device.index or 0) == (device.index or 0))
    if same_device and weight.dtype == dtype:
        return model
    return copy.deepcopy(model).to(device, dtype)


def _one_line(text: str) -> str:
    return " ".join(text.split())

