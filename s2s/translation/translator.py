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
from typing import Sequence

import torch

from s2s.config import DecodeConfig, Overrides
from s2s.data.shortlist_table import (
    ShortlistTable,
    load_or_build_table,
    shortlist_path,
    vocabulary_fingerprint,
)
from s2s.data.store import load_split, read_manifest
from s2s.data.text import joiner, normalize, side_normalization
from s2s.device import (
    check_int8,
    decode_dtype,
    resolve_device,
    thread_scope,
    with_resolved_precision,
)
from s2s.errors import CheckpointError, DataError, UsageError
from s2s.model.decodable import Decodable
from s2s.model.ensemble import Ensemble
from s2s.model.int8 import quantized_for_cpu
from s2s.model.seq2seq import Seq2Seq, evaluating
from s2s.model.shortlist import Shortlist
from s2s.report import Reporter
from s2s.run.checkpoint import LoadedModel, check_vocabulary, load_model, resolve_checkpoint
from s2s.rundir import RunDir
from s2s.search.constraints import TargetTerms
from s2s.search.corpus import decode_corpus
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.translation.alignment import align_piece
from s2s.translation.result import TranslationResult, joined_pieces
from s2s.translation.splitting import SourcePiece, split_to_limit
from s2s.translation.terms import (
    NO_LINE_TERMS,
    LineTerms,
    TermsCompiler,
    constrain_split_lines,
    for_pieces,
)

