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
from s2s.errors import CheckpointError, UsageError
from s2s.model.ensemble import Decodable, Ensemble
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


@dataclass(frozen=True)
class ModelRef:
    """A model of an ensemble: a run directory and one of its checkpoints."""

    run_dir: Path
    checkpoint: str = "best"

    @classmethod
    def parse(cls, text: str, option: str = "--model") -> "ModelRef":
        """``RUN[:CHECKPOINT]``: best, last, avg or a checkpoint file (best when left out)."""
        run, colon, checkpoint = text.rpartition(":")
        if not colon:
            run, checkpoint = text, "best"
        if not run or not checkpoint:
            raise UsageError(f"{option} {text}: expected RUN[:CHECKPOINT], e.g. runs/b:best")
        if not Path(run).is_dir():
            raise UsageError(f"{option} {text}: {run} is not a run directory")
        return cls(Path(run), checkpoint)


class Translator:
    """A model (or an ensemble of models) with its tokenizers and decoding settings;
    translates lists of lines."""

    def __init__(self, loaded: LoadedModel, *, decode: DecodeConfig, device: torch.device,
                 dtype: torch.dtype, threads: int, reporter: Reporter = Reporter(),
                 ensemble: Sequence[LoadedModel] = (),
                 weights: Sequence[float] | None = None) -> None:
        """Decode ``loaded.model`` on ``device`` in ``dtype`` (see ``decode_dtype``) with
        ``threads`` CPU threads; the model itself is left as it is (module docstring).

        ``ensemble``: more models, which must share ``loaded``'s vocabularies, decoding
        together with it (``s2s.model.ensemble``); ``weights``: one per model, ``loaded``'s
        first (equal when None).
        """
        self.loaded = loaded
        self.members = (loaded, *ensemble)
        self.weights = None if weights is None else tuple(weights)
        if self.weights is not None and len(self.weights) != len(self.members):
            raise UsageError(f"{len(self.weights)} ensemble weights for {len(self.members)} "
                             "models: give one weight per model")
        for member in ensemble:
            check_same_vocabularies(loaded, member)
        self.decode = decode
        self.device, self.dtype = device, dtype
        self.threads = threads
        self.reporter = reporter
        self._decoding_models = [_decoding_model(member.model, device, dtype)
                                 for member in self.members]
        self.model = self._search_model()
        data = loaded.config.data
        self.max_tokens = data.max_tokens
        self.normalization = side_normalization(data.normalization, data.src_lang)
        self.joiner = joiner(data.tgt_lang)
        # languages written without spaces align character by character
        self.by_character = (joiner(data.src_lang) == "", self.joiner == "")

    def _search_model(self) -> Decodable:
        if len(self._decoding_models) == 1:
            return self._decoding_models[0]
        try:
            return Ensemble(self._decoding_models, self.weights, self.decode.ensemble_combine)
        except ValueError as error:
            raise UsageError(f"ensemble: {error}") from None

    def with_decode(self, decode: DecodeConfig) -> "Translator":
        """The same model (shared, not copied) with other decoding settings."""
        other = copy.copy(self)
        other.decode = decode
        other.model = other._search_model()
        return other

    @property
    def description(self) -> str:
        """The checkpoint(s) it decodes, for reports: a name, or "ensemble of ..." ."""
        if len(self.members) == 1:
            return self.loaded.name
        weights = "" if self.weights is None else f" with weights {list(self.weights)}"
        names = ", ".join(member.name for member in self.members)
        return f"ensemble ({self.decode.ensemble_combine}) of {names}{weights}"

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
                    check_run_vocabulary: bool = True, ensemble: Sequence[ModelRef] = (),
                    weights: Sequence[float] | None = None, reporter: Reporter = Reporter()
                    ) -> Translator:
    """The translator of a run's checkpoint (best, last, avg or a file path).

    ``decode`` and ``threads`` (a config's) replace the settings stored in the checkpoint;
    ``overrides`` (``--set`` items; ``option_names`` maps keys to the options they came from,
    for errors) change the stored ones. With ``check_run_vocabulary`` a checkpoint whose
    vocabulary is not the run's is refused. ``ensemble`` adds models that decode together with
    this one (``weights``: one per model, this one first). The device and the precisions are
    resolved here, once.
    """
    path = resolve_checkpoint(run_dir, checkpoint, reporter=reporter)
    loaded = load_model(path, overrides, option_names)
    if check_run_vocabulary:
        check_vocabulary(loaded, run_dir)
    others = [load_model(resolve_checkpoint(ref.run_dir, ref.checkpoint, reporter=reporter))
              for ref in ensemble]
    target = resolve_device(device)
    # a checkpoint stores the precision its training resolved; older ones may say auto
    members = [replace(member, config=with_resolved_precision(member.config, target))
               for member in (loaded, *others)]
    decode = members[0].config.decode if decode is None else decode
    # bf16 weights (decode.precision auto) only when every member trained in bf16
    trained = "bf16" if all(m.config.train.precision == "bf16" for m in members) else "fp32"
    dtype = decode_dtype(decode, trained, target)
    for member in members:
        member.model.to(target, dtype).eval()  # the loader's own models: set up in place
    threads = members[0].config.train.threads if threads is None else threads
    return Translator(members[0], decode=decode, device=target, dtype=dtype, threads=threads,
                      reporter=reporter, ensemble=members[1:], weights=weights)


def check_same_vocabularies(first: LoadedModel, other: LoadedModel) -> None:
    """Refuse to ensemble models whose token ids mean different pieces."""
    for name, mine, theirs in (("target", first.tgt_tokenizer, other.tgt_tokenizer),
                               ("source", first.src_tokenizer, other.src_tokenizer)):
        if mine.model_proto != theirs.model_proto:
            raise CheckpointError(f"ensemble: {other.name} and {first.name} have different "
                                  f"{name} vocabularies; an ensemble's models must share both "
                                  "(prepare their runs from the same data and vocab settings)")


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

