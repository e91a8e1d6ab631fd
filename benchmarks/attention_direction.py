"""Which way a model's attention runs: forwards (target position t reads source position
about t S/T), or backwards (about S - t), the failed start of BENCHMARKS.md's "Attention that
runs backwards".

Usage: python benchmarks/attention_direction.py RUN_DIR_OR_CHECKPOINT... [--sentences 128]

For each model: over the first validation sentences of its run, teacher-forced, the Pearson
correlation between each target position and the source position its attention weights most,
averaged over the sentences. Working models score +0.6 (much reordering) to +0.95; the failed
starts scored -0.34 to -0.75.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script  # noqa: E402
from s2s.data.batching import collate  # noqa: E402
from s2s.data.store import load_split  # noqa: E402
from s2s.data.vocab import PAD_ID  # noqa: E402
from s2s.device import thread_scope  # noqa: E402
from s2s.model.seq2seq import evaluating  # noqa: E402
from s2s.run.checkpoint import load_model, resolve_checkpoint  # noqa: E402


def attention_direction(model: torch.nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                        tgt_in: torch.Tensor) -> float:
    """Mean over sentences of corr(target position, argmax source position of its attention)."""
    with torch.no_grad(), evaluating(model):
        _, weights = model(src, src_lengths, tgt_in, with_attention=True)  # (B, T, S)
    correlations = []
    for row, (target_length, source_length) in enumerate(
            zip((tgt_in != PAD_ID).sum(1).tolist(), src_lengths.tolist())):
        looked_at = weights[row, :target_length, :source_length].argmax(-1).double()
        positions = torch.arange(target_length, dtype=torch.double)
        correlation = float(torch.corrcoef(torch.stack([positions, looked_at]))[0, 1])
        if not math.isnan(correlation):  # a one-token sentence, or one place looked at
            correlations.append(correlation)
    return float(np.mean(correlations))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path,
                        help="run directories (their best checkpoint) or checkpoint files")
    parser.add_argument("--sentences", type=int, default=128)
    args = parser.parse_args()
    for given in args.models:
        path = given if given.suffix == ".pt" else resolve_checkpoint(given, "best")
        run_dir = path.parent.parent
        model = load_model(path).model.float()
        valid = load_split(run_dir / "data", "valid")
        batch = collate(valid, np.arange(min(args.sentences, len(valid))))
        with thread_scope(1):
            direction = attention_direction(model, batch.src, batch.src_lengths, batch.tgt_in)
        print(f"{direction:+.2f}  {path}")


if __name__ == "__main__":
    run_script(main)
