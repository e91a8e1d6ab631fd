"""Which way a model's attention runs: forwards (target position t reads source position
about t S/T), or backwards (about S - t), the failed start of BENCHMARKS.md's "Attention that
runs backwards".

Usage: python benchmarks/attention_direction.py RUN_DIR_OR_CHECKPOINT... [--sentences 128]

For each model: ``s2s.evaluation.validation.attention_direction`` over the first validation
sentences of its run (training logs the same at every validation, and warns below -0.2).
Working models score +0.6 (much reordering) to +0.95; the failed starts scored -0.34 to -0.75.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script  # noqa: E402
from s2s.data.store import load_split  # noqa: E402
from s2s.device import thread_scope  # noqa: E402
from s2s.evaluation.validation import attention_direction  # noqa: E402
from s2s.run.checkpoint import load_model, resolve_checkpoint  # noqa: E402


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
        with thread_scope(1):
            direction = attention_direction(model, valid, torch.device("cpu"), args.sentences)
        print(f"{direction:+.2f}  {path}")


if __name__ == "__main__":
    run_script(main)
