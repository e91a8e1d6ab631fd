"""What a search is asked for, besides the model and the sentences: one object that every
search function takes, so a new option is one field here rather than a flag through every
layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from s2s.config import DecodeConfig
from s2s.model.shortlist import Shortlist


@dataclass(frozen=True)
class SearchOptions:
    """The decode settings and where and how to search."""

    config: DecodeConfig  # beam size, n-best, length limits and penalty, sampling, batch size
    device: torch.device
    with_attention: bool = False  # hypotheses carry their attention weights (``Hypothesis``)
    # (V,) bool: the target pieces that may follow a whole word (after a prefix that ends one,
    # and after a constraint, ``s2s.search.constraints``); None for languages without spaces
    word_starts: Tensor | None = None
    # decode each batch over its sentences' candidates only (``s2s.model.shortlist``)
    shortlist: Shortlist | None = None
