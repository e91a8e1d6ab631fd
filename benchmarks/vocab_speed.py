"""How long sentencepiece takes to train a vocabulary with 1, 2 and 4 threads.

Usage: python benchmarks/vocab_speed.py FILE [FILE ...] [--size 16000]

The thread count changes the vocabulary, so s2s fixes it (vocab.threads); this shows its cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import VocabConfig  # noqa: E402
from s2s.data.vocab import train_sentencepiece  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--size", type=int, default=16000)
    args = parser.parse_args()
    lines = sorted({line for path in args.files
                    for line in path.read_text(encoding="utf-8").splitlines() if line})
    print(f"machine: {machine()}; {len(lines):,} distinct lines, {args.size:,} pieces")
    with tempfile.TemporaryDirectory() as scratch:
        for threads in (1, 2, 4):
            config = replace(VocabConfig(), threads=threads)
            started = time.perf_counter()
            train_sentencepiece(lines, Path(scratch) / "spm.model", args.size, config)
            print(f"{threads} threads: {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    run_script(main)
