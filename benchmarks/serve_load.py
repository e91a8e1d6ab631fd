"""Load on `s2s serve`: throughput and latency with K concurrent clients, against batch decoding.

Usage: python benchmarks/serve_load.py CONFIG [--clients 1,4,16,64] [--seconds 20]
       [--checkpoint best] [--max-wait-ms 5]

Starts `s2s serve` on 127.0.0.1 (a free port), then for each K runs K client threads for a
bounded time, each sending one test sentence per request, and checks every answer against the
translation of the same line decoded in-process (a mismatch or a lost request is counted).
Beside it, the decode rate of translating all the lines in one batch (what `s2s translate`
does), measured in the same run. The server's resident memory is read before and after.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine, s2s_command  # noqa: E402
from s2s.checkpoint import resolve_checkpoint  # noqa: E402
from s2s.config import load_config  # noqa: E402
from s2s.prepared import prepared_sources  # noqa: E402
from s2s.translate import Translator  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(url: str, lines: list[str], expected: dict[str, str], clients: int,
         seconds: float) -> dict:
    """K threads sending one line per request until the time is up."""
    latencies: list[float] = []
    mismatched = failed = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    counter = itertools.count()

    def client() -> None:
        nonlocal mismatched, failed
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop:
                line = lines[next(counter) % len(lines)]
                started = time.perf_counter()
                try:
                    answer = session.post(f"{url}/translate", json={"text": line})
                    ok = answer.status_code == 200
                    text = answer.json()["translations"] if ok else None
                except httpx.HTTPError:
                    ok, text = False, None
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    failed += not ok
                    mismatched += ok and text != expected[line]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    latencies.sort()

    def percentile(share: float) -> float:
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000

    return {"clients": clients, "requests": len(latencies),
            "sentences_per_second": len(latencies) / wall, "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
            "failed": failed, "mismatched": mismatched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--max-wait-ms", default="5")
    args = parser.parse_args()
    config = load_config(args.config)
    lines = [line for line in prepared_sources(config.run_dir, "test") if line]
    path = resolve_checkpoint(config.run_dir, args.checkpoint)

    translator = Translator.from_checkpoint(path, decode=config.decode, device="cpu",
                                            threads=config.train.threads)
    started = time.perf_counter()
    results = translator.translate(lines)
    batch_rate = len(lines) / (time.perf_counter() - started)
    expected = {line: result.text for line, result in zip(lines, results)}
    del translator

    port = free_port()
    server = subprocess.Popen(
        s2s_command("serve", str(args.config), "--checkpoint", str(path), "--port", str(port),
                    "--device", "cpu", "--max-wait-ms", args.max_wait_ms),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "serving" in server.stdout.readline(), "the server did not start"
        url = f"http://127.0.0.1:{port}"
        print(f"machine: {machine()}; {len(lines)} test lines, beam {config.decode.beam_size}")
        print(f"batch decoding in-process: {batch_rate:.1f} sentences/s")
        memory_before = resident_mb(server.pid)
        print(f"{'clients':>7} {'requests':>8} {'sent/s':>7} {'vs batch':>8} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'p99 ms':>7} {'failed':>6} {'mismatched':>10}")
        for clients in (int(k) for k in args.clients.split(",")):
            result = load(url, lines, expected, clients, args.seconds)
            print(f"{clients:>7} {result['requests']:>8} "
                  f"{result['sentences_per_second']:>7.1f} "
                  f"{result['sentences_per_second'] / batch_rate:>8.0%} "
                  f"{result['p50_ms']:>7.0f} {result['p95_ms']:>7.0f} {result['p99_ms']:>7.0f} "
                  f"{result['failed']:>6} {result['mismatched']:>10}", flush=True)
        print(f"server memory: {memory_before:.0f} MB before the load, "
              f"{resident_mb(server.pid):.0f} MB after")
        server.send_signal(signal.SIGTERM)
        print(f"server exit code after SIGTERM: {server.wait(60)}")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
