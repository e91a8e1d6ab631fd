"""Decoding speed of `s2s translate` as a user runs it, with BLEU to show speed at equal quality.

Usage: python benchmarks/translate_speed.py CONFIG [--checkpoint best] [--beams 1,5]
       [--set decode.precision=bf16 ...] [--alignment hard]

For each beam size: the whole command (`s2s translate --input test --beam K`, model load
included) with wall time and peak memory, and, in-process, model load time and pure decoding
time reported separately. BLEU is that of the in-process translation, scored by
``s2s.evaluation.validation.validate`` against the test references as distributed, as
`s2s evaluate` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_command, run_script, s2s_command  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.data.store import text_path  # noqa: E402
from s2s.evaluation.validation import EvaluationSet, validate  # noqa: E402
from s2s.run.checkpoint import resolve_checkpoint  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402
from s2s.translation.translator import load_translator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="decoding setting for both the command and the in-process run")
    parser.add_argument("--alignment", default="none", choices=("none", "hard", "soft"),
                        help="also compute word alignments (the cost of carrying attention)")
    args = parser.parse_args()
    config = load_config(args.config)
    source = text_path(RunDir(config.run_dir).data, "test", "src")
    test_set = EvaluationSet.of_run(config, "test")
    path = resolve_checkpoint(config.run_dir, args.checkpoint)  # `avg` made once, for both
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'beam':>4} {'cmd sent/s':>10} {'cmd s':>6} {'peak MB':>8} {'load s':>6} "
          f"{'decode sent/s':>13} {'BLEU':>6}")
    results = []
    for beam in (int(b) for b in args.beams.split(",")):
        with tempfile.NamedTemporaryFile(suffix=".hyp") as output:
            command = run_command(s2s_command(
                "translate", "--run", str(config.run_dir), "--checkpoint", str(path),
                "--input", str(source), "--output", output.name, "--beam", str(beam),
                "--alignment", args.alignment,
                *(option for setting in args.set for option in ("--set", setting))))
            hypotheses = Path(output.name).read_text(encoding="utf-8").splitlines()
        assert command.returncode == 0 and len(hypotheses) == len(test_set.sources)
        started = time.perf_counter()
        translator = load_translator(config.run_dir, str(path),
                                     overrides=(f"decode.beam_size={beam}", *args.set),
                                     device="cpu")
        loaded = time.perf_counter()
        validation = validate(translator, test_set, with_attention=args.alignment != "none")
        lines, bleu = len(test_set.sources), validation.scores.bleu
        result = {"beam": beam, "sentences": lines,
                  "command_sentences_per_second": lines / command.seconds,
                  "command_seconds": command.seconds, "peak_rss_mb": command.peak_rss_mb,
                  "load_seconds": loaded - started,
                  "decode_sentences_per_second": lines / validation.translate_seconds,
                  "bleu": bleu}
        results.append(result)
        print(f"{beam:>4} {result['command_sentences_per_second']:>10.1f} "
              f"{command.seconds:>6.2f} {command.peak_rss_mb:>8.0f} "
              f"{result['load_seconds']:>6.2f} {result['decode_sentences_per_second']:>13.1f} "
              f"{bleu:>6.2f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    run_script(main)
