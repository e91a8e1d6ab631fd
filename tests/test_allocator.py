"""The allocator setting of the s2s process (``s2s.allocator``), checked in child processes:
it is process-wide and cannot be undone, so the test process itself never makes it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a search step's worth of large tensors, allocated and freed again and again; prints the page
# faults of the later steps. Both children start from glibc's initial thresholds (128 KiB),
# fixed, so that the comparison does not depend on where glibc's adaptive ones happen to stand.
_STEPS = """
import ctypes, ctypes.util, resource, sys, torch
mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
assert mallopt(-3, 128 * 1024) == 1 and mallopt(-1, 128 * 1024) == 1
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


def _page_faults(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", _STEPS, setting], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_kept_memory_spares_the_page_faults_of_refilling_freed_memory() -> None:
    default, kept = _page_faults("default"), _page_faults("keep")
    # each step's four 12.8 MB tensors are 12,500 pages, all faulted in again when freed
    # memory goes back to the system; kept, none are
    assert default > 60 * 10_000
    assert kept < 1_000


def test_the_s2s_command_keeps_freed_memory_and_the_library_does_not() -> None:
    check = ("import s2s.cli, sys; from unittest import mock; "
             "p = mock.patch('s2s.allocator.keep_freed_memory'); f = p.start(); "
             "import s2s.translation.translator; assert not f.called; "
             "s2s.cli.app = lambda: None; s2s.cli.main(); assert f.called")
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)
