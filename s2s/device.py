"""Choosing the torch device and the mixed-precision context from the config."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from s2s.errors import DeviceError


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} was requested but CUDA is not available on this "
                              "machine (torch.cuda.is_available() is False); use cpu or auto")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} was requested but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    return device


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("precision fp16 needs CUDA; use bf16 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0 means one per available core)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads or available or 1)
