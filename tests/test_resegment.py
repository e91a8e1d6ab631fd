"""Subword regularisation: training sentences segmented anew, reproducibly, training split only."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

import s2s.training.loop
from s2s.config import Config, config_from_dict
from s2s.data.batching import collate, token_batches, training_lengths
from s2s.data.resegment import (
    BpeDropout,
    Resegmentation,
    ResegmentedBatches,
    UnigramSampler,
    resegmented,
    sampler_for,
)
from s2s.data.store import load_split, spm_paths
from s2s.errors import ConfigError
from s2s.run.checkpoint import load_checkpoint
from s2s.rundir import RunDir
from s2s.training.loop import train
from tests.conftest import config_dict, prepare_run

UNIGRAM = {"sampling_alpha": 0.1}


def _prepared(corpus: Path, run_dir: Path, vocab: dict, **sections: dict) -> Config:
    config = config_from_dict(config_dict(corpus, run_dir, vocab=vocab, **sections))
    prepare_run(config)
    return config


def _steps(data_dir: Path, count: int, epoch: int = 1) -> list[list[np.ndarray]]:
    split = load_split(data_dir, "train")
    batches = token_batches(training_lengths(split), 300, seed=3, epoch=epoch)
    return [[batch] for batch in batches[:count]]


@pytest.mark.parametrize("vocab", [UNIGRAM, {"model_type": "bpe", "sampling_alpha": 0.1}],
                         ids=["unigram", "bpe-dropout"])
def test_batches_hold_the_same_text_in_new_pieces_every_epoch(demo_corpus: Path, tmp_path: Path,
                                                              vocab: dict) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", vocab)
    data_dir = RunDir(config.run_dir).data
    split = load_split(data_dir, "train")
    processors = [spm.SentencePieceProcessor(model_file=str(path)) for path in spm_paths(data_dir)]
    settings = Resegmentation(0.1, 16, ())
    steps = _steps(data_dir, 6)
    with ResegmentedBatches(data_dir, settings, seed=7) as batches:
        first = [step[0] for step in batches.steps(steps, epoch=1)]
        again = [step[0] for step in batches.steps(steps, epoch=1)]
        later = [step[0] for step in batches.steps(steps, epoch=2)]
    best = [collate(split, step[0]) for step in steps]
    for drawn, same, other, plain in zip(first, again, later, best):
        assert torch.equal(drawn.src, same.src) and torch.equal(drawn.tgt_out, same.tgt_out)
        # no draw outgrows the batch's longest prepared sentence: the padded size stays
        assert drawn.src.shape[1] <= plain.src.shape[1]
        assert drawn.tgt_out.shape[1] <= plain.tgt_out.shape[1]
        assert torch.equal(drawn.indices, plain.indices) if isinstance(
            drawn.indices, torch.Tensor) else np.array_equal(drawn.indices, plain.indices)
        for name, side in (("src", 0), ("tgt_out", 1)):
            for row_drawn, row_plain in zip(getattr(drawn, name), getattr(plain, name)):
                assert (processors[side].decode(_ids(row_drawn))
                        == processors[side].decode(_ids(row_plain)))
    changed = [not torch.equal(a.src, b.src) for a, b in zip(first, best)]
    assert sum(changed) >= len(first) - 2  # most batches have sentences in other pieces
    assert any(not torch.equal(a.src, b.src) for a, b in zip(first, later))  # per epoch anew
    rows = [(list(_ids(a)), list(_ids(b))) for drawn, plain in zip(first, best)
            for a, b in zip(drawn.src, plain.src)]
    share = sum(a != b for a, b in rows) / len(rows)
    assert 0.1 < share < 0.9, share  # many sentences in new pieces, not every one


def _ids(row: torch.Tensor) -> list[int]:
    return [int(token) for token in row if int(token) > 3]  # no padding, BOS, EOS


def test_a_tag_stays_whole_and_a_too_long_draw_keeps_the_best_pieces(demo_corpus: Path,
                                                                     tmp_path: Path) -> None:
    config = _prepared(demo_corpus, tmp_path / "run", UNIGRAM)
    data_dir = RunDir(config.run_dir).data
    split = load_split(data_dir, "train")
    processor = spm.SentencePieceProcessor(model_file=str(spm_paths(data_dir)[0]))
    sampler = sampler_for(processor, Resegmentation(0.05, 64, ()))
    assert isinstance(sampler, UnigramSampler)
    rng = np.random.default_rng(1)
    sentence = split.src.sentence(0)
    tag = int(sentence[0])  # a piece that stands in for a tag here
    drawn = [resegmented(split.src, 0, processor, sampler, rng, 128, {tag}) for _ in range(20)]
    assert all(int(ids[0]) == tag for ids in drawn)
    assert any(not np.array_equal(ids, sentence) for ids in drawn)
    kept = [resegmented(split.src, 0, processor, sampler, rng, len(sentence), set())
            for _ in range(20)]
    assert all(len(ids) <= len(sentence) for ids in kept)  # longer draws gave way to the best


def test_unigram_draws_follow_the_segmentation_likelihoods(demo_corpus: Path,
                                                           tmp_path: Path) -> None:
    """Over 4,000 draws among the 4 best segmentations, each is drawn as often as
    exp(alpha x score) says, within 4.5 standard errors (false alarms about 1 in 150,000 per
    segmentation; seeded, so it cannot flake)."""
    config = _prepared(demo_corpus, tmp_path / "run", UNIGRAM)
    processor = spm.SentencePieceProcessor(
        model_file=str(spm_paths(RunDir(config.run_dir).data)[0]))
    text = "The young woman watches a small horse with the red car."
    candidates = processor.nbest_encode(text, nbest_size=4, return_type="proto").nbests
    scores = 0.3 * np.array([candidate.score for candidate in candidates])
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    sampler = UnigramSampler(processor, 0.3, 4)
    rng = np.random.default_rng(5)
    ids = [tuple(piece.id for piece in candidate.pieces) for candidate in candidates]
    counts = Counter(ids.index(tuple(sampler(text, rng))) for _ in range(4000))
    for index, chance in enumerate(expected):
        error = np.sqrt(chance * (1 - chance) / 4000)
        assert abs(counts[index] / 4000 - chance) < 4.5 * error, (index, counts, expected)


def _bpe_model(corpus: Path, directory: Path) -> spm.SentencePieceProcessor:
    from s2s.config import VocabConfig
    from s2s.data.vocab import train_sentencepiece
    lines = (corpus / "train.de").read_text(encoding="utf-8").splitlines()
    path = directory / "bpe.model"
    train_sentencepiece(lines, path, 600, VocabConfig(model_type="bpe",
                                                      character_coverage=0.995), "nfkc")
    return spm.SentencePieceProcessor(model_file=str(path))


def test_bpe_without_dropout_is_sentencepieces_own_segmentation(demo_corpus: Path,
                                                                tmp_path: Path) -> None:
    """The reference: sentencepiece's BPE encoder. Rare characters fall back to bytes."""
    processor = _bpe_model(demo_corpus, tmp_path)
    sampler = BpeDropout(processor, 0.0)
    lines = (demo_corpus / "valid.de").read_text(encoding="utf-8").splitlines()
    lines += ["Größe  😀 naïve ﬁsh — «Zitat»", "ÄÖÜ äöü ß", "x", "Ein Hund, ein Hund. Hund!"]
    rng = np.random.default_rng(0)
    for line in lines:
        assert sampler(line, rng) == processor.encode(line, out_type=int), line


