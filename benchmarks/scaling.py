"""Data-parallel scaling on one machine: training tokens/s with 1 process and with N.

Usage: python benchmarks/scaling.py CONFIG [--nproc 2] [--steps 60]

Both runs use the same global batch (the one-process run accumulates N batches per step) and
the default thread setting (train.threads: 0, the machine's cores shared among the processes
on it), so the ratio shows what a user gets from `--nproc N` as shipped.
Throughput is read from the runs' metrics.jsonl (log records after the first).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_command, run_script, s2s_command  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


def tokens_per_second(config: Path, run_dir: Path, nproc: int, accumulate: int,
                      steps: int) -> float:
    overrides = [f"run_dir={run_dir}", f"train.accumulate={accumulate}",
                 "train.threads=0", f"train.max_steps={steps}",
                 f"train.log_every={max(steps // 6, 1)}", f"train.valid_every={10 * steps}"]
    arguments = ["train", str(config), "--nproc", str(nproc)]
    for override in overrides:
        arguments += ["--set", override]
    result = run_command(s2s_command(*arguments))
    assert result.returncode == 0, "training failed"
    records = RunDir(run_dir).read_metrics()
    speeds = [r["tokens_per_second"] for r in records if r["kind"] == "train"][1:]
    return sum(speeds) / len(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    prepared = RunDir(load_config(args.config).run_dir).data
    with tempfile.TemporaryDirectory() as scratch:
        results = {}
        for nproc in (1, args.nproc):
            run_dir = Path(scratch) / f"run{nproc}"
            shutil.copytree(prepared, RunDir(run_dir).data)
            results[nproc] = tokens_per_second(args.config, run_dir, nproc,
                                               accumulate=args.nproc // nproc,
                                               steps=args.steps)
    print(f"machine: {machine()}")
    for nproc, speed in results.items():
        print(f"{nproc} process(es): {speed:,.0f} target tokens/s")
    print(f"scaling efficiency: {results[args.nproc] / results[1]:.2f} "
          f"(tokens/s with {args.nproc} processes / with 1, same global batch and cores)")


if __name__ == "__main__":
    run_script(main)
