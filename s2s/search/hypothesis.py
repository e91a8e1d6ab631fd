"""What search returns for a sentence: hypotheses, best first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hypothesis:
    """One translation of a sentence as search found it."""

    tokens: list[int]  # without BOS/EOS
    score: float  # log-probability, length-penalised for beam search
    # only when asked for: (len(tokens) + 1, source length + 1) attention weights, the last
    # row the step that chose EOS, the last column the source EOS
    attention: np.ndarray | None = None
