"""A run's learning curve as a Markdown table: validation scores against training time.

Usage: python benchmarks/learning_curve.py RUN_DIR [--every 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--every", type=int, default=1, help="print every Nth validation")
    args = parser.parse_args()
    records = RunDir(args.run_dir).read_metrics()
    elapsed_at = {r["step"]: r["elapsed"] for r in records if r["kind"] == "train"}
    valid = [r for r in records if r["kind"] == "valid"]
    print("| step | minutes | valid loss | valid ppl | valid BLEU | valid chrF |")
    print("|---:|---:|---:|---:|---:|---:|")
    for index, record in enumerate(valid):
        if index % args.every and index != len(valid) - 1:
            continue
        seconds = record.get("elapsed", elapsed_at.get(record["step"]))
        minutes = f"{seconds / 60:.1f}" if seconds is not None else "?"
        print(f"| {record['step']} | {minutes} | {record['loss']:.3f} | {record['ppl']:.2f} | "
              f"{record['bleu']:.2f} | {record['chrf']:.2f} |")


if __name__ == "__main__":
    run_script(main)
