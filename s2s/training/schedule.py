"""What changes with the step: the learning rate (warm-up, then constant, inverse square root,
scaled down when validation stops improving: plateau, its scale kept in the training progress,
or falling linearly to the end of the run's budget) and the fading weight of the
guided-attention loss."""

from __future__ import annotations

import math

from s2s.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, lr_scale: float, planned_steps: int = 0
                  ) -> float:
    """The rate for optimizer step ``step`` (0-based): warm-up, then the schedule.

    ``planned_steps`` is where the linear schedule reaches ``min_lr`` (0: not known yet, the
    rate stays at its peak)."""
    rate = config.lr
    warmup = max(config.warmup_steps, 1)
    if config.lr_schedule == "inverse_sqrt":
        rate *= min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
    elif config.warmup_steps:
        rate *= min(1.0, (step + 1) / warmup)
    if config.lr_schedule == "linear" and planned_steps > config.warmup_steps:
        falling = config.anneal_fraction * (planned_steps - config.warmup_steps)
        left = (planned_steps - step) / falling
        rate = config.min_lr + (rate - config.min_lr) * min(1.0, max(0.0, left))
    return max(rate * lr_scale, config.min_lr) if config.lr_schedule == "plateau" else rate


def planned_steps(config: TrainConfig, *, steps_per_epoch: int, step: int, elapsed: float,
                  seconds_per_step: float) -> int:
    """The optimizer steps the run's limits allow, as far as they are known now: max_steps;
    max_epochs epochs of ``steps_per_epoch``; and, from ``step`` with ``elapsed`` seconds of
    max_minutes spent, as many more as fit at ``seconds_per_step`` (0: not measured yet, so
    that limit is not known). 0 when no limit is known."""
    limits = []
    if config.max_steps:
        limits.append(config.max_steps)
    if config.max_epochs:
        limits.append(config.max_epochs * steps_per_epoch)
    if config.max_minutes and seconds_per_step > 0:
        seconds_left = max(0.0, 60 * config.max_minutes - elapsed)
        limits.append(step + int(seconds_left / seconds_per_step))
    return min(limits, default=0)


def guidance(config: TrainConfig, step: int) -> float:
    """The guided-attention loss's weight at optimizer step ``step`` (0-based): 1 at the
    start, fading linearly to 0 at ``guided_attention_steps`` (0: never)."""
    if not config.guided_attention_steps:
        return 0.0
    return max(0.0, 1.0 - step / config.guided_attention_steps)
