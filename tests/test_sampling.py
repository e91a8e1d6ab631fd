"""Sampling search: exact where it must be (greedy at top-k 1, the top-p set), right in
distribution (a chi-square test), and the same for a line whatever it is batched with."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import DecodeConfig, ModelConfig
from s2s.model.seq2seq import Seq2Seq
from s2s.search.corpus import decode_corpus
from s2s.search.options import SearchOptions
from s2s.search.sampling import draw, line_keys, restricted_log_probs, uniform
from tests.tasks import fit

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> Seq2Seq:
    """Half-trained to copy: its distributions are spread enough that samples differ."""
    torch.manual_seed(0)
    config = ModelConfig(embed_size=16, encoder_layers=1, encoder_hidden=16, decoder_layers=1,
                         decoder_hidden=32, dropout=0.0, embed_dropout=0.0)
    generator = torch.Generator().manual_seed(1)

    def batches():
        lengths = torch.randint(1, 10, (32,), generator=generator)
        sentences = [torch.randint(4, 30, (int(n),), generator=generator).tolist()
                     for n in lengths]
        return sentences, sentences

    with torch.random.fork_rng():
        return fit(Seq2Seq(config, 30, 30), batches, 60)


def _sentences(count: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 30, (int(n),), generator=generator).tolist()
            for n in torch.randint(1, 10, (count,), generator=generator)]


@pytest.mark.parametrize("setting", [{"top_k": 1}, {"temperature": 1e-6}])
def test_top_k_one_or_a_cold_temperature_is_greedy(model: Seq2Seq, setting: dict) -> None:
    sentences = _sentences(30, 3)
    greedy = decode_corpus(model, sentences, SearchOptions(DecodeConfig(beam_size=1), CPU))
    sampled = decode_corpus(model, sentences, SearchOptions(DecodeConfig(
        beam_size=1, sampling=True, nbest=2, **setting), CPU))
    for mine, theirs in zip(sampled, greedy):
        assert [h.tokens for h in mine] == [theirs[0].tokens] * 2
        assert mine[0].score == pytest.approx(theirs[0].score, abs=1e-4)


def test_a_lines_samples_depend_on_the_seed_and_the_line_alone(model: Seq2Seq) -> None:
    sentences = _sentences(40, 4)
    config = DecodeConfig(beam_size=1, sampling=True, nbest=3, batch_tokens=60)
    together = decode_corpus(model, sentences, SearchOptions(config, CPU))
    alone = [decode_corpus(model, [sentence], SearchOptions(config, CPU))[0]
             for sentence in sentences[:10]]
    shuffled = decode_corpus(model, sentences[::-1], SearchOptions(config, CPU))[::-1]
    other_seed = decode_corpus(model, sentences, SearchOptions(replace(config, seed=2), CPU))
    for mine, its_own, reversed_order in zip(together, alone, shuffled):
        assert [h.tokens for h in mine] == [h.tokens for h in its_own]
        assert [h.tokens for h in mine] == [h.tokens for h in reversed_order]
    assert sum(len({tuple(h.tokens) for h in of_line}) > 1 for of_line in together) >= 20
    assert sum(a[0].tokens != b[0].tokens for a, b in zip(together, other_seed)) >= 10
    for of_line in together:  # best-scoring sample first
        assert [h.score for h in of_line] == sorted((h.score for h in of_line), reverse=True)


@pytest.mark.parametrize("setting", [{}, {"temperature": 0.7}, {"top_k": 3},
                                     {"top_p": 0.8}, {"temperature": 1.5, "top_p": 0.9}])
def test_sample_frequencies_match_the_distribution(setting: dict) -> None:
    """40,000 draws from one distribution over 6 tokens (one key each) against the expected
    counts: Pearson's chi-square at a false-alarm rate of 1 in 1,000 (the draws are seeded,
    so the test cannot flake; a wrong sampler fails it by thousands)."""
    config = DecodeConfig(beam_size=1, sampling=True, **setting)
    probabilities = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04])
    log_probs = probabilities.log().expand(40_000, -1).contiguous()
    keys = line_keys([[n] for n in range(40_000)], 1, seed=7)
    counts = torch.bincount(draw(log_probs, keys, 0, config), minlength=6).double()
    expected = restricted_log_probs(log_probs[:1], config)[0].exp().double() * 40_000
    kept = expected > 0
    assert counts[~kept].sum() == 0  # never a token outside the top-k / nucleus
    chi_square = float(((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum())
    # the 0.999 quantile of chi-square with (kept - 1) degrees of freedom
    critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}[int(kept.sum()) - 1]
    assert chi_square < critical


def _one_pass_draw(log_probs: torch.Tensor, keys: torch.Tensor, step: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The naive draw: the whole row's cumulative distribution in fp64, searched once; the
    tokens, the cumulative distributions and the points drawn."""
    running = log_probs.double().exp().cumsum(dim=1)
    point = uniform(keys, step) * running[:, -1]
    found = torch.searchsorted(running, point[:, None], right=True)[:, 0]
    return found.clamp(max=running.size(1) - 1), running, point


