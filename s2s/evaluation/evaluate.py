"""`s2s evaluate`: translate a split, score it with sacrebleu, and keep the evidence.

With two or more systems (several checkpoints, or a ``baseline`` hypothesis file such as
another run's ``.hyp``), each is tested against the first by a paired significance test
(``s2s.evaluation.significance``): the 95% confidence interval of its BLEU and the p-values of
its differences, in the table and in its ``.json``.

References are read from the original files, never normalised, so scores compare against the
references as distributed. For each checkpoint evaluated,
``RUN_DIR/eval/<split>.<checkpoint>.hyp`` holds the translations and ``.json`` the scores with
their sacrebleu signatures, the decoding settings and the speed, so a reported number can always
be traced and reproduced.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from s2s.config import Config, config_to_dict
from s2s.errors import UsageError
from s2s.evaluation.scoring import Scorer
from s2s.evaluation.significance import TESTS, Interval, Significance, paired_significance
from s2s.evaluation.validation import EvaluationSet, Validation, validate
from s2s.report import Reporter, make_table
from s2s.rundir import RunDir
from s2s.translation.output import OutputFormat
from s2s.translation.translator import ModelRef, Translator, load_translator


@dataclass(frozen=True)
class Evaluation:
    checkpoint: str
    split: str
    result: Validation
    sentences: int
    load_seconds: float
    hypothesis_file: Path
    decoded_with: dict[str, Any]  # the models, decoding settings and device

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / max(self.result.translate_seconds, 1e-9)


def evaluate(config: Config, *, split: str = "test", checkpoints: Sequence[str] = ("best",),
             src_file: Path | None = None, ref_files: Sequence[Path] = (),
             device: str = "auto", with_ter: bool = False, alignment: str = "none",
             ensemble: Sequence[ModelRef] = (), weights: Sequence[float] | None = None,
             baseline: Path | None = None, significance: str = "bs",
             reporter: Reporter = Reporter()) -> list[Evaluation]:
    """Translate and score ``split`` (or ``src_file`` against ``ref_files``, one or several
    references per line) per checkpoint.

    With ``ensemble`` (other runs' models, ``weights`` one per model) the one checkpoint
    named decodes together with them, reported as "ensemble" (files ``<split>.ensemble.*``).
    ``baseline``: a hypothesis file of the same split, the first system of the significance
    test (``significance``: bs, ar, or none for no test).

    Decoding follows ``config.decode`` and ``config.train.threads``, not the settings stored
    in the checkpoints. Scoring is ``s2s.evaluation.validation.validate``, as in training. With an
    ``alignment`` (hard or soft), the best translations' word alignments go to a ``.align``
    file beside the ``.hyp`` file, line by line.
    """
    output = OutputFormat(alignment=alignment)
    if ensemble and len(checkpoints) > 1:
        raise UsageError("--model makes one ensemble with one --checkpoint of this run; "
                         f"got {len(checkpoints)} checkpoints ({','.join(checkpoints)})")
    data = _inputs(config, split, src_file, ref_files)
    baseline_lines = _baseline(baseline, len(data.sources))
    if significance not in ("none", *TESTS):
        raise UsageError(f"--significance {significance}: choose bs (paired bootstrap), ar "
                         "(approximate randomisation) or none")
    run = RunDir(config.run_dir)
    results = []
    for name in checkpoints:
        started = time.perf_counter()
        # the run's own split is encoded with the run's vocabulary: the checkpoint must share it
        translator = load_translator(config.run_dir, name, decode=config.decode,
                                     threads=config.train.threads, device=device,
                                     check_run_vocabulary=src_file is None,
                                     ensemble=ensemble, weights=weights, reporter=reporter)
        loaded = time.perf_counter()
        validation = validate(translator, data, with_ter=with_ter,
                              with_attention=output.with_attention)
        label = "ensemble" if ensemble else name
        result = Evaluation(label, data.name, validation, len(data.sources), loaded - started,
                            run.eval_file(data.name, label, ".hyp"), _decoded_with(translator))
        _write_outputs(run, result, output)
        results.append(result)
    systems = ([(f"baseline {baseline.name}", baseline_lines)] if baseline is not None
               else []) + [(r.checkpoint, r.result.hypotheses) for r in results]
    tested = None
    if significance != "none" and len(systems) >= 2:
        tested = paired_significance(systems, data.references, Scorer.of(config), significance)
    for result, of_result in zip(results, tested[-len(results):] if tested else []):
        _write_record(run, result, {**of_result.as_dict(), "baseline": tested[0].system})
    _report(results, tested, reporter)
    return results


def _baseline(path: Path | None, lines: int) -> list[str]:
    """The baseline's hypotheses, one per reference."""
    if path is None:
        return []
    try:
        hypotheses = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--baseline {path}: cannot read it ({error})") from None
    if len(hypotheses) != lines:
        raise UsageError(f"--baseline {path}: {len(hypotheses)} lines, but the split has "
                         f"{lines} references")
    return hypotheses


def _inputs(config: Config, split: str, src_file: Path | None, ref_files: Sequence[Path]
            ) -> EvaluationSet:
    if (src_file is None) != (not ref_files):
        raise UsageError("--src and --ref go together: give both files or neither")
    if src_file is not None:
        return EvaluationSet.of_files(config, src_file, ref_files)
    return EvaluationSet.of_run(config, split)


def _decoded_with(translator: Translator) -> dict[str, Any]:
    return {"checkpoint_step": translator.loaded.step,
            "models": [str(member.path) for member in translator.members],
            "ensemble_weights": None if translator.weights is None else list(translator.weights),
            "decode": config_to_dict(translator.decode), "device": str(translator.device)}


def _write_outputs(run: RunDir, result: Evaluation, output: OutputFormat) -> None:
    """The hypotheses (and alignments) of one system and its JSON record."""
    result.hypothesis_file.parent.mkdir(parents=True, exist_ok=True)
    result.hypothesis_file.write_text("".join(line + "\n" for line in result.result.hypotheses),
                                      encoding="utf-8")
    if output.with_attention:
        alignments = [output.alignment_text(line) for line in result.result.results]
        result.hypothesis_file.with_suffix(".align").write_text(
            "".join(line + "\n" for line in alignments), encoding="utf-8")
    _write_record(run, result, None)


def _write_record(run: RunDir, result: Evaluation, significance: dict[str, Any] | None
                  ) -> None:
    validation = result.result
    record: dict[str, Any] = {
        "split": result.split, "checkpoint": result.checkpoint, **result.decoded_with,
        **validation.scores.as_dict(), "loss": validation.loss, "ppl": validation.ppl,
        "sentences": result.sentences, "load_seconds": round(result.load_seconds, 3),
        "translate_seconds": round(validation.translate_seconds, 3),
        "sentences_per_second": round(result.sentences_per_second, 2),
        "significance": significance,
    }
    run.eval_file(result.split, result.checkpoint, ".json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _report(results: list[Evaluation], tested: list[Significance] | None,
            reporter: Reporter) -> None:
    tokenized = any(r.result.scores.tokenized_bleu is not None for r in results)
    rows = [[r.checkpoint, r.split, r.sentences, _rounded(r.result.ppl),
             round(r.result.scores.bleu, 2), round(r.result.scores.chrf, 2),
             _rounded(r.result.scores.ter)]
            + ([_rounded(r.result.scores.tokenized_bleu)] if tokenized else [])
            + [round(r.sentences_per_second, 1)] for r in results]
    columns = ["checkpoint", "split", "sentences", "ppl", "BLEU", "chrF", "TER"]
    reporter.table(make_table("evaluation", columns + (["BLEU (tok)"] if tokenized else [])
                              + ["sent/s"], rows))
    for name, signature in results[0].result.scores.signatures.items() if results else ():
        reporter.info(f"{name} signature: {signature}")
    if tested:
        reporter.table(make_table(
            f"significance against {tested[0].system} ({TESTS[tested[0].test]})",
            ["system", "BLEU", "95% CI", "p (BLEU)", "chrF", "95% CI", "p (chrF)"],
            [[t.system, round(t.bleu.score, 2), _interval(t.bleu), _p_value(t.bleu),
              round(t.chrf.score, 2), _interval(t.chrf), _p_value(t.chrf)] for t in tested]))
        reporter.info("p: the chance of a difference this large between systems of equal "
                      "quality; below 0.05 is significant by the usual convention")


def _interval(interval: Interval) -> str:
    if interval.mean is None or interval.ci is None:
        return ""
    return f"{interval.mean:.2f} ± {interval.ci:.2f}"


def _p_value(interval: Interval) -> str:
    return "baseline" if interval.p_value is None else f"{interval.p_value:.4f}"


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 2)
