"""What subword regularisation costs in training speed: `s2s train` tokens/s with and without it.

Usage: python benchmarks/resegment_speed.py CONFIG [--steps 300] [--rounds 3]
           [--variant NAME=key=value,key=value ...] [--set key=value ...]

The run directory of CONFIG must be prepared (`s2s prepare CONFIG`). Each round trains every
variant from scratch for ``--steps`` updates (no validation) in a scratch copy of the run, the
variants alternating so that a noisy machine treats them alike, and reads the target tokens/s
`s2s train` logs after its first 50 steps, and the steps per second over the same span. The
default variants: no sampling; unigram sampling among the 16 and the 64 best segmentations.
Training draws its segmentations in a worker process; its cost shows here as what it takes
from the training step's cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402
from s2s.training.loop import train  # noqa: E402

DEFAULT_VARIANTS = {
    "off": [],
    "unigram16": ["vocab.sampling_alpha=0.1", "vocab.sampling_nbest=16"],
    "unigram64": ["vocab.sampling_alpha=0.1", "vocab.sampling_nbest=64"],
}


def speeds(config_path: Path, overrides: list[str], steps: int, scratch: Path
           ) -> tuple[float, float]:
    """Train a fresh model for ``steps`` updates in a copy of the run; its target tokens/s and
    steps/s after the first 50 steps (the first logging window holds the start-up). Tokens/s
    alone would flatter sampling: the same text in smaller pieces is more tokens."""
    source = load_config(config_path, overrides)
    run_dir = scratch / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(RunDir(source.run_dir).data, RunDir(run_dir).data)
    # the scratch run's settings come last: they win over any of the variant's
    config = load_config(config_path, [*overrides, f"run_dir={run_dir}",
                                       f"train.max_steps={steps}", "train.valid_every=1000000",
                                       "train.log_every=50", "train.max_minutes=0"])
    train(config)
    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    windows = [record for record in records if record.get("kind") == "train"]
    tokens = statistics.mean(record["tokens_per_second"] for record in windows[1:])
    steps_per_second = ((windows[-1]["step"] - windows[0]["step"])
                        / (windows[-1]["elapsed"] - windows[0]["elapsed"]))
    return tokens, steps_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=key=value,key=value (replaces the default variants)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="key=value for every variant (run_dir=... picks a prepared run)")
    args = parser.parse_args()
    variants = DEFAULT_VARIANTS if not args.variant else {
        name: [item for item in settings.split(",") if item]
        for name, _, settings in (variant.partition("=") for variant in args.variant)}
    variants = {name: [*args.overrides, *settings] for name, settings in variants.items()}
    print(f"machine: {machine()}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="s2s-resegment-") as scratch:
        for round_number in range(args.rounds):
            for name, overrides in variants.items():
                tokens, steps = speeds(args.config, overrides, args.steps, Path(scratch))
                results[name].append((tokens, steps))
                print(f"round {round_number + 1} {name}: {tokens:,.0f} tok/s, "
                      f"{steps:.3f} steps/s", flush=True)
    first = next(iter(variants))
    baseline = [statistics.median(run[kind] for run in results[first]) for kind in (0, 1)]
    print(f"\n| variant | tok/s | vs {first} | steps/s | vs {first} | (medians of {args.rounds})")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        tokens, steps = (statistics.median(run[kind] for run in runs) for kind in (0, 1))
        print(f"| {name} | {tokens:,.0f} | {tokens / baseline[0]:.3f} | {steps:.3f} | "
              f"{steps / baseline[1]:.3f} |")


if __name__ == "__main__":
    run_script(main)
