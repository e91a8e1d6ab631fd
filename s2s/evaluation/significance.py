"""Whether one system is really better than another: paired significance tests on the same
test set, as sacrebleu implements them.

Paired bootstrap resampling (``bs``, Koehn 2004, the default) draws 1,000 test sets of the
same size from the sentences with replacement, the same draws for every system; it gives each
system's mean score with a 95% confidence interval and the p-value of its difference from the
first system (the baseline). Approximate randomisation (``ar``, Riezler & Maxwell 2005) swaps
the two systems' translations of random sentences 10,000 times; it gives p-values only. The
draws are seeded (sacrebleu's seed 12345, or ``SACREBLEU_SEED``), so a report reproduces. A
system whose output is identical to the baseline's gets p = 1 (sacrebleu would say 1/(n+1)).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from sacrebleu.significance import PairedTest

from s2s.errors import UsageError
from s2s.evaluation.scoring import Scorer

TESTS = {"bs": "paired bootstrap resampling", "ar": "approximate randomisation"}


@dataclass(frozen=True)
class Interval:
    """One system's score under one metric, with what the test says about it."""

    score: float
    mean: float | None  # bootstrap mean (bs only)
    ci: float | None  # half-width of the 95% confidence interval around the mean (bs only)
    p_value: float | None  # of the difference from the baseline; None for the baseline

    def as_dict(self) -> dict[str, float | None]:
        return {"score": self.score, "mean": self.mean, "ci95": self.ci,
                "p_value": self.p_value}


@dataclass(frozen=True)
class Significance:
    """A system's BLEU and chrF against the baseline's, and how they were tested."""

    system: str
    bleu: Interval
    chrf: Interval
    test: str
    signatures: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {"test": TESTS[self.test], "bleu": self.bleu.as_dict(),
                "chrf": self.chrf.as_dict(), "signatures": self.signatures}


def paired_significance(systems: Sequence[tuple[str, Sequence[str]]],
                        references: Sequence[Sequence[str]], scorer: Scorer, test: str = "bs"
                        ) -> list[Significance]:
    """Each system's BLEU and chrF as ``scorer`` computes them, tested against the first
    system's, in order; ``references``: one list per reference translation."""
    if test not in TESTS:
        raise UsageError(f"--significance {test}: choose bs (paired bootstrap) or ar "
                         "(approximate randomisation)")
    if len(systems) < 2:
        raise ValueError("a paired test needs a baseline and at least one other system")
    paired = PairedTest([(name, list(hypotheses)) for name, hypotheses in systems],
                        scorer.metrics(), scorer.detokenized(references), test_type=test,
                        n_samples=0, n_ar_confidence=-1)
    logger = logging.getLogger("sacrebleu")
    level = logger.level
    logger.setLevel(logging.WARNING)  # sacrebleu narrates each step at INFO
    try:
        signatures, results = paired()
    finally:
        logger.setLevel(level)
    named = {key.lower().rstrip("2"): value for key, value in results.items()}
    signature_of = {key.lower().rstrip("2"): str(value) for key, value in signatures.items()}
    tested = []
    for rank, (name, hypotheses) in enumerate(systems):
        # sacrebleu never calls a zero difference chance (p = 1/(n+1)); output identical to
        # the baseline's is no difference at all
        same = rank > 0 and list(hypotheses) == list(systems[0][1])
        intervals = [_interval(named[metric][rank], same) for metric in ("bleu", "chrf")]
        tested.append(Significance(name, *intervals, test, signature_of))
    return tested


def _interval(result: Any, same_as_baseline: bool) -> Interval:
    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return Interval(float(result.score), number(result.mean), number(result.ci),
                    1.0 if same_as_baseline else number(result.p_value))
