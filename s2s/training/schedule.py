"""What changes with the step: the learning rate (warm-up, then constant, inverse square root,
or scaled down when validation stops improving: plateau, its scale kept in the training
progress) and the fading weight of the guided-attention loss."""

from __future__ import annotations

import math

from s2s.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, lr_scale: float) -> float:
    """The rate for optimizer step ``step`` (0-based): warm-up, then the schedule."""
    rate = config.lr
    warmup = max(config.warmup_steps, 1)
    if config.lr_schedule == "inverse_sqrt":
        rate *= min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
    elif config.warmup_steps:
        rate *= min(1.0, (step + 1) / warmup)
    return max(rate * lr_scale, config.min_lr) if config.lr_schedule == "plateau" else rate


def guidance(config: TrainConfig, step: int) -> float:
    """The guided-attention loss's weight at optimizer step ``step`` (0-based): 1 at the
    start, fading linearly to 0 at ``guided_attention_steps`` (0: never)."""
    if not config.guided_attention_steps:
        return 0.0
    return max(0.0, 1.0 - step / config.guided_attention_steps)
