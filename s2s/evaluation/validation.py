"""Validation: the numbers models are chosen by, computed one way for everyone.

Training (every ``train.valid_every`` steps), `s2s evaluate` and the benchmarks all call
``validate``: the teacher-forced loss and perplexity on the prepared split, and BLEU and chrF of
translating its sources exactly as `s2s translate` would, scored by s2s.evaluation.scoring's
``Scorer`` against the references as distributed (the raw files, never normalised; one or
several per line). So the validation BLEU that picks ``best.pt``
and stops training early is the BLEU `s2s evaluate --split valid` reports for that checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from s2s.config import Config
from s2s.data.batching import collate, token_batches, training_lengths
from s2s.data.store import EncodedSplit, load_split, prepared_sources
from s2s.data.text import (
    parallel_paths,
    read_lines,
    read_references,
    side_normalization,
)
from s2s.data.vocab import PAD_ID
from s2s.device import thread_scope
from s2s.errors import DataError, UsageError
from s2s.evaluation.scoring import Scorer, Scores
from s2s.model.loss import smoothed_loss, teacher_forced
from s2s.model.seq2seq import evaluating
from s2s.rundir import RunDir
from s2s.translation.translator import TranslationResult, Translator


@dataclass(frozen=True)
class EvaluationSet:
    """Sources to translate, their references, and (for a run's split) the encoded pairs."""

    name: str  # valid, test, or the source file's name
    sources: list[str]  # normalised like the training data
    # one list per reference translation (several when data.<split>_references name them),
    # each aligned with the sources, as distributed
    references: list[list[str]]
    encoded: EncodedSplit | None = None  # for the teacher-forced loss

    @classmethod
    def of_run(cls, config: Config, split: str) -> "EvaluationSet":
        """A prepared split of the run, with its references read from the corpus files (or
        from ``data.<split>_references``)."""
        if split not in ("valid", "test"):
            raise UsageError(f"--split {split!r}: choose valid or test")
        sources = prepared_sources(config.run_dir, split)
        ref_files = getattr(config.data, f"{split}_references") or (
            parallel_paths(getattr(config.data, split), config.data.src_lang,
                           config.data.tgt_lang)[1],)
        encoded = load_split(RunDir(config.run_dir).data, split)
        return cls._checked(split, sources, ref_files, encoded)

    @classmethod
    def of_files(cls, config: Config, src_file: Path, ref_files: Sequence[Path]
                 ) -> "EvaluationSet":
        """Any source file (normalised as the config says) against its reference files."""
        sources, _ = read_lines(src_file, invalid_utf8="replace",
                                normalization=side_normalization(config.data.normalization,
                                                                 config.data.src_lang))
        return cls._checked(src_file.name, sources, ref_files, None)

    @classmethod
    def _checked(cls, name: str, sources: list[str], ref_files: Sequence[Path],
                 encoded: EncodedSplit | None) -> "EvaluationSet":
        references = []
        for ref_file in ref_files:
            lines = read_references(ref_file)
            if len(sources) != len(lines):
                raise DataError(f"{ref_file} has {len(lines)} lines but the source has "
                                f"{len(sources)}; they must align line by line")
            references.append(lines)
        return cls(name, sources, references, encoded)


@dataclass(frozen=True)
class Validation:
    scores: Scores
    results: list[TranslationResult]  # what the translator gave for each source line
    loss: float | None  # NLL per target token under teacher forcing; None without targets
    seconds: float  # all of it
    translate_seconds: float  # translating the sources

    @property
    def hypotheses(self) -> list[str]:
        return [result.text for result in self.results]

    @property
    def ppl(self) -> float | None:
        return None if self.loss is None else math.exp(min(self.loss, 50.0))


def validate(translator: Translator, data: EvaluationSet, *, with_ter: bool = False,
             with_attention: bool = False) -> Validation:
    """Teacher-forced loss (when ``data`` has encoded pairs) and the scores of translating
    ``data.sources`` with ``translator``'s model and decoding settings (``with_attention``:
    the results carry word alignments)."""
    started = time.perf_counter()
    config = translator.loaded.config
    with thread_scope(translator.threads), evaluating(translator.model):
        loss = None if data.encoded is None else teacher_forced_nll(
            translator.model, data.encoded, config.train.batch_tokens,
            config.train.precision, translator.device)
    translating = time.perf_counter()
    results = translator.translate(data.sources, with_attention=with_attention)
    translated = time.perf_counter()
    hypotheses = [result.text for result in results]
    scorer = Scorer.of(replace(config, decode=translator.decode))
    scores = scorer.score(hypotheses, data.references, with_ter)
    return Validation(scores, results, loss, time.perf_counter() - started,
                      translated - translating)


# attention that reads the source backwards, below this, is a failed start (BENCHMARKS.md,
# "Attention that runs backwards": working models score +0.6 to +0.95 on their validation
# sentences, failed starts -0.34 to -0.75)
BACKWARDS = -0.2


@torch.inference_mode()
def attention_direction(model: torch.nn.Module, split: EncodedSplit, device: torch.device,
                        sentences: int = 128) -> float | None:
    """Which way ``model``'s attention runs over the first ``sentences`` pairs of ``split``,
    teacher-forced: the mean over sentences of the correlation between each target position
    and the source position its attention weights most. About +1 forwards (target position
    t reads about t S/T), below ``BACKWARDS`` backwards; None when no sentence tells."""
    count = min(sentences, len(split))
    if count == 0:
        return None
    batch = collate(split, np.arange(count)).to(device)
    with evaluating(model):
        _, weights = model(batch.src, batch.src_lengths, batch.tgt_in, with_attention=True)
    correlations = []
    for row, (target_length, source_length) in enumerate(
            zip((batch.tgt_in != PAD_ID).sum(1).tolist(), batch.src_lengths.tolist())):
        looked_at = weights[row, :target_length, :source_length].argmax(-1).double().cpu()
        positions = torch.arange(target_length, dtype=torch.double)
        correlation = float(torch.corrcoef(torch.stack([positions, looked_at]))[0, 1])
        if not math.isnan(correlation):  # a one-token sentence, or one place looked at
            correlations.append(correlation)
    return float(np.mean(correlations)) if correlations else None


@torch.inference_mode()
def teacher_forced_nll(model: torch.nn.Module, split: EncodedSplit, batch_tokens: int,
                       precision: str, device: torch.device) -> float:
    """The negative log-likelihood per target token of ``split`` under teacher forcing."""
    nll_sum, tokens = 0.0, 0
    for indices in token_batches(training_lengths(split), batch_tokens):
        logits, targets, _ = teacher_forced(model, collate(split, indices).to(device), precision)
        nll_sum += float(smoothed_loss(logits, targets, 0.0)[1])
        tokens += len(targets)
    return nll_sum / max(tokens, 1)
