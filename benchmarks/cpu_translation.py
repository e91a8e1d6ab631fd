"""Fast translation on a CPU: sentences/s and BLEU of every s2s setting, side by side.

Usage: python benchmarks/cpu_translation.py SYSTEM [SYSTEM ...] [--beams 1,5]
       [--rounds 2] [--shortlist 20] [--shortlist-frequent N] [--threads 1]
       [--settings fp32,bf16,int8,...]

A SYSTEM is a run directory, ``RUN[:CHECKPOINT]`` (best when left out), or an ensemble of
them joined by commas (``RUN_A,RUN_B:last``). Several systems (a teacher and its students,
say) are timed in one sitting: each round runs every system in every setting once, in turn,
so that a noisy machine shows up as a spread rather than as a ratio; the table gives each
one's range over the rounds.

Settings: fp32, bf16 (only where the CPU has bf16 kernels), int8, int8+shortlist,
fp32+shortlist, and the ONNX export read by ``s2s.export.reader`` (onnx, onnx-int8); an
ensemble runs the settings without a shortlist or an export. A shortlist setting may name its
sizes, ``int8+shortlist:20/100`` (per source piece / frequent), to compare shortlists in one
sitting; without them it has ``--shortlist`` and ``--shortlist-frequent``. Sentences/s is
decoding only, in-process (model load excluded), over each system's test split; BLEU is
sacreBLEU against the test references as distributed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
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
from s2s.translation.translator import ModelRef, load_translator  # noqa: E402

Translate = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class System:
    """A model or an ensemble to time, with the test split and scorer of its config."""

    label: str
    members: list[ModelRef]  # the main model first
    test: EvaluationSet
    scorer: Scorer

    @classmethod
    def parse(cls, text: str) -> "System":
        members = [ModelRef.parse(part, "SYSTEM") for part in text.split(",")]
        paths = [resolve_checkpoint(ref.run_dir, ref.checkpoint) for ref in members]
        config = load_model(paths[0]).config
        label = " + ".join(f"{ref.run_dir.name}:{ref.checkpoint}" for ref in members)
        return cls(label, members, EvaluationSet.of_run(config, "test"), Scorer.of(config))


def _s2s(system: System, beam: int, threads: int, precision: str,
         shortlist: tuple[int, int]) -> Translate:
    per_source, frequent = shortlist
    main, *others = system.members
    translator = load_translator(main.run_dir, main.checkpoint, device="cpu", threads=threads,
                                 ensemble=others, overrides=(
        f"decode.beam_size={beam}", f"decode.precision={precision}",
        f"decode.shortlist={per_source}", f"decode.shortlist_frequent={frequent}"))
    return lambda lines: [result.text for result in translator.translate(lines)]


def _onnx(folder: Path, beam: int, threads: int) -> Translate:
    from s2s.export.reader import ExportedTranslator

    reader = ExportedTranslator(folder, threads=threads)
    return lambda lines: [text for text, _ in reader.translate(lines, beam)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="+", metavar="SYSTEM",
                        help="RUN[:CHECKPOINT], or an ensemble RUN_A,RUN_B[:CHECKPOINT]")
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
    systems = [System.parse(text) for text in args.systems]
    settings = [s for s in args.settings.split(",") if s != "bf16" or cpu_supports_bf16()]
    print(f"machine: {machine()}; torch {torch.__version__}; {args.threads} thread(s); "
          f"{len(systems[0].test.sources)} sentences")
    with tempfile.TemporaryDirectory() as exports:
        makers = {}
        for number, system in enumerate(systems):
            folders = _exports(system, Path(exports) / str(number), settings)
            for name in settings:
                if len(system.members) > 1 and (name.startswith("onnx") or "+" in name):
                    continue  # an ensemble has no export and no shortlist
                makers[system.label, name] = _maker(name, args, system, folders)
        tokenized = " BLEU (tok)" if systems[0].scorer.tokenized_bleu else ""
        width = max(len(system.label) for system in systems)
        print(f"{'beam':>4} {'system':<{width}} {'setting':<16} {'sent/s':>15} {'BLEU':>6} "
              f"{'chrF':>6}{tokenized}")
        for beam in (int(b) for b in args.beams.split(",")):
            _compare(beam, systems, makers, args, width)


def _maker(setting: str, args: argparse.Namespace, system: System,
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
    return lambda beam: _s2s(system, beam, args.threads, precision, (per_source, frequent))


def _exports(system: System, directory: Path, settings: list[str]) -> dict[str, Path]:
    """The ONNX folders the settings ask for; none for an ensemble."""
    from s2s.export.graphs import export_run

    if len(system.members) > 1:
        return {}
    [ref] = system.members
    folders = {}
    for name, int8 in (("onnx", False), ("onnx-int8", True)):
        if name in settings:
            folders[name] = export_run(ref.run_dir, ref.checkpoint, output=directory / name,
                                       int8=int8)
    return folders


def _compare(beam: int, systems: list[System],
             makers: dict[tuple[str, str], Callable[[int], Translate]],
             args: argparse.Namespace, width: int) -> None:
    tests = {system.label: system for system in systems}
    translators = {key: maker(beam) for key, maker in makers.items()}
    speeds: dict[tuple[str, str], list[float]] = {key: [] for key in makers}
    outputs: dict[tuple[str, str], list[str]] = {}
    with thread_scope(args.threads):
        for key, translate in translators.items():  # warm-up: first-use kernels and caches
            translate(tests[key[0]].test.sources[:32])
        for _ in range(args.rounds):
            for key, translate in translators.items():
                sources = tests[key[0]].test.sources
                started = time.perf_counter()
                outputs[key] = translate(sources)
                speeds[key].append(len(sources) / (time.perf_counter() - started))
    for key in makers:
        system = tests[key[0]]
        scores = system.scorer.score(outputs[key], system.test.references)
        low, high = min(speeds[key]), max(speeds[key])
        tokenized = "" if scores.tokenized_bleu is None else f" {scores.tokenized_bleu:>10.2f}"
        print(f"{beam:>4} {key[0]:<{width}} {key[1]:<16} {low:>7.1f}–{high:<7.1f} "
              f"{scores.bleu:>6.2f} {scores.chrf:>6.2f}{tokenized}", flush=True)


if __name__ == "__main__":
    run_script(main)
