"""The vocabulary shortlist (``s2s.model.shortlist``): counted from the training pairs, exact
when it holds every piece, per sentence whatever the batch, its normaliser counting what a list
leaves out, refused for other vocabularies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import DecodeConfig, load_config
from s2s.data.batching import pad
from s2s.data.shortlist_table import ShortlistTable, build_table
from s2s.data.store import EncodedSide, EncodedSplit
from s2s.data.vocab import BOS_ID, EOS_ID
from s2s.errors import CheckpointError
from s2s.model.int8 import quantized_for_cpu
from s2s.model.seq2seq import Seq2Seq
from s2s.model.shortlist import OutsideMass, Shortlist
from s2s.search.corpus import decode_corpus
from s2s.search.options import SearchOptions
from tests.tasks import copy_model, random_sentences

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> Seq2Seq:
    return copy_model("lstm", False, steps=100)


def _copy_table(vocab: int = 30) -> ShortlistTable:
    """Each piece's own id first: the copy task's shortlist."""
    ranked = np.full((vocab, 100), -1, dtype=np.int32)
    ranked[:, 0] = np.arange(vocab)
    return ShortlistTable(ranked, np.arange(vocab, dtype=np.int32)[::-1].copy(), "copy")


@pytest.mark.parametrize("beam,nbest", [(1, 1), (4, 2)])
def test_a_shortlist_of_every_piece_is_exactly_the_full_search(model: Seq2Seq,
                                                               beam: int, nbest: int) -> None:
    sentences = random_sentences(30, seed=5)
    config = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=200)
    everything = Shortlist(_copy_table(), per_source=1, frequent=30)
    with torch.no_grad():
        full = decode_corpus(model, sentences, SearchOptions(config, CPU))
        listed = decode_corpus(model, sentences, SearchOptions(config, CPU, shortlist=everything))
    for ours, theirs in zip(listed, full):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-5)


@pytest.mark.parametrize("int8", [False, True])
def test_each_sentence_decodes_over_its_own_candidates_whatever_its_batch(
        model: Seq2Seq, int8: bool) -> None:
    """With its own pieces and the 3 most frequent as candidates, a sentence's outputs use
    only those, alone or in a batch whose union holds many more."""
    model = quantized_for_cpu(model) if int8 else model
    sentences = random_sentences(24, seed=6)
    shortlist = Shortlist(_copy_table(), per_source=1, frequent=3)
    config = DecodeConfig(beam_size=3, nbest=3)
    with torch.no_grad():
        together = decode_corpus(model, sentences, SearchOptions(config, CPU, shortlist=shortlist))
        alone = [decode_corpus(model, [s], SearchOptions(config, CPU, shortlist=shortlist))[0]
                 for s in sentences[:6]]
    for sentence, hypotheses in zip(sentences, together):
        allowed = set(sentence) | {27, 28, 29}
        assert all(set(h.tokens) <= allowed for h in hypotheses)
    for ours, theirs in zip(alone, together):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=1e-3)


@pytest.mark.parametrize("int8", [False, True])
def test_what_a_list_leaves_out_counts_in_its_normaliser(model: Seq2Seq, int8: bool) -> None:
    """The copy task's 23 pieces outside the frequent list make 23 groups of one piece, where
    the estimate of what a list leaves out is exact: a sentence's log-probabilities over its
    few candidates are the whole vocabulary's, not renormalised over the list."""
    model = quantized_for_cpu(model) if int8 else model
    sentences = random_sentences(8, seed=7)
    listed = Shortlist(_copy_table(), per_source=1, frequent=3).for_batch(model, sentences)
    src, lengths = pad([np.array(s) for s in sentences], suffix=EOS_ID)
    with torch.no_grad():
        full, state = model.encode(src, lengths, for_search=True)
        whole = model.decode_step(torch.full((8,), BOS_ID), state, full).log_probs
        encoded, state = listed.encode(src, lengths, for_search=True)
        ours = listed.decode_step(torch.full((8,), BOS_ID), state, encoded)[0]
    for row, sentence in enumerate(sentences):
        own = listed.candidates[tuple(sentence)]
        positions = torch.from_numpy(np.searchsorted(listed.union, own))
        assert len(own) < 30 and ours[row, positions].exp().sum() < 0.999
        assert ours[row, positions] == pytest.approx(whole[row, own], abs=1e-4)


def test_the_groups_of_what_is_left_out_are_the_same_every_time() -> None:
    """k-means from a fixed start, which leaves the process's random state as it was."""
    output = torch.nn.Linear(8, 400)
    before = torch.random.get_rng_state()
    first = OutsideMass(output, np.arange(10))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(first.group_of, OutsideMass(output, np.arange(10)).group_of)
    assert (first.group_of[:10] == -1).all() and (first.group_of[10:] >= 0).all()
    assert int(first.sizes.sum()) == 390 and len(first.sizes) == 256


