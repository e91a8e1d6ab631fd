"""The allocator setting of the s2s process (``s2s.allocator``), checked in child processes:
it is process-wide and cannot be undone, so the test process itself never makes it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# where glibc puts a search step's large tensor (12.8 MB) and what it keeps once the tensor is
# freed, from its own accounts (mallinfo2): whether the allocator setting took effect, read
# directly rather than through page-fault counts, which transparent huge pages and the kernel
# change from machine to machine (benchmarks/page_faults.py counts those)
_ACCOUNTS = """
import ctypes, ctypes.util, sys, torch
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    from s2s.allocator import keep_freed_memory
    assert keep_freed_memory()
logits = torch.ones(400, 8000)
mapped_alone = libc.mallinfo2().hblkhd
del logits
print(mapped_alone, libc.mallinfo2().fordblks)
"""


def _accounts(setting: str) -> tuple[int, int]:
    """Bytes mapped on their own while the tensor lives; free bytes the heap keeps after."""
    done = subprocess.run([sys.executable, "-c", _ACCOUNTS, setting], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    mapped, kept = done.stdout.split()[-2:]
    return int(mapped), int(kept)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or sys.platform != "linux",
                    reason="a glibc setting")
def test_kept_memory_holds_a_freed_step_tensor_for_the_next_step() -> None:
    tensor = 400 * 8000 * 4
    mapped, _ = _accounts("default")
    assert mapped >= tensor  # by default glibc maps it on its own, and unmaps it when freed
    mapped, kept = _accounts("keep")
    assert mapped < tensor  # from the heap instead...
    assert kept >= tensor  # ...which keeps it, free, for the next step


@pytest.mark.slow
def test_the_s2s_command_keeps_freed_memory_and_the_library_does_not() -> None:
    check = ("import s2s.cli, sys; from unittest import mock; "
             "p = mock.patch('s2s.allocator.keep_freed_memory'); f = p.start(); "
             "import s2s.translation.translator; assert not f.called; "
             "s2s.cli.app = lambda: None; s2s.cli.main(); assert f.called")
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)
