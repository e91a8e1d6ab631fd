"""The training objective: label-smoothed cross-entropy of teacher-forced predictions.

Training minimises it (s2s.training.learner); validation reports its unsmoothed part, the negative
log-likelihood per target token, and the perplexity from it (s2s.evaluation.validation). It
lives with the model, below both, so that neither of them imports the other's room.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.data.batching import Batch
from s2s.data.vocab import PAD_ID
from s2s.device import autocast


def teacher_forced(model: torch.nn.Module, batch: Batch, precision: str,
                   guidance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (N, V) for the N real target positions of ``batch`` (already on the model's
    device), with the reference's previous token as input at each step, targets (N,), and
    ``guidance`` times the summed ``guided_attention_loss`` (zero when ``guidance`` is 0)."""
    positions = batch.tgt_out != PAD_ID  # (B, T)
    with autocast(batch.tgt_out.device, precision):
        if not guidance:
            logits = model(batch.src, batch.src_lengths, batch.tgt_in, positions)
            return logits, batch.tgt_out[positions], logits.new_zeros((), dtype=torch.float32)
        logits, weights = model(batch.src, batch.src_lengths, batch.tgt_in, positions,
                                with_attention=True)
    penalty = guided_attention_loss(weights.float(), batch.src_lengths, positions)
    return logits, batch.tgt_out[positions], guidance * penalty


def guided_attention_loss(weights: torch.Tensor, src_lengths: torch.Tensor,
                          positions: torch.Tensor, width: float = 0.2) -> torch.Tensor:
    """Attention's mass away from each sentence's diagonal, summed over the real target
    positions: weight w(t, s) costs 1 - exp(-(t/T - s/S)^2 / (2 width^2)) over relative
    positions (centred in their cells). weights (B, T, S), positions (B, T) bool.

    Tachibana et al. (2017)'s guided attention. Without it some starts lock attention onto
    a reversed alignment within the first couple of hundred updates (target position t reads
    source position S - t) and learn at a fraction of the pace (BENCHMARKS.md, "Attention
    that runs backwards"); a fading pull towards the diagonal decides the direction early.
    """
    device = weights.device
    tgt_lengths = positions.sum(1)
    target = (torch.arange(weights.size(1), device=device) + 0.5)[None, :] / tgt_lengths[:, None]
    source = (torch.arange(weights.size(2), device=device) + 0.5)[None, :] / src_lengths[:, None]
    distance = target[:, :, None] - source[:, None, :]  # (B, T, S)
    cost = 1 - torch.exp(-distance.square() / (2 * width * width))
    return (weights * cost).sum(-1)[positions].sum()


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