def test_the_chunked_draw_is_the_one_pass_draw_over_a_large_vocabulary() -> None:
    """8,000 tokens are 63 chunks of 128 (the last one short): 3,000 rows of spread and of
    peaked distributions drawn both ways, at two steps, pick the same tokens, except where
    the point falls within rounding (1e-6) of the boundary between two tokens: the chunked
    draw sums in chunks, the naive one along the row."""
    generator = torch.Generator().manual_seed(3)
    spread = torch.log_softmax(torch.randn(1500, 8000, generator=generator), dim=1)
    peaked = torch.log_softmax(torch.randn(1500, 8000, generator=generator) * 6, dim=1)
    config = DecodeConfig(beam_size=1, sampling=True)
    for log_probs in (spread, peaked):
        keys = line_keys([[n] for n in range(len(log_probs))], 1, seed=11)
        for step in (0, 5):
            chunked = draw(log_probs, keys, step, config)
            expected, running, point = _one_pass_draw(log_probs, keys, step)
            differ = (chunked != expected).nonzero()[:, 0]
            assert len(differ) <= 3
            for row in differ.tolist():
                boundary = running[row, min(int(chunked[row]), int(expected[row]))]
                assert abs(float(boundary - point[row])) < 1e-6
            assert len(set((chunked // 128).tolist())) > 40  # the draws cross many chunks


def test_top_p_keeps_the_smallest_set_that_reaches_p() -> None:
    log_probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    for top_p, kept in [(0.5, 1), (0.8, 2), (0.81, 3), (0.95, 3), (0.96, 4), (1.0, 4)]:
        config = DecodeConfig(beam_size=1, sampling=True, top_p=top_p)
        restricted = restricted_log_probs(log_probs, config)[0]
        assert torch.isfinite(restricted).tolist() == [True] * kept + [False] * (4 - kept)
        assert float(restricted.exp().sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("arguments,message", [
    (["--sampling", "--temperature", "-1"],
     "--temperature -1.0: decode.temperature: must be greater than 0.0"),
    (["--sampling", "--top-p", "1.5"], "--top-p 1.5: decode.top_p: must be at most 1.0"),
    (["--sampling", "--top-p", "0"], "--top-p 0.0: decode.top_p: must be greater than 0.0"),
    (["--sampling", "--top-k", "0"], "Invalid value for '--top-k'"),
    (["--sampling", "--beam", "5"], "decode.sampling: sampling draws one token at a time, not "
                                    "a beam; set decode.beam_size to 1 (it is 5)"),
    (["--sampling", "--constraints"], "--constraints needs beam search; --sampling"),
])
def test_bad_sampling_options_are_one_line_errors(trained_run: Path, arguments: list[str],
                                                  message: str) -> None:
    result = runner.invoke(app, ["translate", str(trained_run), *arguments], input="A man.\n")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("error: ") + result.stderr.count("Error: ") == 1


def test_translate_samples_reproducibly_from_the_command_line(trained_run: Path) -> None:
    lines = "The dog sees a cat.\nA man.\nThe old woman has a small house.\n"
    first = runner.invoke(app, ["translate", str(trained_run), "--sampling", "--nbest", "3"],
                          input=lines)
    again = runner.invoke(app, ["translate", str(trained_run), "--sampling", "--nbest", "3"],
                          input=lines)
    other = runner.invoke(app, ["translate", str(trained_run), "--sampling", "--nbest", "3",
                                "--seed", "9"], input=lines)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout != other.stdout
    assert all(len(line.split("\t")) == 6 for line in first.stdout.splitlines())
