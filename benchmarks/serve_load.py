"""Load on `s2s serve`: throughput and latency with K concurrent clients, against batch decoding.

Usage: python benchmarks/serve_load.py CONFIG [--clients 1,4,16,64] [--seconds 20] [--warmup 10]
       [--checkpoint best] [--max-wait-ms 5] [--server-cpus 0 --client-cpus 1] [--set K=V]

Starts `s2s serve` on 127.0.0.1 (a free port), then for each K runs K client threads for a
bounded time, each sending one test sentence per request, and checks every answer against the
translation of the same line decoded in-process (a mismatch or a lost request is counted).
Beside it, the decode rate of translating all the lines in one batch (what `s2s translate`
does), measured in the same run. The server's resident memory is read before, every 30 s
during, and after the load.

With ``--server-cpus`` and ``--client-cpus`` the server (and the batch decoding it is compared
with) runs on one set of cores with as many threads, and the clients on another, as when the
load comes from other machines; without them all share every core.
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

from benchmarks.common import REPO, machine, run_script, s2s_command  # noqa: E402
from s2s.config import Config, load_config  # noqa: E402
from s2s.data.store import prepared_sources  # noqa: E402
from s2s.translation.translator import load_translator  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_list(text: str) -> set[int]:
    """taskset's list syntax: 0, 0-1, 0,2."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


class MemorySampler:
    """Reads a process's resident memory every ``every`` seconds on a thread, until stopped."""

    def __init__(self, pid: int, every: float) -> None:
        self.samples: list[float] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, every), daemon=True)
        self._thread.start()

    def _run(self, pid: int, every: float) -> None:
        while not self._stopped.wait(every):
            self.samples.append(resident_mb(pid))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def load(url: str, lines: list[str], expected: dict[str, str], clients: int,
         seconds: float, warmup: float) -> dict:
    """K threads sending one line per request for ``warmup + seconds``.

    Throughput and latency count the requests answered in the last ``seconds`` only: the
    sustained rate, without the start (the first requests arrive together) or the end (the
    requests in flight drain with ever fewer beside them).
    """
    answered: list[tuple[float, float]] = []  # (when, latency)
    mismatched = failed = 0
    lock = threading.Lock()
    began = time.monotonic()
    stop = began + warmup + seconds
    counter = itertools.count()

    def client() -> None:
        nonlocal mismatched, failed
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop:
                line = lines[next(counter) % len(lines)]
                started = time.monotonic()
                try:
                    answer = session.post(f"{url}/translate", json={"text": line})
                    ok = answer.status_code == 200
                    text = answer.json()["translations"] if ok else None
                except httpx.HTTPError:
                    ok, text = False, None
                now = time.monotonic()
                with lock:
                    answered.append((now, now - started))
                    failed += not ok
                    mismatched += ok and text != expected[line]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(latency for when, latency in answered
                       if began + warmup <= when < stop)

    def percentile(share: float) -> float:
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000

    return {"clients": clients, "requests": len(answered), "counted": len(latencies),
            "sentences_per_second": len(latencies) / seconds, "p50_ms": percentile(0.50),
            "p95_ms": percentile(0.95), "p99_ms": percentile(0.99),
            "failed": failed, "mismatched": mismatched}


def batches_run(url: str) -> int:
    """How many batches the server has translated (its /info)."""
    return httpx.get(f"{url}/info").json()["batching"]["batches_run"]


def batch_decoding(config: Config, checkpoint: str, lines: list[str], threads: int
                   ) -> tuple[float, dict[str, str]]:
    """All lines translated in one call, as `s2s translate` does: sentences/s, translations."""
    translator = load_translator(config.run_dir, checkpoint, decode=config.decode,
                                 threads=threads, device="cpu")
    started = time.perf_counter()
    results = translator.translate(lines)
    rate = len(lines) / (time.perf_counter() - started)
    return rate, {line: result.text for line, result in zip(lines, results)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the server and the batch decoding alike, e.g. "
                             "decode.shortlist=20")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the rate is measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before the measurement starts")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--max-wait-ms", default="5")
    parser.add_argument("--server-cpus", help="cores of the server, e.g. 0 or 0-1")
    parser.add_argument("--client-cpus", help="cores of the load generator, e.g. 1")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    config = load_config(args.config, args.set)
    lines = [line for line in prepared_sources(config.run_dir, "test") if line]
    pinning, threads = [], config.train.threads
    if args.server_cpus:
        cpus = _cpu_list(args.server_cpus)
        os.sched_setaffinity(0, cpus)  # the batch rate is measured where the server runs
        pinning, threads = ["taskset", "-c", args.server_cpus], len(cpus)

    batch_rate, expected = batch_decoding(config, args.checkpoint, lines, threads)
    if args.client_cpus:
        os.sched_setaffinity(0, _cpu_list(args.client_cpus))

    port = free_port()
    server = subprocess.Popen(
        pinning + s2s_command("serve", str(args.config.resolve()), "--checkpoint", args.checkpoint,
                              "--port", str(port), "--device", "cpu", "--max-wait-ms",
                              args.max_wait_ms, "--set", f"train.threads={threads}",
                              *(item for setting in args.set for item in ("--set", setting))),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "serving" in server.stdout.readline(), "the server did not start"
        url = f"http://127.0.0.1:{port}"
        print(f"machine: {machine()}; {len(lines)} test lines, beam {config.decode.beam_size}")
        print(f"batch decoding in-process: {batch_rate:.1f} sentences/s")
        memory_before = resident_mb(server.pid)
        sampler = MemorySampler(server.pid, every=30.0)
        print(f"{'clients':>7} {'requests':>8} {'sent/s':>7} {'vs batch':>8} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'p99 ms':>7} {'failed':>6} {'mismatched':>10} {'per batch':>9}")
        for clients in (int(k) for k in args.clients.split(",")):
            batches_before = batches_run(url)
            result = load(url, lines, expected, clients, args.seconds, args.warmup)
            per_batch = result["requests"] / max(1, batches_run(url) - batches_before)
            print(f"{clients:>7} {result['requests']:>8} "
                  f"{result['sentences_per_second']:>7.1f} "
                  f"{result['sentences_per_second'] / batch_rate:>8.0%} "
                  f"{result['p50_ms']:>7.0f} {result['p95_ms']:>7.0f} {result['p99_ms']:>7.0f} "
                  f"{result['failed']:>6} {result['mismatched']:>10} {per_batch:>9.1f}",
                  flush=True)
        sampler.stop()
        print(f"server memory: {memory_before:.0f} MB before the load, "
              f"{resident_mb(server.pid):.0f} MB after; every 30 s during it: "
              + ", ".join(f"{mb:.0f}" for mb in sampler.samples))
        server.send_signal(signal.SIGTERM)
        print(f"server exit code after SIGTERM: {server.wait(60)}")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    run_script(main)
