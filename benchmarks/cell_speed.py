"""What the gating buys: one config trained with each cell (lstm, gru, rnn) for the same
wall-clock budget, then scored on its test split, as a Markdown table.

Usage: python benchmarks/cell_speed.py CONFIG --minutes 15 --work DIR [--set KEY=VALUE ...]

Every cell trains from the same prepared data (prepared once, copied into each run), with
``train.max_minutes`` as the budget and the best checkpoint evaluated with the config's
decoding settings. Training tokens/s is the mean of the training log's records. Run again with
a larger ``--minutes`` and the same ``--work`` to extend the runs: training resumes exactly.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script  # noqa: E402
from s2s.config import Config, load_config  # noqa: E402
from s2s.data.prepare import prepare  # noqa: E402
from s2s.data.store import PreparedData  # noqa: E402
from s2s.evaluation.evaluate import evaluate  # noqa: E402
from s2s.model.seq2seq import Seq2Seq  # noqa: E402
from s2s.report import Reporter  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402
from s2s.training.loop import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--minutes", type=float, required=True, help="training budget per cell")
    parser.add_argument("--work", type=Path, required=True, help="where the runs go")
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    reporter = Reporter()
    rows = [_train_and_score(args, cell, reporter) for cell in args.cells]
    print(f"\n{machine()}; {args.config} {' '.join(args.overrides)}; "
          f"{args.minutes:g} minutes of training per cell\n")
    print("| cell | parameters | steps | train trg tok/s | last valid ppl | best valid BLEU | "
          "test BLEU | test chrF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _train_and_score(args: argparse.Namespace, cell: str, reporter: Reporter) -> list[str]:
    config = load_config(args.config, [*args.overrides, f"model.cell={cell}",
                                       f"train.max_minutes={args.minutes}",
                                       f"run_dir={args.work / cell}"])
    _prepare_once(config, args.work / "prepared", reporter)
    train(config, reporter=reporter)
    records = RunDir(config.run_dir).read_metrics()
    speeds = [r["tokens_per_second"] for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    (result,) = evaluate(config, split="test", checkpoints=("best",), reporter=reporter)
    return [cell, f"{_parameters(config):,}", str(max(r["step"] for r in records)),
            f"{sum(speeds) / len(speeds):,.0f}" if speeds else "-",
            f"{valid[-1]['ppl']:.1f}" if valid else "-",
            f"{max(r['bleu'] for r in valid):.2f}" if valid else "-",
            f"{result.result.scores.bleu:.2f}", f"{result.result.scores.chrf:.2f}"]


def _prepare_once(config: Config, shared: Path, reporter: Reporter) -> None:
    """Prepare the data in ``shared`` the first time, then copy it into each run."""
    run = RunDir(config.run_dir)
    if run.data.exists():
        return
    if not shared.exists():
        prepare(replace(config, run_dir=shared), reporter=reporter)
    shutil.copytree(RunDir(shared).data, run.data)


def _parameters(config: Config) -> int:
    prepared = PreparedData.of(config)
    model = Seq2Seq(config.model, *prepared.vocab_sizes, joint_vocab=prepared.joint)
    return sum(parameter.numel() for parameter in model.parameters())


if __name__ == "__main__":
    run_script(main)
