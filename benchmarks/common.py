"""Helpers shared by the benchmark scripts: timing a command with its peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CommandRun:
    seconds: float
    peak_rss_mb: float
    returncode: int


def run_command(command: list[str], *, stdin=None, stdout=None) -> CommandRun:
    """Run a command; wall time and the child's own peak resident memory (from wait4)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdin=stdin, stdout=stdout,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return CommandRun(seconds, usage.ru_maxrss / 1024, process.returncode)


def s2s_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "s2s", *arguments]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``: a problem s2s reports (a missing config, data not prepared)
    ends in one ``error:`` line and its exit code, as on the s2s command line."""
    from s2s.allocator import keep_freed_memory
    from s2s.errors import S2SError

    keep_freed_memory()  # as the s2s command does: the same allocator for the same speed
    try:
        main()
    except S2SError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
