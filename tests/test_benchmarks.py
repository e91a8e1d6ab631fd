"""The benchmark scripts report a user's mistake as the s2s command line does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import REPO

pytestmark = pytest.mark.slow  # each test starts processes


@pytest.mark.parametrize("script", ["train_speed", "step_profile", "translate_speed"])
def test_a_missing_config_is_one_error_line(script: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    finished = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"),
                               str(missing)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    assert finished.stderr.splitlines() == [f"error: {missing}: config file not found"]


@pytest.mark.parametrize("script", ["cpu_translation", "search_profile", "attention_direction"])
def test_a_run_without_checkpoints_is_one_error_line(script: str, tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"),
                               str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    [line] = finished.stderr.splitlines()
    assert line.startswith("error: ") and "no best checkpoint" in line


def _race_run(root: Path) -> Path:
    """A run directory with a metrics log and three evaluated checkpoints."""
    import json

    (root / "eval").mkdir(parents=True)
    records = [{"kind": "train", "step": 400, "elapsed": 110.0},
               {"kind": "valid", "step": 400, "elapsed": 120.0},
               {"kind": "train", "step": 800, "elapsed": 240.0}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, checkpoint, step, bleu in [("step-00000400", "/r/step-00000400.pt", 400, 10.0),
                                         ("avg-4min", "/r/averages/avg-4min.pt", 800, 21.5),
                                         ("last", "last", 800, 20.0)]:
        (root / "eval" / f"test.{name}.json").write_text(json.dumps(
            {"checkpoint": checkpoint, "checkpoint_step": step, "bleu": bleu, "chrf": 40.0}))
    return root


def test_race_curve_places_checkpoints_at_their_minutes(tmp_path: Path) -> None:
    from benchmarks.race_curve import peer_points, plotted, s2s_points

    points = s2s_points(_race_run(tmp_path / "run"))
    assert [(p.label, p.minutes, p.updates, p.bleu) for p in points] == [
        ("step-00000400", 2.0, 400, 10.0), ("avg-4min", 4.0, 800, 21.5), ("last", 4.0, 800, 20.0)]
    line, averaged = plotted(points)
    assert [p.label for p in line] == ["step-00000400"]  # `last` is a copy: table only
    assert [p.label for p in averaged] == ["avg-4min"]
    table = tmp_path / "peer.tsv"
    table.write_text("minutes\tupdates\tbleu\tchrf\n9.2\t800\t27.04\t48.24\n")
    [peer] = peer_points(table)
    assert (peer.minutes, peer.updates, peer.bleu, peer.chrf) == (9.2, 800, 27.04, 48.24)


def test_race_curve_refuses_a_table_or_a_result_without_its_fields(tmp_path: Path) -> None:
    from benchmarks.race_curve import peer_points, s2s_points
    from s2s.errors import S2SError

    table = tmp_path / "peer.tsv"
    table.write_text("minutes\tbleu\n9.2\t27.04\n")
    with pytest.raises(S2SError, match="peer.tsv: not a table of minutes, updates, bleu, chrf"):
        peer_points(table)
    run = _race_run(tmp_path / "run")
    (run / "eval" / "test.last.json").write_text('{"checkpoint": "last"}')
    with pytest.raises(S2SError, match=r"test\.last\.json: not an `s2s evaluate` result"):
        s2s_points(run)


def test_race_curve_draws_and_reports_a_run_without_results(tmp_path: Path) -> None:
    script = str(REPO / "benchmarks" / "race_curve.py")
    run, plot = _race_run(tmp_path / "run"), tmp_path / "race.png"
    finished = subprocess.run([sys.executable, script, str(run), "--output", str(plot)],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "| s2s | avg-4min | 4.0 | 800 | 21.50 | 40.00 |" in finished.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    finished = subprocess.run([sys.executable, script, str(empty)], capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 1
    assert finished.stderr.splitlines() == [
        f"error: {empty / 'eval'}: no test results; run `s2s evaluate` first"]
