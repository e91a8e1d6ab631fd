"""The translator: a model ready to decode with its tokenizers and settings, text in and
translations out; and ``load_translator``, the one way to build one from a run's checkpoint.

A translator never changes the model it is given: it decodes the model as it is when the
device and dtype already match (training's validation shares the live weights that way), and a
converted copy of its own otherwise. Dropout is off while it translates and the model's
train/eval mode is restored afterwards.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import torch

from s2s.config import DecodeConfig
from s2s.data.store import load_split, read_manifest
from s2s.data.text import joiner, normalize, side_normalization
from s2s.data.vocab import EOS_ID, UNK_ID
from s2s.device import (
    check_precision,
    cpu_supports_bf16,
    resolve_device,
    thread_scope,
    with_resolved_precision,
)
from s2s.errors import CheckpointError, DataError, UsageError
from s2s.model.ensemble import Decodable, Ensemble
from s2s.model.int8 import check_int8, int8_pays, quantized_for_cpu
from s2s.model.seq2seq import Seq2Seq, evaluating
from s2s.model.shortlist import (
    Shortlist,
    ShortlistTable,
    load_or_build_table,
    shortlist_path,
    vocabulary_fingerprint,
)
from s2s.report import Reporter
from s2s.run.checkpoint import LoadedModel, check_vocabulary, load_model, resolve_checkpoint
from s2s.rundir import RunDir
from s2s.search.constraints import NO_TERMS, TargetTerms
from s2s.search.corpus import decode_corpus
from s2s.search.hypothesis import Hypothesis
from s2s.search.steps import max_output_lengths
from s2s.translation.alignment import Alignment, align_piece, joined_alignment
from s2s.translation.splitting import SourcePiece, split_to_limit
from s2s.translation.terms import NO_LINE_TERMS, LineTerms, TermsError


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
                 weights: Sequence[float] | None = None,
                 shortlist: ShortlistTable | None = None) -> None:
        """Decode ``loaded.model`` on ``device`` in ``dtype`` (see ``decode_dtype``) with
        ``threads`` CPU threads; the model itself is left as it is (module docstring).

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
        self.target_normalization = side_normalization(data.normalization, data.tgt_lang)
        self._word_start_mask: torch.Tensor | None = None  # built on first use
        self.joiner = joiner(data.tgt_lang)
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
        targets = self._line_targets(terms, pieces, line_of_piece, first_line)
        first_piece: dict[int, int] = {}
        for index, line in enumerate(line_of_piece):
            first_piece.setdefault(line, index)
        piece_count = Counter(line_of_piece)
        # a split line's constraints wait until its pieces have been translated once
        piece_terms = [TargetTerms(
            prefix=targets[line].prefix if first_piece[line] == index else (),
            prefix_ends_word=targets[line].prefix_ends_word and first_piece[line] == index,
            constraints=targets[line].constraints if piece_count[line] == 1 else ())
            if line in targets else NO_TERMS for index, line in enumerate(line_of_piece)]
        hypotheses = self._decode(pieces, piece_terms, with_attention)
        self._constrain_split_lines(pieces, line_of_piece, targets, piece_terms, hypotheses,
                                    with_attention, first_line)
        tokenizer = self.loaded.tgt_tokenizer
        piece_texts = iter(tokenizer.decode(
            [hypothesis.tokens for of_piece in hypotheses for hypothesis in of_piece]))
        parts_of_line: dict[int, list[_TranslatedPiece]] = {}
        for index, (line, source, of_piece) in enumerate(zip(line_of_piece, pieces,
                                                             hypotheses)):
            texts_of_piece = [_one_line(next(piece_texts)) for _ in of_piece]
            prefix = piece_terms[index].prefix
            if prefix:  # the prefix as the user wrote it, then what the model continued
                decoded_prefix = _one_line(tokenizer.decode([prefix])[0])
                texts_of_piece = [_after_prefix(text, decoded_prefix, terms[line].prefix)
                                  for text in texts_of_piece]
            parts_of_line.setdefault(line, []).append(_TranslatedPiece(
                texts_of_piece, [h.score for h in of_piece],
                [self._alignment(source, h) for h in of_piece] if with_attention else None))
        results = [TranslationResult([], [], [] if with_attention else None) for _ in lines]
        for line, parts in parts_of_line.items():
            results[line] = self._joined(parts)
        return results

    def _decode(self, pieces: Sequence[SourcePiece], terms: Sequence[TargetTerms],
                with_attention: bool) -> list[list[Hypothesis]]:
        has_terms = any(t.prefix or t.constraints for t in terms)
        # a prefix or constraints need the whole vocabulary
        shortlist = self._shortlist() if self.decode.shortlist and not has_terms else None
        with thread_scope(self.threads), evaluating(self.model):
            return decode_corpus(self.model, [piece.ids for piece in pieces], self.decode,
                                 self.device, with_attention=with_attention, terms=terms,
                                 word_starts=self._word_starts() if has_terms else None,
                                 shortlist=shortlist)

    def _word_starts(self) -> torch.Tensor | None:
        """(V,) the target pieces that may follow a whole word: those that begin a word,
        punctuation, and EOS; None for a language written without spaces. Built once (a
        Python pass over the vocabulary), not for every batch."""
        if self.joiner == "":
            return None
        if self._word_start_mask is None:
            tokenizer = self.loaded.tgt_tokenizer
            starts = torch.tensor([piece.startswith("\u2581") or not piece[:1].isalnum()
                                   for piece in tokenizer.pieces(range(len(tokenizer)))])
            starts[EOS_ID] = True
            self._word_start_mask = starts.to(self.device)
        return self._word_start_mask

    def check_terms(self, text: str, terms: LineTerms, number: int) -> None:
        """Raise a ``TermsError`` naming line ``number`` when ``terms`` cannot be kept for the
        source line ``text`` (already decoded, not yet normalised)."""
        source = normalize(text, self.normalization)
        if source and terms:
            self._target_terms(terms, len(self.encode_source(source)), number)

    def _line_targets(self, terms: Sequence[LineTerms], pieces: Sequence[SourcePiece],
                      line_of_piece: Sequence[int], first_line: int) -> dict[int, TargetTerms]:
        """The checked token-id terms of each non-empty line that has any."""
        source_tokens: dict[int, int] = {}
        for piece, line in zip(pieces, line_of_piece):
            source_tokens[line] = source_tokens.get(line, 0) + len(piece.ids)
        return {line: self._target_terms(terms[line], count, first_line + line)
                for line, count in source_tokens.items() if terms[line]}

    def _target_terms(self, terms: LineTerms, source_tokens: int, number: int) -> TargetTerms:
        """``terms`` in target token ids, checked against the beam and the line's output
        limit (a ``TermsError`` names line ``number`` and what to change)."""
        normalization = self.target_normalization
        tokenizer = self.loaded.tgt_tokenizer
        prefix: list[int] = []
        if terms.prefix.strip():
            prefix = tokenizer.encode([normalize(terms.prefix, normalization)])[0]
            self._check_spelled(prefix, "the prefix", terms.prefix, number)
        phrases = []
        for rank, phrase in enumerate(terms.constraints, 1):
            if not phrase.strip():
                raise TermsError(f"line {number}: constraint {rank} is empty")
            ids = tokenizer.encode([normalize(phrase, normalization)])[0]
            if ids and tokenizer.pieces(ids[:1]) == ["\u2581"]:
                ids = ids[1:]  # a lone word-start piece: languages without spaces need none
            self._check_spelled(ids, f"constraint {rank}", phrase, number)
            phrases.append(tuple(ids))
        if phrases and self.decode.sampling:
            raise TermsError(f"line {number}: constraints need beam search; sampling "
                             "(decode.sampling) cannot keep them")
        if len(phrases) > self.decode.beam_size:
            raise TermsError(f"line {number}: {len(phrases)} constraints, more than the beam "
                             f"holds (decode.beam_size {self.decode.beam_size}); give a beam of "
                             f"at least {len(phrases)} or fewer constraints")
        target = TargetTerms(tuple(prefix), tuple(phrases),
                             prefix_ends_word=bool(prefix) and terms.prefix[-1:].isspace()
                             and self.joiner != "")
        limit = int(max_output_lengths(torch.tensor([source_tokens + 1]), self.decode)[0])
        if target.tokens_needed > limit:
            raise TermsError(
                f"line {number}: the prefix and constraints take {target.tokens_needed} target "
                f"tokens, more than this line's output limit of {limit} (decode.max_len_a x "
                f"{source_tokens} source tokens + decode.max_len_b)")
        return target

    def _check_spelled(self, ids: Sequence[int], what: str, text: str, number: int) -> None:
        if UNK_ID in ids:
            raise TermsError(f"line {number}: {what} ({text!r}) has characters the target "
                             "vocabulary cannot spell (it has no byte fallback)")

    def _constrain_split_lines(self, pieces: Sequence[SourcePiece], line_of_piece: list[int],
                               targets: Mapping[int, TargetTerms],
                               piece_terms: list[TargetTerms],
                               hypotheses: list[list[Hypothesis]], with_attention: bool,
                               first_line: int) -> None:
        """Give each constraint of a line that was split to the piece whose first translation
        shares most of the phrase's tokens (the longer source on a tie, within each piece's
        beam and output limit), and translate those pieces again with them, in place."""
        redo: list[int] = []
        for line, target in targets.items():
            indices = [i for i, of in enumerate(line_of_piece) if of == line]
            if len(indices) == 1 or not target.constraints:
                continue
            given: dict[int, list[tuple[int, ...]]] = {index: [] for index in indices}
            for phrase in target.constraints:
                room = [index for index in indices if self._holds(
                    pieces[index], piece_terms[index], given[index] + [phrase])]
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
            again = self._decode([pieces[i] for i in redo], [piece_terms[i] for i in redo],
                                 with_attention)
            for index, of_piece in zip(redo, again):
                hypotheses[index] = of_piece

    def _holds(self, piece: SourcePiece, terms: TargetTerms,
               phrases: list[tuple[int, ...]]) -> bool:
        limit = int(max_output_lengths(torch.tensor([len(piece.ids) + 1]), self.decode)[0])
        needed = len(terms.prefix) + sum(len(phrase) for phrase in phrases)
        return len(phrases) <= self.decode.beam_size and needed <= limit

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


