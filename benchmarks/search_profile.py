"""Where beam search's time goes, per operator, for fp32, int8 and int8 with a shortlist.

Usage: python benchmarks/search_profile.py RUN_DIR [--sentences 64,13] [--beam 5]
       [--shortlist 20] [--threads 1] [--top 8]

The first test sentences are decoded as one batch (``--sentences 64`` with beam 5 is 320 beam
rows at the start, 13 is 65), once to warm up and once under torch's profiler; the table gives
the milliseconds of the operators that took most of it, and the whole search.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.data.store import prepared_sources  # noqa: E402
from s2s.device import thread_scope  # noqa: E402
from s2s.run.checkpoint import load_model, resolve_checkpoint  # noqa: E402
from s2s.translation.translator import load_translator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--sentences", default="64,13")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    path = resolve_checkpoint(args.run_dir, args.checkpoint)
    sources = prepared_sources(load_model(path).config.run_dir, "test")
    print(f"machine: {machine()}; torch {torch.__version__}; {args.threads} thread(s); {path}")
    settings = {"fp32": ("fp32", 0), "int8": ("int8", 0),
                "int8+shortlist": ("int8", args.shortlist)}
    for count in (int(c) for c in args.sentences.split(",")):
        lines = sources[:count]
        for name, (precision, shortlist) in settings.items():
            translator = load_translator(args.run_dir, str(path), device="cpu",
                                         threads=args.threads, overrides=(
                f"decode.beam_size={args.beam}", f"decode.precision={precision}",
                f"decode.shortlist={shortlist}", "decode.batch_tokens=1000000"))
            translator.translate(lines)
            with thread_scope(args.threads), profile(activities=[ProfilerActivity.CPU]) as run:
                started = time.perf_counter()
                translator.translate(lines)
                seconds = time.perf_counter() - started
            events = sorted(run.key_averages(), key=lambda e: -e.self_cpu_time_total)
            parts = ", ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / 1e3:.0f}"
                              for e in events[:args.top])
            print(f"{count * args.beam:>4} rows  {name:<15} {seconds * 1e3:>6.0f} ms  "
                  f"(profiled; ms per operator: {parts})", flush=True)


if __name__ == "__main__":
    run_script(main)
