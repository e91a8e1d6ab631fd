"""Fast translation on a CPU: sentences/s and BLEU of every s2s setting, side by side.

Usage: python benchmarks/cpu_translation.py RUN_DIR [--checkpoint best] [--beams 1,5]
       [--rounds 2] [--shortlist 20] [--shortlist-frequent N] [--threads 1]
       [--settings fp32,bf16,int8,...]

Settings: fp32, bf16 (only where the CPU has bf16 kernels), int8, int8+shortlist,
fp32+shortlist, and the ONNX export read by ``s2s.export.reader`` (onnx, onnx-int8). A
shortlist setting may name its sizes, ``int8+shortlist:20/100`` (per source piece / frequent),
to compare shortlists in one sitting; without them it has ``--shortlist`` and
``--shortlist-frequent``. Each
round runs every setting once, in turn, so that a noisy machine shows up as a spread rather
than as a ratio; the table gives each setting's range over the rounds. Sentences/s is decoding
only, in-process (model load excluded), over the run's test split; BLEU is sacreBLEU against
the test references as distributed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import DecodeConfig  # noqa: E402
from s2s.device import cpu_supports_bf16, thread_scope  # noqa: E402
from s2s.evaluation.scoring import Scorer  # noqa: E402
from s2s.evaluation.validation import EvaluationSet  # noqa: E402
from s2s.run.checkpoint import load_model, resolve_checkpoint  # noqa: E402
from s2s.translation.translator import load_translator  # noqa: E402

Translate = Callable[[list[str]], list[str]]


def _s2s(run_dir: Path, checkpoint: str, beam: int, threads: int, precision: str,
         shortlist: tuple[int, int]) -> Translate:
    per_source, frequent = shortlist
    translator = load_translator(run_dir, checkpoint, device="cpu", threads=threads, overrides=(
        f"decode.beam_size={beam}", f"decode.precision={precision}",
        f"decode.shortlist={per_source}", f"decode.shortlist_frequent={frequent}"))
    return lambda lines: [result.text for result in translator.translate(lines)]


def _onnx(folder: Path, beam: int, threads: int) -> Translate:
    from s2s.export.reader import ExportedTranslator

    reader = ExportedTranslator(folder, threads=threads)
    return lambda lines: [text for text, _ in reader.translate(lines, beam)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shortlist", type=int, default=20, help="decode.shortlist to use")
    parser.add_argument("--shortlist-frequent", type=int,
                        default=DecodeConfig().shortlist_frequent,
                        help="decode.shortlist_frequent to use")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default="fp32,bf16,int8,int8+shortlist,fp32+shortlist,"
                                               "onnx,onnx-int8")
    args = parser.parse_args()
    path = resolve_checkpoint(args.run_dir, args.checkpoint)
    config = load_model(path).config
    test = EvaluationSet.of_run(config, "test")
    scorer = Scorer.of(config)
    settings = [s for s in args.settings.split(",") if s != "bf16" or cpu_supports_bf16()]
    print(f"machine: {machine()}; torch {torch.__version__}; {args.threads} thread(s); "
          f"{len(test.sources)} sentences; {path}")
    with tempfile.TemporaryDirectory() as exports:
        folders = _exports(args.run_dir, str(path), Path(exports), settings)
        makers = {name: _maker(name, args, str(path), folders) for name in settings}
        tokenized = " BLEU (tok)" if scorer.tokenized_bleu else ""
        print(f"{'beam':>4} {'setting':<16} {'sent/s':>15} {'BLEU':>6} {'chrF':>6}{tokenized}")
        for beam in (int(b) for b in args.beams.split(",")):
            _compare(beam, settings, makers, test, scorer, args)


def _maker(setting: str, args: argparse.Namespace, checkpoint: str,
           folders: dict[str, Path]) -> Callable[[int], Translate]:
    """What translates with ``setting`` (module docstring) at a given beam size."""
    if setting in folders:
        return lambda beam: _onnx(folders[setting], beam, args.threads)
    precision, _, rest = setting.partition("+")
    kind, _, given = rest.partition(":")
    parts = given.split("/") if given else []
    if (precision not in ("fp32", "bf16", "int8") or kind not in ("", "shortlist")
            or (given and (not kind or len(parts) != 2 or not all(map(str.isdigit, parts))))):
        raise SystemExit(f"--settings: unknown setting {setting!r} (for example int8, "
                         "int8+shortlist or int8+shortlist:20/1000)")
    sizes = [int(part) for part in parts]
    if kind and not sizes:
        sizes = [args.shortlist, args.shortlist_frequent]
    per_source, frequent = sizes or (0, 0)
    return lambda beam: _s2s(args.run_dir, checkpoint, beam, args.threads, precision,
                             (per_source, frequent))


def _exports(run_dir: Path, checkpoint: str, directory: Path, settings: list[str]
             ) -> dict[str, Path]:
    from s2s.export.graphs import export_run

    folders = {}
    for name, int8 in (("onnx", False), ("onnx-int8", True)):
        if name in settings:
            folders[name] = export_run(run_dir, checkpoint, output=directory / name, int8=int8)
    return folders


def _compare(beam: int, settings: list[str], makers: dict[str, Callable[[int], Translate]],
             test: EvaluationSet, scorer: Scorer, args: argparse.Namespace) -> None:
    translators = {name: makers[name](beam) for name in settings}
    speeds: dict[str, list[float]] = {name: [] for name in settings}
    outputs: dict[str, list[str]] = {}
    with thread_scope(args.threads):
        for name in settings:  # warm-up: first-use kernels and caches
            translators[name](test.sources[:32])
        for _ in range(args.rounds):
            for name in settings:
                started = time.perf_counter()
                outputs[name] = translators[name](test.sources)
                speeds[name].append(len(test.sources) / (time.perf_counter() - started))
    for name in settings:
        scores = scorer.score(outputs[name], test.references)
        low, high = min(speeds[name]), max(speeds[name])
        tokenized = "" if scores.tokenized_bleu is None else f" {scores.tokenized_bleu:>10.2f}"
        print(f"{beam:>4} {name:<16} {low:>7.1f}–{high:<7.1f} {scores.bleu:>6.2f} "
              f"{scores.chrf:>6.2f}{tokenized}", flush=True)


if __name__ == "__main__":
    run_script(main)
