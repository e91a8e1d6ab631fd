"""`s2s train` on a large prepared corpus: time to the first step and private memory.

Usage: python benchmarks/train_startup.py CONFIG [--steps 30] [--set key=value ...]

CONFIG's run must be prepared. Trains a fresh model (in a scratch run directory that links the
prepared data, so nothing is copied) for ``--steps`` updates, logging every step, and samples
/proc/PID/status every 50 ms: RssAnon (the process's private memory; pages of memory-mapped
files are shared and reclaimable and do not count), RssFile (mapped file pages resident now)
and VmHWM (peak resident). Reports the seconds from the command's start to its first step's
log record, the peak RssAnon and RssFile, and target tokens/s over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, run_script, s2s_command  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.rundir import RunDir  # noqa: E402


def memory_kb(pid: int) -> dict[str, int]:
    """RssAnon, RssFile and VmHWM of a process, in kB (empty once it has gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    source = RunDir(load_config(args.config, args.overrides).run_dir)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="s2s-startup-") as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        os.symlink(source.data.resolve(), RunDir(run_dir).data)
        command = s2s_command("train", str(args.config), *[
            item for override in [*args.overrides, f"run_dir={run_dir}",
                                  f"train.max_steps={args.steps}", "train.log_every=1",
                                  "train.valid_every=1000000"]
            for item in ("--set", override)])
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        peak: dict[str, int] = {}
        first_step = None
        metrics = run_dir / "metrics.jsonl"
        while process.poll() is None:
            for key, value in memory_kb(process.pid).items():
                peak[key] = max(peak.get(key, 0), value)
            if first_step is None and metrics.exists() and '"train"' in metrics.read_text():
                first_step = time.perf_counter() - started
            time.sleep(0.05)
        if process.returncode != 0:
            raise SystemExit(f"training failed: {process.stderr.read()[-2000:]}")
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        speeds = [r["tokens_per_second"] for r in records if r["kind"] == "train"][1:]
    megabytes = {key: value / 1024 for key, value in peak.items()}
    print(f"first step logged after {first_step:.1f} s; peak RssAnon {megabytes['RssAnon']:,.0f} "
          f"MB, peak RssFile {megabytes['RssFile']:,.0f} MB, VmHWM {megabytes['VmHWM']:,.0f} MB; "
          f"{sum(speeds) / max(len(speeds), 1):,.0f} target tokens/s")


if __name__ == "__main__":
    run_script(main)
