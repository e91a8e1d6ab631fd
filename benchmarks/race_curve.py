"""Test BLEU against training minutes: an s2s run's evaluated checkpoints beside a peer's.

Usage: python benchmarks/race_curve.py RUN_DIR --peer fairseq=fairseq.tsv [--output race.png]

The s2s points are the run's `s2s evaluate` results on the test split (eval/test.*.json), each at
the training minutes its newest step was reached (from metrics.jsonl): step checkpoints as one
line, averaged checkpoints (any evaluated checkpoint whose name starts with "avg") as markers;
`best` and `last`, copies of a step or an average, are in the table only. A peer's points come
from a tab-separated file with a header line and the columns minutes, updates, bleu, chrf: a
peer's own log gives the minutes (benchmarks/peers/ holds fairseq's). Prints a Markdown table of
both and draws them on one plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_script  # noqa: E402
from s2s.errors import S2SError  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


@dataclass(frozen=True)
class Point:
    minutes: float
    updates: int
    bleu: float
    chrf: float
    label: str


def s2s_points(run_dir: Path) -> list[Point]:
    run = RunDir(run_dir)
    minutes_at = {record["step"]: record["elapsed"] / 60 for record in run.read_metrics()
                  if "elapsed" in record and record["kind"] in ("train", "valid")}
    points = []
    for path in sorted((run_dir / "eval").glob("test.*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            name, step = result["checkpoint"], result["checkpoint_step"]
            bleu, chrf = result["bleu"], result["chrf"]
        except (ValueError, KeyError, TypeError) as error:
            raise S2SError(f"{path}: not an `s2s evaluate` result ({error!r})") from None
        label = Path(name).stem if name.endswith(".pt") else name
        if step not in minutes_at:
            raise S2SError(f"{path}: step {step} is not in {run.metrics}; "
                           "evaluate checkpoints of this run only")
        points.append(Point(minutes_at[step], step, bleu, chrf, label))
    if not points:
        raise S2SError(f"{run_dir / 'eval'}: no test results; run `s2s evaluate` first")
    return sorted(points, key=lambda point: (point.minutes, point.label))


def peer_points(path: Path) -> list[Point]:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        return [Point(float(row["minutes"]), int(row["updates"]), float(row["bleu"]),
                      float(row["chrf"]), "") for row in rows]
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise S2SError(f"{path}: not a table of minutes, updates, bleu, chrf ({error})") from None


def plotted(points: list[Point]) -> tuple[list[Point], list[Point]]:
    """The points drawn as a curve (single checkpoints) and as markers (averages); `best` and
    `last` are copies of one of those, so drawing them again would put a spike in the curve."""
    averaged = [point for point in points if point.label.startswith("avg")]
    line = [point for point in points
            if not point.label.startswith("avg") and point.label not in ("best", "last")]
    return line, averaged


def draw(curves: dict[str, list[Point]], output: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.2), layout="constrained")
    for name, points in curves.items():
        line, averaged = plotted(points)
        drawn = axes.plot([p.minutes for p in line], [p.bleu for p in line], marker=".",
                          label=name)
        if averaged:
            axes.plot([p.minutes for p in averaged], [p.bleu for p in averaged], linestyle="",
                      marker="*", markersize=11, color=drawn[0].get_color(),
                      label=f"{name}, averaged checkpoints")
    axes.set_xlabel("training minutes")
    axes.set_ylabel("test BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=TSV",
                        help="a peer's table (repeatable)")
    parser.add_argument("--output", type=Path, help="the plot (PNG); none when left out")
    parser.add_argument("--title", default="Test BLEU against training time")
    args = parser.parse_args()
    curves = {"s2s": s2s_points(args.run_dir)}
    for peer in args.peer:
        name, separator, table = peer.partition("=")
        if not separator:
            raise S2SError(f"--peer {peer}: expected NAME=TSV")
        curves[name] = peer_points(Path(table))
    print("| toolkit | checkpoint | minutes | updates | test BLEU | chrF |")
    print("|---|---|---:|---:|---:|---:|")
    for name, points in curves.items():
        for point in points:
            print(f"| {name} | {point.label or point.updates} | {point.minutes:.1f} | "
                  f"{point.updates:,} | {point.bleu:.2f} | {point.chrf:.2f} |")
    if args.output:
        draw(curves, args.output, args.title)
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    run_script(main)
