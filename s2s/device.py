"""Choosing the torch device, the CPU thread count, the precision of training and of decoding
(``decode_dtype``: bf16, fp32 or int8 weights) and the mixed-precision context.

Thread counts are process-wide state in torch: they are set for the duration of a command
(``thread_scope``) and restored afterwards, so a library call never changes what runs next.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import replace
from typing import ContextManager, Iterator

import torch

from s2s.config import Config, DecodeConfig
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


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has bf16 kernels here (AVX-512 BF16 or AMX); without them torch's
    bf16 LSTM fails and bf16 matmuls are emulated, slower than fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_runs_well(device: torch.device) -> bool:
    """Whether ``device`` has bf16 kernels: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_supports_bf16()


def resolve_precision(device: torch.device, precision: str) -> str:
    """``train.precision`` made concrete: ``auto`` is bf16 where the device has bf16 kernels,
    else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_runs_well(device) else "fp32"


def check_precision(device: torch.device, precision: str, key: str) -> None:
    """Refuse a precision the device cannot run, naming the setting ``key`` to change."""
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"{key}: fp16 needs CUDA; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise DeviceError(
            f"{key}: bf16 needs a CPU with AVX-512 BF16 or AMX, and this one "
            f"({torch.backends.cpu.get_cpu_capability()}) has neither; "
            f"use --set {key}=fp32")


def with_resolved_precision(config: Config, device: torch.device) -> Config:
    """``config`` with ``train.precision`` made concrete for ``device``: each command resolves
    it once, here, and everything downstream (the learner, autocast, decoding) takes it as is."""
    precision = resolve_precision(device, config.train.precision)
    return replace(config, train=replace(config.train, precision=precision))


def autocast(device: torch.device, precision: str) -> ContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32 (``precision`` is resolved:
    ``with_resolved_precision``)."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r}: resolve it first (with_resolved_precision)")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, so `taskset` is honoured)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def resolve_threads(threads: int) -> int:
    """The thread count for ``train.threads``: 0 shares this machine's cores among the
    processes started on it (torchrun's LOCAL_WORLD_SIZE), at least one each."""
    if threads:
        return threads
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cores() // max(processes_here, 1))


@contextlib.contextmanager
def thread_scope(threads: int) -> Iterator[int]:
    """Use ``resolve_threads(threads)`` CPU threads inside the block; restore the count after."""
    previous = torch.get_num_threads()
    count = resolve_threads(threads)
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


@functools.cache
def int8_runs() -> bool:
    """Whether this torch multiplies int8 matrices on the CPU (``torch._int_mm``)."""
    try:
        torch._int_mm(torch.ones(1, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


# decoders this wide or wider search faster in int8 (beam 5 over random models with a 2,000-piece
# vocabulary and embeddings half the decoder's width: 1.0x fp32's speed at 64 hidden units,
# 1.15x at 128, 1.4x at 256, 2.3x at 512); below, quantising costs what the matmuls save
INT8_MIN_DECODER_HIDDEN = 128


def int8_pays(decoder_hidden: int) -> bool:
    """Whether ``decode.precision: auto`` decodes a CPU model of this size in int8."""
    return decoder_hidden >= INT8_MIN_DECODER_HIDDEN and int8_runs()


def check_int8(device: torch.device, key: str = "decode.precision") -> None:
    """Refuse int8 where it cannot run, naming the setting ``key`` to change."""
    if device.type != "cpu":
        raise DeviceError(f"{key}: int8 runs on the CPU only; use bf16 or fp32 on {device.type}")
    if not int8_runs():
        raise DeviceError(f"{key}: this torch ({torch.__version__}) has no int8 matrix "
                          "multiplication on the CPU; use fp32 or a newer torch")


def decode_dtype(config: DecodeConfig, train_precision: str, device: torch.device,
                 decoder_hidden: int) -> torch.dtype:
    """The weights' dtype for decoding; ``torch.qint8`` stands for int8 weights
    (``s2s.model.int8``). ``auto`` is int8 on a CPU where torch multiplies int8 and the model
    is large enough to gain from it (``int8_pays``: BENCHMARKS.md, "Fast translation on a
    CPU"); elsewhere bf16 when the model trained in bf16 (``train_precision``, resolved) and
    the device runs bf16, else fp32. An explicit precision the device cannot run is an error.
    """
    precision = config.precision
    if precision == "auto" and device.type == "cpu" and int8_pays(decoder_hidden):
        return torch.qint8
    if precision == "auto":
        precision = "bf16" if train_precision == "bf16" else "fp32"
        if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
            precision = "fp32"
    if precision == "int8":
        return torch.qint8
    check_precision(device, precision, "decode.precision")
    return torch.bfloat16 if precision == "bf16" else torch.float32
