"""Random test lines with source, reference and a model's translation, as a Markdown table for
BENCHMARKS.md, so a reader can judge the quality by eye.

    s2s evaluate CONFIG --checkpoint best          # writes RUN_DIR/eval/test.best.hyp
    python benchmarks/sample_lines.py CONFIG --checkpoint best --count 20 --seed 1

The lines are drawn with a fixed seed from the whole test split (not chosen); the reference
is the config's first test reference, made plain text when it is Moses-tokenised.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2s.config import load_config  # noqa: E402
from s2s.evaluation.scoring import Scorer  # noqa: E402
from s2s.evaluation.validation import EvaluationSet  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip() or " "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    test = EvaluationSet.of_run(config, "test")
    references = Scorer.of(config).detokenized(test.references)[0]
    hypotheses = RunDir(config.run_dir).eval_file("test", args.checkpoint, ".hyp").read_text(
        encoding="utf-8").splitlines()
    chosen = sorted(random.Random(args.seed).sample(range(len(test.sources)), args.count))
    print(f"| # | source ({config.data.src_lang}) | reference | s2s |")
    print("|---:|---|---|---|")
    for index in chosen:
        print(f"| {index + 1} | {_cell(test.sources[index])} | {_cell(references[index])} | "
              f"{_cell(hypotheses[index])} |")


if __name__ == "__main__":
    main()