def test_bpe_dropout_splits_more_as_the_rate_grows(demo_corpus: Path, tmp_path: Path) -> None:
    processor = _bpe_model(demo_corpus, tmp_path)
    lines = (demo_corpus / "valid.de").read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(0)
    pieces = {rate: sum(len(BpeDropout(processor, rate)(line, rng)) for line in lines)
              for rate in (0.0, 0.1, 0.3, 1.0)}
    characters = sum(len(processor.normalize(line)) for line in lines)
    assert pieces[0.0] < pieces[0.1] < pieces[0.3] < pieces[1.0]
    assert pieces[1.0] >= characters  # every merge skipped: characters (or their bytes)
    for line in lines[:20]:  # the text never changes, only its pieces
        assert processor.decode(BpeDropout(processor, 0.3)(line, rng)) == processor.decode(
            processor.encode(line, out_type=int))


@pytest.mark.slow
def test_regularised_training_is_deterministic_and_resumes_exactly(demo_corpus: Path,
                                                                    tmp_path: Path) -> None:
    sections = {"train": {"max_steps": 16, "valid_every": 8, "batch_tokens": 300}}
    straight = _prepared(demo_corpus, tmp_path / "straight", UNIGRAM, **sections)
    train(straight)
    resumed = _prepared(demo_corpus, tmp_path / "resumed", UNIGRAM, **sections)
    assert train(resumed, should_stop=lambda p: p.step == 7).step == 7
    train(resumed)
    plain = _prepared(demo_corpus, tmp_path / "plain", {}, **sections)
    train(plain)
    weights = [load_checkpoint(RunDir(config.run_dir).checkpoint("last"))["model"]
               for config in (straight, resumed, plain)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert not torch.equal(weights[0]["decoder.output.bias"], weights[2]["decoder.output.bias"])


@pytest.mark.slow
def test_training_uses_the_worker_only_with_sampling(demo_corpus: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    original = s2s.training.loop.ResegmentedBatches

    def counting(*args, **kwargs):
        started.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(s2s.training.loop, "ResegmentedBatches", counting)
    for name, vocab in (("plain", {}), ("sampled", UNIGRAM)):
        train(_prepared(demo_corpus, tmp_path / name, vocab,
                        train={"max_steps": 2, "valid_every": 2}))
    assert len(started) == 1 and started[0][1].alpha == 0.1


def test_sampling_settings_leave_the_prepared_data_as_it_is(demo_corpus: Path,
                                                            tmp_path: Path) -> None:
    from s2s.data.store import data_config_hash
    plain = config_from_dict(config_dict(demo_corpus, tmp_path / "run"))
    sampled = config_from_dict(config_dict(demo_corpus, tmp_path / "run", vocab=UNIGRAM))
    assert data_config_hash(plain) == data_config_hash(sampled)


def test_one_segmentation_to_draw_from_is_a_config_error(demo_corpus: Path,
                                                         tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vocab\.sampling_nbest: must be at least 2, got 1"):
        config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                     vocab={"sampling_alpha": 0.1, "sampling_nbest": 1}))
    with pytest.raises(ConfigError, match=r"vocab\.sampling_alpha: must be at most 1"):
        config_from_dict(config_dict(demo_corpus, tmp_path / "run",
                                     vocab={"sampling_alpha": 1.5}))
