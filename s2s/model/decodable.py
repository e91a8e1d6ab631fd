"""The one contract between models and search: what anything search decodes provides.

A model (``Seq2Seq``), its int8 copy (``s2s.model.int8``), a model restricted to a shortlist
(``s2s.model.shortlist``) and an ensemble (``s2s.model.ensemble``) all satisfy ``Decodable``,
so greedy, beam and sampling search are written once, against this, and never ask which one
they were given.

``decode_step`` always returns normalised log-probabilities (``Step``): each row sums to one
over the model's output positions. Those are the target vocabulary's ids, except for a
shortlisted model, whose positions are the rows of its shortlist (``output_ids`` maps them back
to vocabulary ids; the special pieces keep their ids in both).
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Protocol, TypeVar

from torch import Tensor, nn

Rows = TypeVar("Rows", bound="SearchRows")


class SearchRows(Protocol):
    """Per-row search state (encoder outputs per sentence, decoder states per beam): rows can
    be kept or repeated, and two batches joined."""

    def select(self: Rows, index: Tensor) -> Rows: ...

    def joined(self: Rows, other: Rows) -> Rows: ...


class SearchEncoded(SearchRows, Protocol):
    """What a decodable thing computed once per sentence."""

    @property
    def states(self) -> Tensor:
        """(B, S, .) encoder states: search reads only their shape."""
        ...

    @property
    def step_layers(self) -> Any:
        """The joined step layers search asked for (``encode(for_search=True)``)."""
        ...

    def with_step_layers(self: Rows, layers: Any) -> Rows: ...


class Step(NamedTuple):
    """One decoding step's result for N rows."""

    log_probs: Tensor  # (N, V) normalised over the output positions (module docstring)
    state: Any  # the rows' new decoder states (``SearchRows``)
    attention: Tensor  # (N, S) the attention weights over the source that chose them


class Decodable(Protocol):
    """What search decodes."""

    # the vocabulary id of each output position, or None where positions are vocabulary ids
    output_ids: Tensor | None

    def encode(self, src_ids: Tensor, src_lengths: Tensor, *, for_search: bool = False
               ) -> tuple[SearchEncoded, SearchRows]:
        """src_ids (B, S) with EOS, src_lengths (B,) -> per-sentence encodings and the first
        decoder states (one row per sentence)."""
        ...

    def decode_step(self, prev_tokens: Tensor, state: Any, encoded: Any) -> Step:
        """prev_tokens (B G,) -> the next token's log-probabilities; ``encoded`` holds B
        sentences, and G consecutive rows of tokens and states (beams) share each."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
