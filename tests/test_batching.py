"""Token batching: the cut by runs of equal length against the sentence-by-sentence loop."""

import numpy as np
import pytest

from s2s.data.batching import token_batches


def reference_batches(lengths: np.ndarray, batch_tokens: int, order: np.ndarray
                      ) -> list[np.ndarray]:
    """The greedy cut, one sentence at a time: a batch grows while longest x count fits."""
    batches, start, longest = [], 0, 0
    for position in range(len(order)):
        longest = max(longest, int(lengths[order[position]]))
        if position > start and longest * (position - start + 1) > batch_tokens:
            batches.append(order[start:position])
            start, longest = position, int(lengths[order[position]])
    if start < len(order):
        batches.append(order[start:])
    return batches


@pytest.mark.parametrize("batch_tokens", [1, 7, 40, 300, 5000])
@pytest.mark.parametrize("spread", [(1, 3), (1, 60), (20, 21), (50, 400), (65_000, 66_000)])
def test_batches_equal_the_sentence_by_sentence_cut(batch_tokens: int,
                                                    spread: tuple[int, int]) -> None:
    lengths = np.random.default_rng(batch_tokens + spread[1]).integers(*spread, size=2000)
    order = np.argsort(lengths, kind="stable")
    batches = token_batches(lengths, batch_tokens)
    expected = reference_batches(lengths, batch_tokens, order)
    assert len(batches) == len(expected)
    for batch, want in zip(batches, expected):
        np.testing.assert_array_equal(batch, want)
    for batch in batches:  # the budget holds unless one sentence alone exceeds it
        assert len(batch) == 1 or lengths[batch].max() * len(batch) <= batch_tokens


def test_shuffled_batches_hold_every_sentence_once_within_the_budget() -> None:
    lengths = np.random.default_rng(5).integers(2, 90, size=3001)
    first = token_batches(lengths, 600, seed=3, epoch=2)
    again = token_batches(lengths, 600, seed=3, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(again, first, strict=True))
    assert sorted(np.concatenate(first).tolist()) == list(range(3001))
    assert all(lengths[batch].max() * len(batch) <= 600 for batch in first)
    other = token_batches(lengths, 600, seed=3, epoch=3)
    assert [len(b) for b in other] != [len(b) for b in first]


def test_no_sentences_make_no_batches() -> None:
    assert token_batches(np.zeros(0, dtype=np.int64), 100) == []
