"""`s2s evaluate`: translate a split, score it with sacrebleu, and keep the evidence.

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
from s2s.errors import DataError, UsageError
from s2s.prepare import data_dir
from s2s.report import Reporter, make_table
from s2s.scoring import Scores, bleu_tokenizer, score_corpus
from s2s.textio import parallel_paths, read_lines, read_references, side_normalization
from s2s.translate import Translator, check_vocabulary, checkpoint_path


@dataclass(frozen=True)
class Evaluation:
    checkpoint: str
    split: str
    scores: Scores
    sentences: int
    load_seconds: float
    translate_seconds: float
    hypothesis_file: Path

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / max(self.translate_seconds, 1e-9)


def evaluate(config: Config, *, split: str = "test", checkpoints: Sequence[str] = ("best",),
             src_file: Path | None = None, ref_file: Path | None = None,
             device: str = "auto", with_ter: bool = False,
             reporter: Reporter = Reporter()) -> list[Evaluation]:
    """Translate and score ``split`` (or ``src_file`` against ``ref_file``) per checkpoint.

    Decoding follows ``config.decode`` and ``config.train.threads``, not the settings stored
    in the checkpoints.
    """
    sources, references, label = _inputs(config, split, src_file, ref_file)
    results = []
    for name in checkpoints:
        started = time.perf_counter()
        translator = Translator.from_checkpoint(checkpoint_path(config.run_dir, name),
                                                decode=config.decode, device=device,
                                                threads=config.train.threads, reporter=reporter)
        if src_file is None:  # the run's own split: the checkpoint must share its vocabulary
            check_vocabulary(translator.loaded, config.run_dir)
        loaded = time.perf_counter()
        hypotheses = [result.text for result in translator.translate(sources)]
        finished = time.perf_counter()
        tokenize = bleu_tokenizer(config.data.tgt_lang, translator.decode.bleu_tokenize)
        scores = score_corpus(hypotheses, references, tokenize, with_ter)
        result = Evaluation(name, label, scores, len(sources), loaded - started,
                            finished - loaded, _eval_path(config, label, name, ".hyp"))
        _write_outputs(config, result, hypotheses, translator)
        results.append(result)
    _report(results, reporter)
    return results


def _inputs(config: Config, split: str, src_file: Path | None, ref_file: Path | None
            ) -> tuple[list[str], list[str], str]:
    """Sources (normalised like training data) and references exactly as distributed."""
    if (src_file is None) != (ref_file is None):
        raise UsageError("--src and --ref go together: give both files or neither")
    if src_file is not None and ref_file is not None:
        sources, _ = read_lines(src_file, invalid_utf8="replace",
                                normalization=side_normalization(config.data.normalization,
                                                                 config.data.src_lang))
        references, label = read_references(ref_file), src_file.name
    else:
        if split not in ("valid", "test"):
            raise UsageError(f"--split {split!r}: choose valid or test")
        source_path = data_dir(config) / f"{split}.src.txt"
        if not source_path.exists():
            raise DataError(f"{data_dir(config)}: no prepared {split} split; "
                            "run `s2s prepare` first")
        sources = source_path.read_text(encoding="utf-8").split("\n")[:-1]
        ref_file = parallel_paths(getattr(config.data, split), config.data.src_lang,
                                  config.data.tgt_lang)[1]
        references, label = read_references(ref_file), split
    if len(sources) != len(references):
        raise DataError(f"{ref_file} has {len(references)} lines but the source has "
                        f"{len(sources)}; they must align line by line")
    return sources, references, label


def _eval_path(config: Config, label: str, checkpoint: str, suffix: str) -> Path:
    name = Path(checkpoint).stem if checkpoint not in ("best", "last", "avg") else checkpoint
    return config.run_dir / "eval" / f"{label}.{name}{suffix}"


def _write_outputs(config: Config, result: Evaluation, hypotheses: list[str],
                   translator: Translator) -> None:
    result.hypothesis_file.parent.mkdir(parents=True, exist_ok=True)
    result.hypothesis_file.write_text("".join(line + "\n" for line in hypotheses),
                                      encoding="utf-8")
    record: dict[str, Any] = {
        "split": result.split, "checkpoint": result.checkpoint,
        "checkpoint_step": translator.loaded.step, **result.scores.as_dict(),
        "decode": config_to_dict(translator.decode), "device": str(translator.device),
        "sentences": result.sentences, "load_seconds": round(result.load_seconds, 3),
        "translate_seconds": round(result.translate_seconds, 3),
        "sentences_per_second": round(result.sentences_per_second, 2),
    }
    _eval_path(config, result.split, result.checkpoint, ".json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _report(results: list[Evaluation], reporter: Reporter) -> None:
    rows = [[r.checkpoint, r.split, r.sentences, round(r.scores.bleu, 2),
             round(r.scores.chrf, 2),
             "" if r.scores.ter is None else round(r.scores.ter, 2),
             round(r.sentences_per_second, 1)] for r in results]
    reporter.table(make_table("evaluation", ["checkpoint", "split", "sentences", "BLEU", "chrF",
                                             "TER", "sent/s"], rows))
    for name, signature in results[0].scores.signatures.items() if results else ():
        reporter.info(f"{name} signature: {signature}")
