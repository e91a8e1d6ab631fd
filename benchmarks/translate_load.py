"""`s2s translate` on a long input through a pipe: lines in = lines out, memory stays flat.

Usage: python benchmarks/translate_load.py CONFIG [--lines 200000]

Feeds the run's test sources, repeated up to --lines, into `s2s translate` through a pipe,
samples the process's resident memory every second, and checks the output line count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine, run_script, s2s_command  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.data.store import prepared_sources  # noqa: E402


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--beam", type=int, default=1)
    args = parser.parse_args()
    config = load_config(args.config)
    sources = prepared_sources(config.run_dir, "test")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        s2s_command("translate", "--run", str(config.run_dir), "--beam", str(args.beam)),
        cwd=REPO, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)

    def feed() -> None:
        for index in range(args.lines):
            process.stdin.write((sources[index % len(sources)] + "\n").encode("utf-8"))
        process.stdin.close()

    samples: list[float] = []
    counted = [0]

    def count() -> None:
        for _ in process.stdout:
            counted[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=feed), threading.Thread(target=count)]
    for thread in threads:
        thread.start()
    while process.poll() is None:
        samples.append(_rss_mb(process.pid))
        time.sleep(1.0)
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    quarter = max(len(samples) // 4, 1)
    print(f"machine: {machine()}")
    print(f"lines in {args.lines}, lines out {counted[0]}, {seconds:.1f} s, "
          f"{args.lines / seconds:.0f} lines/s")
    print(f"resident memory MB: peak {max(samples, default=0):.0f}, "
          f"mean of first quarter {sum(samples[:quarter]) / quarter:.0f}, "
          f"mean of last quarter {sum(samples[-quarter:]) / quarter:.0f}")
    assert counted[0] == args.lines, "line count mismatch"


if __name__ == "__main__":
    run_script(main)
