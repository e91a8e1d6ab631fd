"""Where a training step's time goes: encoder, decoder loop, output layer and loss, backward,
optimizer (clipping and the update), in milliseconds per step.

Usage: python benchmarks/step_profile.py CONFIG [--steps 40] [--warmup 5] [--set KEY=VALUE]

The run directory of CONFIG must be prepared. The step is ``Learner.step`` taken apart into the
calls ``Seq2Seq.forward`` makes, each timed on its own (on CUDA, with a synchronisation after
each), over the real training batches in training's order. The parts add up to the step; the
backward pass is one part, since autograd runs it as one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.data.batching import Batch, collate, token_batches, training_lengths  # noqa: E402
from s2s.data.store import PreparedData  # noqa: E402
from s2s.data.vocab import PAD_ID  # noqa: E402
from s2s.device import autocast, resolve_device, with_resolved_precision  # noqa: E402
from s2s.model.loss import smoothed_loss  # noqa: E402
from s2s.training.learner import Learner  # noqa: E402

PARTS = ("encoder", "decoder loop", "output layer + loss", "backward", "optimizer")


class _Timer:
    """Adds the wall time of each ``with timer(part):`` block to ``seconds[part]``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, part: str) -> "_Timer":
        self.part = part
        return self

    def __enter__(self) -> None:
        self._sync()
        self.started = time.perf_counter()

    def __exit__(self, *exception) -> None:
        self._sync()
        self.seconds[self.part] += time.perf_counter() - self.started

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed_step(learner: Learner, batch: Batch, precision: str, smoothing: float,
               clip_norm: float, timer: _Timer) -> int:
    """One optimizer update, part by part; returns its target tokens."""
    model, batch = learner.model, batch.to(learner.device)
    learner.optimizer.zero_grad(set_to_none=True)
    positions = batch.tgt_out != PAD_ID
    with autocast(learner.device, precision):
        with timer("encoder"):
            encoded, state = model.encode(batch.src, batch.src_lengths)
        with timer("decoder loop"):
            vectors, _, _ = model.decoder(batch.tgt_in, state, encoded)
        with timer("output layer + loss"):
            logits = model.decoder.output(vectors[positions])
    with timer("output layer + loss"):
        loss, _ = smoothed_loss(logits, batch.tgt_out[positions], smoothing)
    with timer("backward"):
        loss.backward()
    with timer("optimizer"):
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        learner.optimizer.step()
    return int(positions.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    device = resolve_device(config.train.device)
    config = with_resolved_precision(config, device)
    settings, prepared = config.train, PreparedData.of(config)
    data = prepared.split("train")
    learner = Learner(config, *prepared.vocab_sizes, prepared.joint, device=device)
    batches = token_batches(training_lengths(data), settings.batch_tokens, seed=settings.seed,
                            epoch=1)[:args.warmup + args.steps]
    arguments = (learner.train_config.precision, settings.label_smoothing, settings.clip_norm)
    for indices in batches[:args.warmup]:
        timed_step(learner, collate(data, indices), *arguments, _Timer(device))
    timer, tokens = _Timer(device), 0
    for indices in batches[args.warmup:]:
        tokens += timed_step(learner, collate(data, indices), *arguments, timer)
    total = sum(timer.seconds.values())
    print(f"machine: {machine()}; {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.config} {' '.join(args.overrides)}")
    print(f"{args.steps} steps, {tokens / total:,.0f} target tokens/s over the parts below\n")
    print("| part | ms per step | share |\n|---|---:|---:|")
    for part in PARTS:
        seconds = timer.seconds[part]
        print(f"| {part} | {1000 * seconds / args.steps:.1f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    run_script(main)
