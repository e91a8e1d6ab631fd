"""Page faults of a search step's allocations with and without ``s2s.allocator``'s setting: a
12.8 MB log-softmax made and freed 60 times (BENCHMARKS.md, "The search tail again"). The
counts depend on the kernel and on transparent huge pages, so they are measured here, not
asserted in the tests (``tests/test_allocator.py`` checks the setting through glibc's own
accounts).

    python benchmarks/page_faults.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_STEPS = """
import ctypes, ctypes.util, resource, sys, torch
mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
assert mallopt(-3, 128 * 1024) == 1 and mallopt(-1, 128 * 1024) == 1  # glibc's start values
if sys.argv[1] == "keep":
    from s2s.allocator import keep_freed_memory
    assert keep_freed_memory()
def step():
    logits = torch.ones(400, 8000)
    scores = torch.log_softmax(logits * 2, dim=1) + 1
    return float(scores[0, 0])
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def main() -> None:
    for setting in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", _STEPS, setting], cwd=ROOT, check=True,
                              capture_output=True, text=True)
        print(f"{setting:8} {int(done.stdout.split()[-1]):>10,} page faults in 60 steps")


if __name__ == "__main__":
    main()
