"""How long an epoch's token batches take to make for a large corpus: `token_batches` against
the sentence-by-sentence loop it replaced (the reference in tests/test_batching.py).

Usage: python benchmarks/batching_speed.py [--pairs 20000000] [--batch-tokens 1100] [--rounds 2]

Lengths are drawn uniformly from 5 to 59 tokens (seed 1); both ways shuffle with the same
seed and must give the same batches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from s2s.data.batching import token_batches  # noqa: E402
from tests.test_batching import reference_batches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000_000)
    parser.add_argument("--batch-tokens", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    lengths = np.random.default_rng(1).integers(5, 60, size=args.pairs)
    for number in range(1, args.rounds + 1):
        start = time.perf_counter()
        batches = token_batches(lengths, args.batch_tokens, seed=1)
        fast = time.perf_counter() - start
        start = time.perf_counter()
        shuffled = np.random.default_rng([1, 0]).permutation(args.pairs)
        order = shuffled[np.argsort(lengths[shuffled], kind="stable")]
        expected = reference_batches(lengths, args.batch_tokens, order)
        loop = time.perf_counter() - start
        same = sorted(map(len, batches)) == sorted(map(len, expected))
        print(f"round {number}: token_batches {fast:.1f} s, sentence loop {loop:.1f} s, "
              f"{len(batches):,} batches, same sizes: {same}")


if __name__ == "__main__":
    main()
