"""How several runs of one config started and ended: the attention direction training logged
at each validation, and the validation BLEU each run reached (issue 47, "every seed").

Usage: python benchmarks/seed_starts.py RUN_DIR... [--early STEPS]

Reads each run's ``metrics.jsonl`` and ``config.yaml`` only (nothing is decoded again) and
prints a Markdown table and one summary line: how many runs started backwards (a direction
below ``BACKWARDS`` at a validation within the first ``--early`` steps) and the spread of the
last and of the best validation BLEU. A run whose attention ends backwards counts too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.errors import UsageError  # noqa: E402
from s2s.evaluation.validation import BACKWARDS  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


@dataclass(frozen=True)
class RunStart:
    """What one run's logs say about its start and its end."""

    run: Path
    seed: int
    guided_steps: int
    directions: list[tuple[int, float]]  # (step, direction) of every validation that had one
    steps: int
    bleu: float  # the last validation's
    best_bleu: float  # the best validation's (what chose best.pt, averages aside)

    def started_backwards(self, early: int) -> bool:
        early_directions = [d for step, d in self.directions if step <= early]
        return any(d < BACKWARDS for d in early_directions) or (
            bool(self.directions) and self.directions[-1][1] < BACKWARDS)


def read_run(run: Path) -> RunStart:
    """One run's start and end from its logs; a run without validations is an error."""
    files = RunDir(run)
    if not files.metrics.is_file() or not files.config_file.is_file():
        raise UsageError(f"{run}: not a run directory (no metrics.jsonl and config.yaml)")
    train = load_config(files.config_file).train  # what the run trained with
    records = files.read_metrics()
    valid = [record for record in records if record.get("kind") == "valid"]
    if not valid:
        raise UsageError(f"{run}: no validation in metrics.jsonl")
    directions = [(record["step"], record["attention_direction"]) for record in valid
                  if record.get("attention_direction") is not None]
    return RunStart(run, train.seed, train.guided_attention_steps, directions,
                    valid[-1]["step"], valid[-1]["bleu"], max(record["bleu"] for record in valid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--early", type=int, default=400,
                        help="validations up to this step decide the start (default 400)")
    args = parser.parse_args()
    starts = [read_run(run) for run in args.runs]
    shown = sorted({step for start in starts for step, _ in start.directions
                    if step <= args.early})
    print("| run | seed | guided steps | " + " | ".join(f"attention at {s}" for s in shown)
          + " | attention at the end | steps | valid BLEU, last | best |")
    print("|---|---:|---:|" + "---:|" * (len(shown) + 4))
    for start in starts:
        by_step = dict(start.directions)
        cells = [f"{by_step[s]:+.2f}" if s in by_step else "" for s in shown]
        end = f"{start.directions[-1][1]:+.2f}" if start.directions else ""
        print(f"| {start.run.name} | {start.seed} | {start.guided_steps} | "
              + " | ".join(cells) + f" | {end} | {start.steps:,} | {start.bleu:.2f} | "
              f"{start.best_bleu:.2f} |")
    backwards = [start.run.name for start in starts if start.started_backwards(args.early)]
    print(f"\nbackwards starts: {len(backwards)} of {len(starts)}"
          + (f" ({', '.join(backwards)})" if backwards else "")
          + "; valid BLEU, last: " + _spread([start.bleu for start in starts])
          + "; best: " + _spread([start.best_bleu for start in starts]))


def _spread(scores: list[float]) -> str:
    """Lowest-highest (spread) of the runs' scores."""
    return f"{min(scores):.2f}-{max(scores):.2f} (spread {max(scores) - min(scores):.2f})"


if __name__ == "__main__":
    run_script(main)
