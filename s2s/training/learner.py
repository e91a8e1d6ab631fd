"""One training process's model, optimizer and loss scaler, and its public ``step``.

``Learner.step(batches, lr)`` is one optimizer update: forward, loss, backward, clipping and
the optimizer step, over one or more batches (gradient accumulation), together with the other
processes under DDP. It reads no files: the training loop (s2s.training.loop) and the
benchmarks feed it batches.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from s2s.config import Config
from s2s.data.batching import Batch
from s2s.model.loss import smoothed_loss, teacher_forced
from s2s.model.seq2seq import Seq2Seq
from s2s.training.distributed import World


@dataclass(frozen=True)
class StepResult:
    """Summed over the whole global batch (every process's share of it)."""

    loss: float  # label-smoothed cross-entropy
    nll: float  # negative log-likelihood
    target_tokens: int


class Learner:
    """The model (wrapped in DDP when several processes train), optimizer and loss scaler.

    ``config.train.precision`` must be resolved (``s2s.device.with_resolved_precision``).
    The model is built with ``torch.manual_seed(config.train.seed)``: every process starts
    from the same weights, and a run from the same seed starts from the same model.
    """

    def __init__(self, config: Config, src_vocab_size: int, tgt_vocab_size: int, joint: bool,
                 *, device: torch.device, world: World = World()) -> None:
        if config.train.precision == "auto":
            raise ValueError("train.precision 'auto': resolve it first (with_resolved_precision)")
        self.train_config = config.train
        self.device, self.world = device, world
        torch.manual_seed(config.train.seed)
        self.model = Seq2Seq(config.model, src_vocab_size, tgt_vocab_size, joint).to(device)
        self.model.train()
        self.seed_dropout(step=0)
        self.trained_model: torch.nn.Module = self.model
        if world.distributed:
            self.trained_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        kind = torch.optim.AdamW if self.train_config.optimizer == "adamw" else torch.optim.Adam
        # the fused kernel updates all parameters in one pass (CPU and CUDA)
        self.optimizer = kind(self.model.parameters(), lr=self.train_config.lr,
                              weight_decay=self.train_config.weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=self.train_config.precision == "fp16")

    def step(self, batches: list[Batch], lr: float, guidance: float = 0.0) -> StepResult:
        """One optimizer step at learning rate ``lr`` over this process's ``batches``, with
        the guided-attention loss at weight ``guidance`` (``s2s.training.schedule``).

        The loss is normalised by the global token count, so N processes compute exactly the
        gradient one process would on the same global batch.
        """
        local_tokens = sum(batch.target_tokens for batch in batches)
        (tokens,) = self.world.sum([float(local_tokens)], self.device)
        scale = self.world.size / tokens  # DDP averages gradients over processes
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = total_nll = 0.0
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            # under DDP, only the last batch's backward exchanges gradients
            sync = contextlib.nullcontext() if last or not self.world.distributed else (
                self.trained_model.no_sync())  # type: ignore[operator]
            with sync:
                logits, targets, guide = teacher_forced(
                    self.trained_model, batch.to(self.device), self.train_config.precision,
                    guidance)
                loss, nll = smoothed_loss(logits, targets, self.train_config.label_smoothing)
                self.scaler.scale((loss + guide) * scale).backward()
            total_loss += float(loss.detach())
            total_nll += float(nll)
        self.scaler.unscale_(self.optimizer)
        if self.train_config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_config.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        total_loss, total_nll = self.world.sum([total_loss, total_nll], self.device)
        return StepResult(total_loss, total_nll, int(tokens))

    def seed_dropout(self, step: int) -> None:
        """Processes other than rank 0 draw their own dropout masks (rank 0 keeps its stream)."""
        if self.world.rank > 0:
            torch.manual_seed(self.train_config.seed + 1000 * self.world.rank + step)

    def state(self) -> dict[str, Any]:
        """Weights, optimizer and scaler state, as a checkpoint keeps them."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state(self, model: dict[str, Any], optimizer: dict[str, Any],
                   scaler: dict[str, Any]) -> None:
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)
        self.scaler.load_state_dict(scaler)

    def close(self) -> None:
        """Drop the DDP wrapper, so that leaving the process group afterwards is safe.

        A DDP wrapper still alive (its reducer is in reference cycles) keeps gloo's worker
        threads until the interpreter shuts down, where destroying them aborts the process.
        """
        self.trained_model = self.model
        gc.collect()
