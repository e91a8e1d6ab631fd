"""Training throughput (target tokens/s) and utilisation against this machine's matmul peak.

Usage: python benchmarks/train_speed.py CONFIG [--steps 200] [--variant NAME=override,...]

The run directory of CONFIG must be prepared (`s2s prepare CONFIG`). Each variant trains a
fresh model for ``--warmup`` steps, then times ``--steps`` optimizer updates on the batches
training's first epoch draws, in its order: the steps `s2s train` takes first. Batches differ
in length and shape, so a short window is noisy: 30 steps gave figures 25% apart from one run
to the next. FLOPs come from the architecture (benchmarks/flops.py; torch's FlopCounterMode does not
see inside fused RNN kernels), so utilisation is model work / time / the matmul peak measured
in the same process.

Speed alone can mislead: each variant also reports the validation perplexity its fresh model
reached after those warm-up + timed updates, so a setting that runs faster but learns slower
per update (PyTorch's initialisation, ``--set model.init_range=0``) shows as such.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from benchmarks.flops import training_flops  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.data.batching import collate, token_batches, training_lengths  # noqa: E402
from s2s.data.store import PreparedData  # noqa: E402
from s2s.device import (  # noqa: E402
    cpu_supports_bf16,
    resolve_device,
    with_resolved_precision,
)
from s2s.evaluation.validation import teacher_forced_nll  # noqa: E402
from s2s.training.learner import Learner  # noqa: E402
from s2s.training.schedule import learning_rate  # noqa: E402

DEFAULT_VARIANTS = {
    "fp32, input feeding": [],
    "bf16, input feeding": ["train.precision=bf16"],
    "fp32, no input feeding": ["model.input_feeding=false"],
    "bf16, no input feeding": ["train.precision=bf16", "model.input_feeding=false"],
}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best-of-three GFLOP/s of a square matmul in ``dtype`` on the CPU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def measure(config_path: Path, overrides: list[str], steps: int, warmup: int) -> dict:
    """Time ``steps`` updates of a fresh model after ``warmup`` ones; nothing is written."""
    config = load_config(config_path, overrides)
    device = resolve_device(config.train.device)
    config = with_resolved_precision(config, device)
    settings = config.train
    prepared = PreparedData.of(config)
    data = prepared.split("train")
    learner = Learner(config, *prepared.vocab_sizes, prepared.joint, device=device)
    batches = token_batches(training_lengths(data), settings.batch_tokens,
                            seed=settings.seed, epoch=1)
    groups = [[collate(data, batch)] for batch in batches[:warmup + steps]]
    for step, group in enumerate(groups[:warmup]):
        learner.step(group, learning_rate(settings, step, 1.0))
    tokens, sentences, flops = 0, 0, 0.0
    started = time.perf_counter()
    for step, group in enumerate(groups[warmup:], start=warmup):
        tokens += learner.step(group, learning_rate(settings, step, 1.0)).target_tokens
        sentences += len(group[0].indices)
        flops += training_flops(config.model, group[0], prepared.vocab_sizes[1])
    seconds = time.perf_counter() - started
    learner.model.eval()
    valid_nll = teacher_forced_nll(learner.model, prepared.split("valid"), settings.batch_tokens,
                                   learner.train_config.precision, learner.device)
    return {"tokens_per_second": tokens / seconds, "sentences_per_batch": sentences / steps,
            "gflop_per_second": flops / seconds / 1e9,
            "precision": learner.train_config.precision, "valid_ppl": math.exp(min(valid_nll, 50))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=section.key=value,section.key=value (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="override applied to every variant")
    args = parser.parse_args()
    variants = DEFAULT_VARIANTS
    if args.variant:
        variants = {}
        for text in args.variant:
            name, _, settings = text.partition("=")
            variants[name] = [item for item in settings.split(",") if item]
    PreparedData.of(load_config(args.config, args.overrides))  # a bad run fails before timing
    # bf16 matmuls are emulated on CPUs without bf16 kernels: minutes for one 2048^3 product
    has_bf16 = cpu_supports_bf16()
    peaks = {"fp32": matmul_peak(torch.float32),
             "bf16": matmul_peak(torch.bfloat16) if has_bf16 else None}
    print(f"machine: {machine()}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"matmul peak (2048^3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 "
          + (f"{peaks['bf16']:.0f} GFLOP/s" if has_bf16 else "not run (no bf16 kernels)"))
    print(f"{'variant':<28} {'tok/s':>8} {'sent/batch':>10} {'GFLOP/s':>8} {'util':>6} "
          f"{'valid ppl':>9}")
    results = {}
    for name, overrides in variants.items():
        if "train.precision=bf16" in args.overrides + overrides and not has_bf16:
            print(f"{name:<28} skipped: this CPU has no bf16 kernels", flush=True)
            continue
        result = measure(args.config, args.overrides + overrides, args.steps, args.warmup)
        result["utilisation"] = result["gflop_per_second"] / peaks[
            "bf16" if result["precision"] == "bf16" else "fp32"]
        results[name] = result
        print(f"{name:<28} {result['tokens_per_second']:>8,.0f} "
              f"{result['sentences_per_batch']:>10.1f} {result['gflop_per_second']:>8.1f} "
              f"{result['utilisation']:>6.1%} {result['valid_ppl']:>9.1f}", flush=True)
    print(json.dumps({"peaks_gflops": peaks, "results": results}))


if __name__ == "__main__":
    run_script(main)
