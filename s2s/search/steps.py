"""What every search step needs: restricted next-token log-probabilities, a fast top-k, and
batch sizes that oneDNN has kernels for."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from s2s.config import DecodeConfig
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID


def max_output_lengths(src_lengths: Tensor, config: DecodeConfig) -> Tensor:
    """Most tokens (EOS excluded) each sentence may get: a * source length + b."""
    source_tokens = (src_lengths - 1).clamp(min=0).double()  # minus the source EOS
    return (config.max_len_a * source_tokens + config.max_len_b).floor().long()


def rows_to_keep(done: Tensor, *, passengers: bool) -> Tensor | None:
    """Which batch rows the next step keeps, or None to keep them all.

    Rows still running are kept; finished ones stay on as passengers until the running rows
    fit a smaller bucket size, and then fill it up (``passengers=False``: none stay). Where
    every new batch size costs oneDNN new matmul kernels (``keeps_passengers``), a few bucket
    sizes cost less than one size for every count of running sentences.
    """
    running = (~done).nonzero().squeeze(1)
    size = bucket_size(len(running)) if passengers else len(running)
    if size >= len(done):
        return None
    finished = done.nonzero().squeeze(1)[:size - len(running)]
    return torch.cat([running, finished])


def keeps_passengers(model: nn.Module) -> bool:
    """Whether search keeps finished sentences on as passengers (``rows_to_keep``) for ``model``:
    for bf16 weights on a CPU, whose oneDNN matmuls build kernels for every new batch size
    (about 1.5 ms per weight matrix and size, BENCHMARKS.md "Decoding speed"). fp32 (MKL) and
    int8 (``torch._int_mm``) matmuls pay little or nothing for a new size, and there the
    passengers' rows cost more than they save: 3.5% of fp32's and 2-5% of int8's beam-search
    speed on a Zen 4 (BENCHMARKS.md, "The search tail again")."""
    parameter = next(model.parameters(), None)
    return (parameter is not None and parameter.dtype == torch.bfloat16
            and parameter.device.type == "cpu")


def bucket_size(count: int) -> int:
    """``count`` rounded up to one of four sizes per power of two (at most 25% more)."""
    if count <= 8:
        return count
    step = 1 << (count.bit_length() - 3)
    return -(-count // step) * step


def restrict(log_probs: Tensor, history: Tensor, at_limit: Tensor, config: DecodeConfig
             ) -> Tensor:
    """In place on a step's log-probabilities (N, V), and returned: the search's restrictions.
    EOS is forced at the length limit (at its probability under the model: the distribution
    was normalised before), repeated n-grams are blocked, PAD and BOS are never chosen.

    A bf16 model's log-probabilities stay in bf16 (rounded from its fp32 log-softmax, an
    error of at most 0.4% of each value, smaller than the bf16 logits' own); hypothesis scores
    add them up in fp32.
    """
    if config.no_repeat_ngram:
        _block_repeats(log_probs, history, config.no_repeat_ngram)
    if bool(at_limit.any()):
        eos_scores = log_probs[:, EOS_ID].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[:, EOS_ID] = torch.where(at_limit, eos_scores, log_probs[:, EOS_ID])
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    return log_probs


def row_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best entries of each row of ``scores`` (N, V), best first, as fp32 values and
    their columns (N, k): ``beam_topk`` with one beam of score 0 per row."""
    values, columns, _ = beam_topk(scores, scores.new_zeros((len(scores), 1),
                                                            dtype=torch.float32), k)
    return values, columns


