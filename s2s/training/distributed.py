"""Data-parallel training on PyTorch's own engine: torchrun sets the environment, we read it.

With one process every helper here is a no-op, so the trainer has a single code path.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from s2s.errors import DeviceError, SharedStorageError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes started by torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "World":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: torch.device) -> torch.device:
        """Each process on a GPU uses the GPU of its local rank."""
        if not self.distributed or requested.type != "cuda":
            return requested
        if self.local_rank >= torch.cuda.device_count():
            raise DeviceError(f"local rank {self.local_rank} has no GPU: only "
                              f"{torch.cuda.device_count()} CUDA device(s) on this machine")
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        if self.distributed and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    rank=self.rank, world_size=self.size)

    def stop(self) -> None:
        """Leave together: tearing gloo down while a peer is still finishing aborts it."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over all processes."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if it is true on any."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (plain data only)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, by rank, on every process (plain data only)."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def check_shared(self, directory: Path) -> None:
        """Stop every process with one line when one cannot see what process 0 writes into
        ``directory``: on several machines the run directory must be on storage they share,
        or each would resume from, and write, a run of its own."""
        if not self.distributed:
            return
        token = self.share(secrets.token_hex(8) if self.is_main else None)
        marker = directory / f".shared-{token}"
        if self.is_main:
            directory.mkdir(parents=True, exist_ok=True)
            marker.write_text(token, encoding="utf-8")
        self.barrier()
        try:
            seen = marker.read_text(encoding="utf-8") == token
        except OSError:
            seen = False
        blind = self.gather(None if seen else socket.gethostname())
        self.barrier()
        if self.is_main:
            marker.unlink(missing_ok=True)
        missing = [f"process {rank} on {host}" for rank, host in enumerate(blind)
                   if host is not None]
        if missing:
            raise SharedStorageError(
                f"{directory}: {', '.join(missing)} cannot see the run directory that process 0 "
                "writes; on several machines put it on storage they all share (NFS, a cluster "
                "file system) at the same path")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