def decode_dtype(config: DecodeConfig, train_precision: str, device: torch.device,
                 decoder_hidden: int) -> torch.dtype:
    """The weights' dtype for decoding; ``torch.qint8`` stands for int8 weights
    (``s2s.model.int8``). ``auto`` is int8 on a CPU where torch multiplies int8 and the model
    is large enough to gain from it (``int8_pays``: BENCHMARKS.md, "Fast translation on a
    CPU"); elsewhere bf16 when the model trained in bf16 (``train_precision``, resolved) and
    the device runs bf16, else fp32. An explicit precision the device cannot run is an error.
    """
    precision = config.precision
    if precision == "auto" and device.type == "cpu" and int8_pays(decoder_hidden):
        return torch.qint8
    if precision == "auto":
        precision = "bf16" if train_precision == "bf16" else "fp32"
        if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            precision = "fp32"
    if precision == "int8":
        return torch.qint8
    check_precision(device, precision, "decode.precision")
    return torch.bfloat16 if precision == "bf16" else torch.float32


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shared_tokens(phrase: Sequence[int], hypotheses: list[Hypothesis]) -> int:
    """How many of ``phrase``'s tokens the best of ``hypotheses`` has."""
    best = hypotheses[0].tokens if hypotheses else []
    return sum(token in best for token in phrase)


def _after_prefix(text: str, decoded_prefix: str, prefix: str) -> str:
    """``text`` (which starts with the prefix's tokens, decoded as ``decoded_prefix``) with
    that start written exactly as the user's ``prefix``."""
    if not text.startswith(decoded_prefix):
        return text
    rest = text[len(decoded_prefix):]
    return prefix + (rest.lstrip() if prefix[-1:].isspace() else rest)