def beam_topk(log_probs: Tensor, beam_scores: Tensor, k: int, chunk: int = 64
              ) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best continuations of each sentence: beam score plus next-token log-probability
    over all its beams and tokens, best first, as scores, tokens and origin rows (n, k).

    ``log_probs`` (n K, V) hold K consecutive beam rows per sentence, ``beam_scores`` (n, K)
    their scores. In two passes, each cheaper than a top-k over whole rows: a chunk of 64
    tokens ranks by its best entry (its maximum plus its beam's score), the k best entries lie
    in the k best chunks, and only those k * chunk entries are searched. Per sentence rather
    than per beam, the two selections run over n rows instead of n K.
    """
    rows, width = log_probs.shape
    count, beam = beam_scores.shape
    whole = width // chunk * chunk  # a short last chunk is read on its own, not padded (a copy)
    short = whole < width  # then the candidates' columns past the vocabulary are read as -inf
    chunk_max = log_probs[:, :whole].view(rows, whole // chunk, chunk).amax(dim=2)
    if short:
        chunk_max = torch.cat([chunk_max, log_probs[:, whole:].amax(dim=1, keepdim=True)], dim=1)
    chunks = chunk_max.size(1)  # (n K, chunks)
    chunk_best = (beam_scores.view(-1, 1) + chunk_max.float()).view(count, beam * chunks)
    best_chunks = chunk_best.topk(min(k, beam * chunks), dim=1).indices  # (n, c)
    origins = best_chunks // chunks + torch.arange(count, device=log_probs.device)[:, None] * beam
    offsets = torch.arange(chunk, device=log_probs.device)
    columns = ((best_chunks % chunks)[:, :, None] * chunk + offsets)  # (n, c, chunk)
    candidates = log_probs[origins[:, :, None],
                           columns.clamp(max=width - 1) if short else columns].float()
    if short:
        candidates.masked_fill_(columns >= width, float("-inf"))
    candidates += beam_scores.view(-1)[origins][:, :, None]
    scores, positions = candidates.view(count, -1).topk(min(k, candidates[0].numel()), dim=1)
    tokens = columns.view(count, -1).gather(1, positions).clamp_(max=width - 1)
    return scores, tokens, origins.gather(1, positions // chunk)


def _block_repeats(log_probs: Tensor, history: Tensor, size: int) -> None:
    """Forbid any token that would repeat an n-gram of ``size`` already in the history."""
    length = history.size(1)
    if length < size:
        return
    if size == 1:
        log_probs.scatter_(1, history, float("-inf"))
        return
    windows = history.unfold(1, size, 1)  # (N, length - size + 1, size)
    last = history[:, length - size + 1:]  # (N, size - 1)
    matches = (windows[:, :, :-1] == last[:, None]).all(dim=-1)  # (N, windows)
    banned = torch.zeros_like(log_probs)
    banned.scatter_add_(1, windows[:, :, -1], matches.to(log_probs.dtype))
    log_probs.masked_fill_(banned > 0, float("-inf"))


def padded(tensor: Tensor, dim: int, size: int, fill: float | int | bool, *,
           left: bool = False) -> Tensor:
    """``tensor`` padded with ``fill`` to ``size`` along ``dim`` (at the end, or the start)."""
    dim = dim % tensor.dim()
    missing = size - tensor.size(dim)
    if missing <= 0:
        return tensor
    widths = [0] * (2 * (tensor.dim() - dim))  # pad() lists the last dim first, ``dim`` last
    widths[-2 if left else -1] = missing
    return nn.functional.pad(tensor, widths, value=fill)


def joined(mine: Tensor, theirs: Tensor, *, end_dims: tuple[int, ...] = (),
           end_fill: float | int | bool = 0, time_dim: int | None = None,
           time_fill: float | int = 0) -> Tensor:
    """Two batches' rows of one tensor, one after the other: each of ``end_dims`` (a source,
    constraint phrases) padded at its end to the longer of the two, and a right-aligned
    ``time_dim`` padded at its start."""
    for dim in end_dims:
        size = max(mine.size(dim), theirs.size(dim))
        mine, theirs = (padded(t, dim, size, end_fill) for t in (mine, theirs))
    if time_dim is not None:
        size = max(mine.size(time_dim), theirs.size(time_dim))
        mine, theirs = (padded(t, time_dim, size, time_fill, left=True) for t in (mine, theirs))
    return torch.cat([mine, theirs])


def strip(row: list[int]) -> list[int]:
    """Tokens up to (not including) the first EOS or padding."""
    for index, token in enumerate(row):
        if token in (EOS_ID, PAD_ID):
            return row[:index]
    return row


def attention_of(attention: Tensor | None, index: int, length: int, src_lengths: Tensor
                 ) -> np.ndarray | None:
    """Sentence ``index``'s (length + 1, its source length) weights out of a padded tensor."""
    if attention is None:
        return None
    return attention[index, :length + 1, :int(src_lengths[index])].cpu().numpy()
