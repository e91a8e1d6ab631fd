"""Greedy and beam search over a model's encode/decode_step."""

from __future__ import annotations

from dataclasses import replace

import torch

from s2s.batching import pad
from s2s.config import DecodeConfig, ModelConfig
from s2s.model import Seq2Seq
from s2s.search import beam_search, decode_corpus, greedy_search, max_output_lengths
from s2s.vocab import EOS_ID


def _peaked_model(seed: int = 0, input_feeding: bool = True) -> Seq2Seq:
    """A random model with sharp output distributions, so ties are practically impossible."""
    torch.manual_seed(seed)
    config = ModelConfig(embed_size=16, encoder_hidden=16, decoder_hidden=32, encoder_layers=1,
                         decoder_layers=1, dropout=0.0, embed_dropout=0.0,
                         input_feeding=input_feeding, tie_embeddings=False)
    model = Seq2Seq(config, 30, 25).eval()
    with torch.no_grad():
        model.decoder.output.weight.mul_(8.0)
        model.decoder.output.bias[EOS_ID] += 2.0
    return model


def _batch(count: int, seed: int = 2) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 30, (int(n),), generator=generator).tolist()
            for n in torch.randint(1, 12, (count,), generator=generator)]


def test_beam_size_one_equals_greedy() -> None:
    for seed in range(3):
        model = _peaked_model(seed, input_feeding=bool(seed % 2))
        src, lengths = pad(_batch(40, seed), suffix=EOS_ID)
        settings = DecodeConfig(beam_size=1, nbest=1, max_len_a=1.0, max_len_b=5)
        greedy = greedy_search(model, src, lengths, settings)
        beam = beam_search(model, src, lengths, settings)
        assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]


def test_translation_is_the_same_alone_and_in_a_batch_of_longer_sentences() -> None:
    model = _peaked_model()
    sentences = _batch(30)
    settings = DecodeConfig(beam_size=4, nbest=1, batch_tokens=10_000)
    batched = decode_corpus(model, sentences, settings, torch.device("cpu"))
    for index in range(0, 30, 7):
        alone = decode_corpus(model, [sentences[index]], settings, torch.device("cpu"))
        assert alone[0][0].tokens == batched[index][0].tokens


def test_nbest_lists_are_sorted_and_distinct() -> None:
    model = _peaked_model()
    src, lengths = pad(_batch(10), suffix=EOS_ID)
    results = beam_search(model, src, lengths, DecodeConfig(beam_size=5, nbest=3))
    for hypotheses in results:
        assert len(hypotheses) == 3
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == 3


def test_output_length_limit_is_respected() -> None:
    model = _peaked_model()
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] -= 100.0  # never wants to stop
    sentences = _batch(8)
    src, lengths = pad(sentences, suffix=EOS_ID)
    settings = DecodeConfig(beam_size=3, max_len_a=0.5, max_len_b=2)
    limits = max_output_lengths(lengths, settings).tolist()
    for search in (greedy_search, beam_search):
        results = search(model, src, lengths, replace(settings, beam_size=1) if
                         search is greedy_search else settings)
        assert [len(h[0].tokens) for h in results] == limits


def test_no_repeat_ngram_blocks_repeated_bigrams() -> None:
    model = _peaked_model()
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] -= 100.0
    src, lengths = pad(_batch(6), suffix=EOS_ID)
    settings = DecodeConfig(beam_size=3, no_repeat_ngram=2, max_len_a=3.0, max_len_b=10)
    for search, beam in ((greedy_search, 1), (beam_search, 3)):
        for hypotheses in search(model, src, lengths, replace(settings, beam_size=beam)):
            tokens = hypotheses[0].tokens
            bigrams = list(zip(tokens, tokens[1:]))
            assert len(bigrams) == len(set(bigrams))
