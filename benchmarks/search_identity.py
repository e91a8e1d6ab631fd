"""Every decoding mode's translations of a run's test split, written to one JSON file, so that
two versions of s2s can be compared byte for byte (a refactor of search must change none),
and the beam-5 speed of fp32 and int8 timed in the same process.

    PYTHONPATH=OLD_CHECKOUT python benchmarks/search_identity.py RUN_DIR --output old.json
    PYTHONPATH=. python benchmarks/search_identity.py RUN_DIR --output new.json
    python benchmarks/search_identity.py --compare old.json new.json

Modes: greedy, beam 5, 3-best of beam 5, 2 samples (seed 3), an ensemble of best and last,
a prefix per line, a constraint per line, int8 beam 5, int8 with a shortlist (20 per source
piece). Texts must match exactly; scores to 1e-4 (a score is a sum of fp32 log-probabilities).
Run the versions alternately, nothing else on the machine, to compare their speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODES: dict[str, list[str]] = {
    "greedy": ["decode.beam_size=1", "decode.precision=fp32"],
    "beam5": ["decode.beam_size=5", "decode.precision=fp32"],
    "nbest3": ["decode.beam_size=5", "decode.nbest=3", "decode.precision=fp32"],
    "sampling": ["decode.beam_size=1", "decode.sampling=true", "decode.nbest=2",
                 "decode.seed=3", "decode.precision=fp32"],
    "ensemble": ["decode.beam_size=5", "decode.precision=fp32"],
    "prefix": ["decode.beam_size=5", "decode.precision=fp32"],
    "constraints": ["decode.beam_size=5", "decode.precision=fp32"],
    "int8": ["decode.beam_size=5", "decode.precision=int8"],
    "int8+shortlist": ["decode.beam_size=5", "decode.precision=int8", "decode.shortlist=20"],
}


def translations(run_dir: Path, lines: list[str], mode: str) -> list[dict]:
    from s2s.translation.terms import LineTerms
    from s2s.translation.translator import ModelRef, load_translator

    ensemble = [ModelRef(run_dir, "last")] if mode == "ensemble" else []
    translator = load_translator(run_dir, "best", device="cpu", threads=1,
                                 overrides=MODES[mode], ensemble=ensemble)
    terms = None
    if mode in ("prefix", "constraints"):
        # a line's reference-free terms: its own first beam-5 words, so every line has some
        plain = load_translator(run_dir, "best", device="cpu", threads=1,
                                overrides=MODES["beam5"]).translate(lines)
        words = [result.text.split() for result in plain]
        terms = [LineTerms(prefix=" ".join(w[:2]) + " ") if mode == "prefix" and len(w) > 2
                 else LineTerms(constraints=(w[-1],)) if mode == "constraints" and w
                 else LineTerms() for w in words]
    results = translator.translate(lines, terms=terms)
    return [{"texts": result.texts, "scores": result.scores} for result in results]


def speed(run_dir: Path, lines: list[str], precision: str) -> float:
    from s2s.translation.translator import load_translator

    translator = load_translator(run_dir, "best", device="cpu", threads=1, overrides=[
        "decode.beam_size=5", f"decode.precision={precision}"])
    translator.translate(lines[:20])  # warm up
    started = time.perf_counter()
    translator.translate(lines)
    return len(lines) / (time.perf_counter() - started)


def compare(old_path: Path, new_path: Path) -> int:
    old, new = (json.loads(path.read_text()) for path in (old_path, new_path))
    failures = 0
    for mode in MODES:
        pairs = list(zip(old["modes"][mode], new["modes"][mode]))
        texts = sum(a["texts"] != b["texts"] for a, b in pairs)
        scores = sum(any(abs(x - y) > 1e-4 for x, y in zip(a["scores"], b["scores"]))
                     for a, b in pairs)
        failures += texts + scores
        print(f"{mode:15} {len(pairs):5} lines: {texts} with other texts, {scores} with other "
              "scores")
    for precision in ("fp32", "int8"):
        print(f"beam 5 {precision}: {old['speed'][precision]:.1f} -> "
              f"{new['speed'][precision]:.1f} sentences/s")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--compare", type=Path, nargs=2)
    args = parser.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    from s2s.data.store import read_manifest, text_path
    from s2s.rundir import RunDir

    data = RunDir(args.run_dir).data
    assert read_manifest(data) is not None, f"{data}: not prepared"
    lines = text_path(data, "test", "src").read_text(encoding="utf-8").splitlines()[:args.lines]
    import s2s
    result = {"s2s": os.path.dirname(s2s.__file__), "lines": len(lines),
              "modes": {mode: translations(args.run_dir, lines, mode) for mode in MODES},
              "speed": {precision: speed(args.run_dir, lines, precision)
                        for precision in ("fp32", "int8")}}
    args.output.write_text(json.dumps(result, ensure_ascii=False))
    print(f"{result['s2s']}: beam 5 fp32 {result['speed']['fp32']:.1f}, int8 "
          f"{result['speed']['int8']:.1f} sentences/s")


if __name__ == "__main__":
    main()
