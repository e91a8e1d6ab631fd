"""The oracle-constraint test of terminology constraints: phrases taken from the references.

Usage: python benchmarks/constraints.py CONFIG [--checkpoint best] [--counts 0,1,2]
       [--seed 1] [--beam 5] [--threads 1] [--set run_dir=runs/other ...]

For each count, every test sentence gets that many phrases drawn at random from its own
reference (for languages written with spaces, 1-3 consecutive words; for Chinese and Japanese,
2-4 consecutive characters), as in the standard experiments with lexically constrained
decoding (Hokamp & Liu 2017; Post & Vilar 2018). Sentences whose reference is too short for a
phrase get fewer. Reports test BLEU and chrF (scored as `s2s evaluate` scores), the share of
outputs that contain every phrase, and decoding speed (the model loaded once, decoding timed
alone).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.data.text import joiner  # noqa: E402
from s2s.evaluation.scoring import Scorer  # noqa: E402
from s2s.evaluation.validation import EvaluationSet  # noqa: E402
from s2s.translation.terms import LineTerms  # noqa: E402
from s2s.translation.translator import load_translator  # noqa: E402


def oracle_phrases(reference: str, count: int, chance: random.Random, by_character: bool
                   ) -> tuple[str, ...]:
    """Up to ``count`` non-overlapping phrases of ``reference``."""
    units = list(reference.replace(" ", "")) if by_character else reference.split()
    lengths = (2, 4) if by_character else (1, 3)
    glue = "" if by_character else " "
    phrases: list[str] = []
    taken: set[int] = set()
    for _ in range(count):
        for _attempt in range(20):
            length = chance.randint(*lengths)
            if len(units) < length:
                break
            start = chance.randrange(len(units) - length + 1)
            span = set(range(start, start + length))
            if span & taken:
                continue
            taken |= span
            phrases.append(glue.join(units[start:start + length]))
            break
    return tuple(phrases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--counts", default="0,1,2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change the config, e.g. --set run_dir=runs/other")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    test = EvaluationSet.of_run(config, "test")
    translator = load_translator(config.run_dir, args.checkpoint, decode=replace(
        config.decode, beam_size=args.beam), threads=args.threads, device="cpu")
    by_character = joiner(config.data.tgt_lang) == ""
    scorer = Scorer.of(config)
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads; "
          f"{translator.description}; beam {args.beam}; seed {args.seed}")
    print(f"{'phrases':>7} {'given':>6} {'BLEU':>6} {'chrF':>6} {'all kept':>8} "
          f"{'sent/s':>7}")
    results = []
    for count in (int(c) for c in args.counts.split(",")):
        chance = random.Random(args.seed)
        terms = [LineTerms(constraints=oracle_phrases(reference, count, chance, by_character))
                 for reference in test.references[0]]
        started = time.perf_counter()
        outputs = translator.translate(test.sources, terms=terms)
        seconds = time.perf_counter() - started
        hypotheses = [result.text for result in outputs]
        scores = scorer.score(hypotheses, test.references)
        kept = sum(all(phrase in text for phrase in of_line.constraints)
                   for text, of_line in zip(hypotheses, terms)) / len(terms)
        given = sum(len(of_line.constraints) for of_line in terms)
        result = {"phrases": count, "given": given, "bleu": scores.bleu, "chrf": scores.chrf,
                  "all_kept": kept, "sentences_per_second": len(terms) / seconds}
        results.append(result)
        print(f"{count:>7} {given:>6} {scores.bleu:>6.2f} {scores.chrf:>6.2f} "
              f"{100 * kept:>7.1f}% {result['sentences_per_second']:>7.1f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    run_script(main)
