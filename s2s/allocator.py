"""The process's memory allocator: whether freed memory goes back to the system.

A process-wide setting that cannot be undone, so only the processes' entry points (the ``s2s``
command, the benchmark scripts) make it, never a library call. No torch import: the command
line stays fast to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST_MMAP_THRESHOLD = 32 << 20  # glibc's upper bound on 64-bit systems
_KEPT_AT_TOP = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocation instead of handing it back
    to the system; whether it applied (False where the C library is not glibc).

    Search allocates and frees tensors of up to tens of megabytes at every step. By default
    glibc maps the largest on their own and returns the top of its heap once a few tens of
    megabytes are free there, so every page of the next step's tensors is faulted in and zeroed
    again: int8 beam search over Multi30k's test set took 2.4 million page faults at 120
    sentences/s, and 0.2 million at 163 with this setting (BENCHMARKS.md, "The search tail again").
    Memory the process has used stays with it until it exits.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return (mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, _KEPT_AT_TOP) == 1)