def test_the_table_ranks_what_co_occurs_and_keeps_frequency() -> None:
    sources = [[5, 6], [5, 7], [5, 6, 8], [6], [7, 8]]
    targets = [[9, 10], [9, 11], [9, 10, 12], [10], [11, 12]]
    pairs = EncodedSplit(EncodedSide.from_lists(sources, 13),
                         EncodedSide.from_lists(targets, 13))
    table = build_table(pairs, (13, 13), "test")
    assert table.ranked[5, 0] == 9 and table.ranked[6, 0] == 10
    assert table.ranked[7, 0] == 11
    assert list(table.frequent[:4]) == [9, 10, 11, 12]  # by pairs holding them, ties by id
    candidates = table.candidates([5], per_source=1, frequent=0)
    assert list(candidates) == [0, 1, 2, 3, 9]


def _table_one_pair_at_a_time(pairs: EncodedSplit, vocab_sizes: tuple[int, int]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The plain twin of build_table's counting: co-occurrences, pair by pair."""
    source_counts, target_counts = np.zeros(vocab_sizes[0]), np.zeros(vocab_sizes[1])
    together: dict[tuple[int, int], int] = {}
    for index in range(len(pairs)):
        sources, targets = set(pairs.src.sentence(index)), set(pairs.tgt.sentence(index))
        for source in sources:
            source_counts[source] += 1
            for target in targets:
                together[source, target] = together.get((source, target), 0) + 1
        for target in targets:
            target_counts[target] += 1
    keys = sorted(together)
    return (np.array([s * vocab_sizes[1] + t for s, t in keys]),
            np.array([together[key] for key in keys]), source_counts, target_counts)


def test_the_vectorised_count_equals_counting_pair_by_pair() -> None:
    from s2s.data.shortlist_table import _co_occurrences, _counted, _distinct_per_sentence
    random = np.random.default_rng(3)
    sources = [list(random.integers(4, 40, random.integers(0, 9))) for _ in range(300)]
    targets = [list(random.integers(4, 30, random.integers(1, 12))) for _ in range(300)]
    pairs = EncodedSplit(EncodedSide.from_lists(sources, 40), EncodedSide.from_lists(targets, 30))
    keys, counts, source_counts, target_counts = _table_one_pair_at_a_time(pairs, (40, 30))
    source_of, source_ids = _distinct_per_sentence(pairs.src, 0, 300, 40)
    target_of, target_ids = _distinct_per_sentence(pairs.tgt, 0, 300, 30)
    found_keys, found_counts = _counted(_co_occurrences(source_of, source_ids, target_of,
                                                        target_ids, 300, 30))
    assert np.array_equal(found_keys, keys) and np.array_equal(found_counts, counts)
    assert np.array_equal(np.bincount(source_ids, minlength=40), source_counts)
    assert np.array_equal(np.bincount(target_ids, minlength=30), target_counts)


def test_a_table_of_other_vocabularies_is_refused(tmp_path: Path) -> None:
    table = _copy_table()
    table.save(tmp_path / "shortlist.npz")
    assert ShortlistTable.load(tmp_path / "shortlist.npz", "copy").fingerprint == "copy"
    with pytest.raises(CheckpointError, match="built for other vocabularies"):
        ShortlistTable.load(tmp_path / "shortlist.npz", "another")


def test_translate_with_a_shortlist_from_the_command_line(trained_run: Path) -> None:
    """The command builds the run's table and translates with it: what the library's
    shortlisted translator gives, line for line."""
    from s2s.translation.translator import load_translator
    config = load_config(trained_run)
    lines = ["The dog sees a cat.", "", "A man.", "Two women are walking down the street."]
    result = CliRunner().invoke(app, ["translate", str(trained_run), "--set",
                                      "decode.shortlist=10"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert (config.run_dir / "data" / "shortlist.npz").exists()
    listed = load_translator(config.run_dir, decode=DecodeConfig(
        **{**config.decode.__dict__, "shortlist": 10}), device="cpu")
    expected = [r.text for r in listed.translate(lines)]
    assert result.stdout.split("\n")[:-1] == expected
    assert expected[1] == "" and all(expected[i] for i in (0, 2, 3))
    result = CliRunner().invoke(app, ["translate", str(trained_run), "--set",
                                      "decode.shortlist=101"], input="A man.\n")
    assert result.exit_code == 2 and "decode.shortlist" in result.output
