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