__all__ = ["ModelRef", "TranslationResult", "Translator", "load_translator"]


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
                 weights: Sequence[float] | None = None,
                 shortlist: ShortlistTable | None = None) -> None:
        """Decode ``loaded.model`` on ``device`` in ``dtype`` (``s2s.device.decode_dtype``)
        with ``threads`` CPU threads; the model itself is left as it is (module docstring).

        ``ensemble``: more models, which must share ``loaded``'s vocabularies, decoding
        together with it (``s2s.model.ensemble``); ``weights``: one per model, ``loaded``'s
        first (equal when None). ``shortlist``: the run's table, which ``decode.shortlist``
        needs (``s2s.model.shortlist``; ``load_translator`` finds or builds it).
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
        self.shortlist = shortlist
        self.threads = threads
        self.reporter = reporter
        self._decoding_models = [_decoding_model(member.model, device, dtype)
                                 for member in self.members]
        self.model = self._search_model()
        data = loaded.config.data
        self.max_tokens = data.max_tokens
        self.normalization = side_normalization(data.normalization, data.src_lang)
        self.joiner = joiner(data.tgt_lang)
        self.terms = TermsCompiler(loaded.tgt_tokenizer, side_normalization(
            data.normalization, data.tgt_lang), self.joiner, device)
        # languages written without spaces align character by character
        self.by_character = (joiner(data.src_lang) == "", self.joiner == "")

    def _search_model(self) -> Decodable:
        if self.decode.shortlist:  # refused here, not at the first translation
            self._shortlist().outside_mass(self._decoding_models[0])
        if len(self._decoding_models) == 1:
            return self._decoding_models[0]
        try:
            return Ensemble(self._decoding_models, self.weights, self.decode.ensemble_combine)
        except ValueError as error:
            raise UsageError(f"ensemble: {error}") from None

    def _shortlist(self) -> Shortlist:
        if len(self._decoding_models) > 1:
            raise UsageError("decode.shortlist: ensembles decode over the whole vocabulary; "
                             "set decode.shortlist=0")
        if self.shortlist is None:
            raise UsageError("decode.shortlist: this translator has no shortlist table; build "
                             "it with load_translator (from the run directory)")
        return Shortlist(self.shortlist, self.decode.shortlist, self.decode.shortlist_frequent)

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
                  with_attention: bool = False, terms: Sequence[LineTerms] | None = None
                  ) -> list[TranslationResult]:
        """Translate already-decoded lines; empty lines give empty translations.

        A line over the model's limit is translated in pieces (``s2s.translation.splitting``)
        whose translations are joined, so every line is translated whole. ``with_attention``
        adds each translation's word alignment. ``terms``: per line, a prefix its translation
        starts with (the first piece's) and phrases it contains (``s2s.translation.terms``;
        a ``TermsError`` names the first line whose terms cannot be kept). ``first_line``
        numbers the lines in warnings and errors.
        """
        texts = [normalize(line, self.normalization) for line in lines]
        terms = [NO_LINE_TERMS] * len(lines) if terms is None else list(terms)
        if len(terms) != len(lines):
            raise ValueError(f"{len(lines)} lines but {len(terms)} terms")
        pieces, line_of_piece = self._source_pieces(texts, first_line)
        targets = self.terms.for_lines(terms, pieces, line_of_piece, first_line, self.decode)
        piece_terms = for_pieces(targets, line_of_piece)

        def decode(pieces: Sequence[SourcePiece], terms: Sequence[TargetTerms]
                   ) -> list[list[Hypothesis]]:
            return self._decode(pieces, terms, with_attention)

        hypotheses = decode(pieces, piece_terms)
        constrain_split_lines(pieces, line_of_piece, targets, piece_terms, hypotheses, decode,
                              self.decode, first_line)
        piece_texts = iter(self.loaded.tgt_tokenizer.decode(
            [hypothesis.tokens for of_piece in hypotheses for hypothesis in of_piece]))
        parts_of_line: dict[int, list[TranslationResult]] = {}
        for index, (line, source, of_piece) in enumerate(zip(line_of_piece, pieces,
                                                             hypotheses)):
            texts_of_piece = [" ".join(next(piece_texts).split()) for _ in of_piece]
            prefix = piece_terms[index].prefix
            if prefix:  # the prefix as the user wrote it, then what the model continued
                texts_of_piece = self.terms.respelled_prefix(texts_of_piece, prefix,
                                                             terms[line].prefix)
            parts_of_line.setdefault(line, []).append(TranslationResult(
                texts_of_piece, [h.score for h in of_piece],
                [self._alignment(source, h) for h in of_piece] if with_attention else None))
        results = [TranslationResult([], [], [] if with_attention else None) for _ in lines]
        for line, parts in parts_of_line.items():
            results[line] = joined_pieces(parts, self.joiner)
        return results

    def _decode(self, pieces: Sequence[SourcePiece], terms: Sequence[TargetTerms],
                with_attention: bool) -> list[list[Hypothesis]]:
        has_terms = any(t.prefix or t.constraints for t in terms)
        # a prefix or constraints need the whole vocabulary
        shortlist = self._shortlist() if self.decode.shortlist and not has_terms else None
        options = SearchOptions(self.decode, self.device, with_attention,
                                self.terms.word_starts() if has_terms else None, shortlist)
        with thread_scope(self.threads), evaluating(self.model):
            return decode_corpus(self.model, [piece.ids for piece in pieces], options, terms)

    def check_terms(self, text: str, terms: LineTerms, number: int) -> None:
        """Raise a ``TermsError`` naming line ``number`` when ``terms`` cannot be kept for the
        source line ``text`` (already decoded, not yet normalised)."""
        source = normalize(text, self.normalization)
        if source and terms:
            self.terms.compile(terms, len(self.encode_source(source)), number, self.decode)

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

    def _alignment(self, source: SourcePiece, hypothesis: Hypothesis):
        assert hypothesis.attention is not None
        return align_piece(source, hypothesis.tokens, hypothesis.attention,
                           (self.loaded.src_tokenizer, self.loaded.tgt_tokenizer),
                           self.by_character)


def load_translator(run_dir: Path, checkpoint: str = "best", *,
                    decode: DecodeConfig | None = None, threads: int | None = None,
                    overrides: Overrides = (), device: str = "auto",
                    check_run_vocabulary: bool = True, ensemble: Sequence[ModelRef] = (),
                    weights: Sequence[float] | None = None, reporter: Reporter = Reporter()
                    ) -> Translator:
    """The translator of a run's checkpoint (best, last, avg or a file path).

    ``decode`` and ``threads`` (a config's) replace the settings stored in the checkpoint;
    ``overrides`` (``--set`` items or command-line options) change the stored ones. With
    ``check_run_vocabulary`` a checkpoint whose vocabulary is not the run's is refused.
    ``ensemble`` adds models that decode together with this one (``weights``: one per model,
    this one first). The device and the precisions are resolved here, once.
    """
    path = resolve_checkpoint(run_dir, checkpoint, reporter=reporter)
    loaded = load_model(path, overrides)
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
    dtype = decode_dtype(decode, trained, target,
                         min(m.config.model.decoder_hidden for m in members))
    weights_dtype = torch.float32 if dtype == torch.qint8 else dtype  # int8: quantised later
    for member in members:
        member.model.to(target, weights_dtype).eval()  # the loader's own models: in place
    threads = members[0].config.train.threads if threads is None else threads
    shortlist = _run_shortlist(run_dir, members[0], reporter) if decode.shortlist else None
    return Translator(members[0], decode=decode, device=target, dtype=dtype, threads=threads,
                      reporter=reporter, ensemble=members[1:], weights=weights,
                      shortlist=shortlist)


def _run_shortlist(run_dir: Path, loaded: LoadedModel, reporter: Reporter) -> ShortlistTable:
    """The run's shortlist table, counted from its prepared training pairs on first use."""
    data = RunDir(run_dir).data
    if not shortlist_path(data).exists() and read_manifest(data) is None:
        raise DataError(f"decode.shortlist: {data} has neither a shortlist nor prepared "
                        "training data to count one from; run `s2s prepare` or set "
                        "decode.shortlist=0")
    table, built = load_or_build_table(
        data, vocabulary_fingerprint(loaded.src_tokenizer.model_proto,
                                     loaded.tgt_tokenizer.model_proto),
        (len(loaded.src_tokenizer), len(loaded.tgt_tokenizer)), lambda: load_split(data, "train"))
    if built:
        reporter.info(f"built the vocabulary shortlist {shortlist_path(data)}")
    return table


def check_same_vocabularies(first: LoadedModel, other: LoadedModel) -> None:
    """Refuse to ensemble models whose token ids mean different pieces."""
    for name, mine, theirs in (("target", first.tgt_tokenizer, other.tgt_tokenizer),
                               ("source", first.src_tokenizer, other.src_tokenizer)):
        if mine.model_proto != theirs.model_proto:
            raise CheckpointError(f"ensemble: {other.name} and {first.name} have different "
                                  f"{name} vocabularies; an ensemble's models must share both "
                                  "(prepare their runs from the same data and vocab settings)")


def _decoding_model(model: Seq2Seq, device: torch.device, dtype: torch.dtype) -> Seq2Seq:
    """``model`` itself when its weights are on ``device`` in ``dtype``, else a converted
    copy (the caller's model is never changed); ``torch.qint8``: a copy with int8 weights."""
    if dtype == torch.qint8:
        check_int8(device)
        return quantized_for_cpu(model)
    weight = next(model.parameters())
    same_device = (weight.device.type == device.type
                   and (weight.device.index or 0) == (device.index or 0))
    if same_device and weight.dtype == dtype:
        return model
    return copy.deepcopy(model).to(device, dtype)
