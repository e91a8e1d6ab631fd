"""The training objective: label-smoothed cross-entropy of teacher-forced predictions.

Training minimises it (s2s.training.learner); validation reports its unsmoothed part, the negative
log-likelihood per target token, and the perplexity from it (s2s.evaluation.validation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.data.batching import Batch
from s2s.data.vocab import PAD_ID
from s2s.device import autocast


def teacher_forced(model: torch.nn.Module, batch: Batch, precision: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, V) for the N real target positions of ``batch`` (already on the model's
    device), with the reference's previous token as input at each step, and targets (N,)."""
    positions = batch.tgt_out != PAD_ID  # (B, T)
    with autocast(batch.tgt_out.device, precision):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, positions)
    return logits, batch.tgt_out[positions]


def smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL; logits (N, V), targets (N,)."""
    logits = logits.float()
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")
    if not smoothing:
        return loss, loss.detach()
    with torch.no_grad():  # the NLL is only reported: no second graph through the softmax
        nll = torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None]).squeeze(1)
    return loss, nll.sum()
