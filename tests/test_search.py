"""Greedy and beam search over a model's encode/decode_step."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Sequence

import pytest
import torch

from s2s.config import DecodeConfig, ModelConfig
from s2s.data.batching import pad
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID
from s2s.model.ensemble import Ensemble
from s2s.model.int8 import quantized_for_cpu
from s2s.model.seq2seq import Seq2Seq
from s2s.search import beam as beam_module
from s2s.search import greedy as greedy_module
from s2s.search.beam import BeamBatch
from s2s.search.constraints import TargetTerms
from s2s.search.corpus import decode_corpus
from s2s.search.greedy import greedy_search
from s2s.search.hypothesis import Hypothesis
from s2s.search.options import SearchOptions
from s2s.search.steps import (
    beam_topk,
    bucket_size,
    keeps_passengers,
    max_output_lengths,
    row_topk,
)
from tests.tasks import copy_model, random_sentences

CPU = torch.device("cpu")


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


def beam_search(model: Seq2Seq, src: torch.Tensor, src_lengths: torch.Tensor,
                config: DecodeConfig) -> list[list[Hypothesis]]:
    """Beam search of one padded batch whose sentences all start at the first step."""
    sentences = [row[:length - 1] for row, length in zip(src.tolist(), src_lengths.tolist())]
    batch = BeamBatch(model, SearchOptions(config, src.device))
    batch.add(sentences, range(len(sentences)))
    results: list[list[Hypothesis]] = [[] for _ in sentences]
    while len(batch):
        for index, hypotheses in batch.step():
            results[index] = hypotheses
    return results


def _greedy_search(model: Seq2Seq, src: torch.Tensor, src_lengths: torch.Tensor,
                   config: DecodeConfig) -> list[list[Hypothesis]]:
    return greedy_search(model, src, src_lengths, SearchOptions(config, src.device))


CELLS = ["lstm", "gru", "rnn"]
ModelKey = tuple[str, bool]  # (cell, input feeding)


@pytest.fixture(scope="module")
def copy_models() -> dict[ModelKey, Seq2Seq]:
    """Models half-trained (100 steps) to copy their input, for every cell, with and without
    input feeding.

    Half-trained on purpose: outputs of many lengths end at different steps, and beam search
    finds other translations than greedy search, so the tests below compare real choices.
    """
    return {(cell, feeding): copy_model(cell, feeding, steps=100)
            for cell in CELLS for feeding in (True, False)}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("input_feeding", [True, False])
def test_beam_size_one_equals_greedy(copy_models: dict[ModelKey, Seq2Seq], cell: str,
                                     input_feeding: bool) -> None:
    model = copy_models[cell, input_feeding]
    src, lengths = pad(random_sentences(60), suffix=EOS_ID)
    settings = DecodeConfig(beam_size=1, nbest=1, length_penalty="none")  # comparable scores
    greedy = greedy_search(model, src, lengths, SearchOptions(settings, CPU))
    beam = beam_search(model, src, lengths, settings)
    assert len({len(h[0].tokens) for h in greedy}) >= 5  # sentences end at many steps
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]
    for ours, theirs in zip(greedy, beam):
        assert ours[0].score == pytest.approx(theirs[0].score, abs=1e-5)


# the length penalties are the search's, not the cell's: the other cells take one setting
@pytest.mark.parametrize("cell,beam,length_penalty", [
    ("lstm", 1, "gnmt"), ("lstm", 4, "gnmt"), ("lstm", 4, "average"), ("gru", 1, "gnmt"),
    ("gru", 4, "gnmt"), ("rnn", 1, "gnmt"), ("rnn", 4, "gnmt")])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_translation_is_the_same_alone_and_in_a_batch_of_longer_sentences(
        copy_models: dict[ModelKey, Seq2Seq], cell: str, beam: int, length_penalty: str,
        input_feeding: bool) -> None:
    # 60 sentences in one batch: finished ones ride along as passengers until the batch
    # shrinks to a bucket size, which must not change anyone's translation or score
    model = copy_models[cell, input_feeding]
    sentences = random_sentences(60)
    settings = DecodeConfig(beam_size=beam, nbest=1, batch_tokens=100_000,
                            length_penalty=length_penalty)  # type: ignore[arg-type]
    batched = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    assert len({len(h[0].tokens) for h in batched}) >= 5
    for index in range(60):
        alone = decode_corpus(model, [sentences[index]], SearchOptions(settings, CPU))
        assert alone[0][0].tokens == batched[index][0].tokens
        # other batch shapes take other BLAS kernels: fp32 sums of ~20 log-probabilities
        # differ by up to ~1e-5 (seen: 1.1e-5 on an AMD EPYC, 1e-5 on a 16-core Xeon)
        assert alone[0][0].score == pytest.approx(batched[index][0].score, abs=1e-4)


def test_beam_search_finds_better_scoring_translations_than_greedy(
        copy_models: dict[ModelKey, Seq2Seq]) -> None:
    model = copy_models["lstm", True]
    src, lengths = pad(random_sentences(60), suffix=EOS_ID)
    plain = DecodeConfig(beam_size=1, length_penalty="none")
    greedy = greedy_search(model, src, lengths, SearchOptions(plain, CPU))
    beam = beam_search(model, src, lengths, replace(plain, beam_size=5))
    differences = [b[0].score - g[0].score for g, b in zip(greedy, beam)]
    # not a guarantee for each sentence (greedy's prefix can drop out of the beam), but
    # clearly better under the model overall
    assert sum(differences) > 1.0
    assert sum(d > 1e-3 for d in differences) > 2 * sum(d < -1e-3 for d in differences)


@pytest.mark.parametrize("width", [50, 640, 641, 8000, 8003])
def test_two_pass_top_k_equals_torch_topk(width: int) -> None:
    generator = torch.Generator().manual_seed(width)
    scores = torch.randn(37, width, generator=generator) * 4
    scores[3] = float("-inf")  # a fully restricted row
    scores[5, : width // 2] = float("-inf")
    for k in (1, 10):
        values, tokens = row_topk(scores, k)
        expected = scores.topk(k, dim=1)
        assert torch.equal(values, expected.values)
        finite = ~torch.isinf(expected.values)
        assert torch.equal(tokens[finite], expected.indices[finite])


@pytest.mark.parametrize(("width", "chunk"), [(3, 4), (25, 4), (50, 8), (641, 64), (8000, 64)])
def test_sentence_top_k_equals_sorting_every_continuation(width: int, chunk: int) -> None:
    """``beam_topk`` against a plain sort of each sentence's K * V beam score + log-probability,
    with restricted tokens, a beam that ended (-inf) and a sentence with no live beam."""
    generator = torch.Generator().manual_seed(width)
    count, beam, k = 7, 3, 6
    log_probs = torch.randn(count * beam, width, generator=generator) * 4
    log_probs[:, :min(2, width - 1)] = float("-inf")  # restricted, as PAD and BOS are
    log_probs[4, 1:] = float("-inf")  # a row at its length limit: only one token left
    scores = torch.randn(count, beam, generator=generator)
    scores[2, 1] = float("-inf")
    scores[5] = float("-inf")  # a passenger
    values, tokens, origins = beam_topk(log_probs, scores, k, chunk=chunk)
    assert values.shape == tokens.shape == origins.shape == (count, min(k, beam * width))
    assert int(tokens.max()) < width
    for sentence in range(count):
        every = [(float(scores[sentence, b] + log_probs[sentence * beam + b, token]),
                  token, sentence * beam + b) for b in range(beam) for token in range(width)]
        expected = sorted(every, key=lambda entry: -entry[0])[:k]
        assert values[sentence].tolist() == [entry[0] for entry in expected]
        for position, (value, token, origin) in enumerate(expected):
            if math.isfinite(value) and [e[0] for e in every].count(value) == 1:
                assert (int(tokens[sentence, position]), int(origins[sentence, position])) == (
                    token, origin)


def test_bucket_sizes_cover_every_count_with_at_most_a_quarter_more() -> None:
    sizes = {bucket_size(count) for count in range(1, 1025)}
    assert len(sizes) < 40
    for count in range(1, 1025):
        assert count <= bucket_size(count) <= count * 1.25


def test_nbest_lists_are_sorted_and_distinct() -> None:
    model = _peaked_model()
    src, lengths = pad(random_sentences(10), suffix=EOS_ID)
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
    sentences = random_sentences(8)
    src, lengths = pad(sentences, suffix=EOS_ID)
    settings = DecodeConfig(beam_size=3, max_len_a=0.5, max_len_b=2)
    limits = max_output_lengths(lengths, settings).tolist()
    for search in (_greedy_search, beam_search):
        results = search(model, src, lengths, replace(settings, beam_size=1) if
                         search is _greedy_search else settings)
        assert [len(h[0].tokens) for h in results] == limits


def test_no_repeat_ngram_blocks_repeated_bigrams() -> None:
    model = _peaked_model()
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] -= 100.0
    src, lengths = pad(random_sentences(6), suffix=EOS_ID)
    settings = DecodeConfig(beam_size=3, no_repeat_ngram=2, max_len_a=3.0, max_len_b=10)
    for search, beam in ((_greedy_search, 1), (beam_search, 3)):
        for hypotheses in search(model, src, lengths, replace(settings, beam_size=beam)):
            tokens = hypotheses[0].tokens
            bigrams = list(zip(tokens, tokens[1:]))
            assert len(bigrams) == len(set(bigrams))


def test_no_repeat_ngram_holds_for_sentences_that_join_a_running_batch() -> None:
    """Later sentences' histories are shorter, padded on the left: the padding must neither
    block nor hide a repeat."""
    model = _peaked_model()
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] -= 100.0
    sentences = random_sentences(12)
    settings = DecodeConfig(beam_size=3, no_repeat_ngram=2, max_len_a=3.0, max_len_b=10,
                            batch_tokens=3 * 16)  # two or three sentences at a time
    joined = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    for sentence, hypotheses in zip(sentences, joined):
        alone = decode_corpus(model, [sentence], SearchOptions(settings, CPU))
        assert hypotheses[0].tokens == alone[0][0].tokens
        bigrams = list(zip(hypotheses[0].tokens, hypotheses[0].tokens[1:]))
        assert len(bigrams) == len(set(bigrams))


# ------------------------------------------------------------------------------------------
# A deliberately naive reference: one sentence at a time, one hypothesis at a time, plain
# Python over decode_step (through the model's ordinary decoder path, not search's joined
# weights). The batched searches must find the same translations with the same scores.

def _reference_search(model: Seq2Seq | Sequence[Seq2Seq], sentence: list[int],
                      config: DecodeConfig, weights: Sequence[float] | None = None,
                      prefix: Sequence[int] = (),
                      constraints: Sequence[Sequence[int]] = ()
                      ) -> list[tuple[list[int], float]]:
    """``model``: one model, or an ensemble's members (combined as ``config`` says);
    ``prefix``: the tokens every output starts with; ``constraints``: phrases every output
    contains (dynamic beam allocation, ``_reference_constrained``)."""
    models = [model] if isinstance(model, Seq2Seq) else list(model)
    shares = [1.0 / len(models)] * len(models) if weights is None else [
        weight / sum(weights) for weight in weights]
    src, src_lengths = pad([sentence], suffix=EOS_ID)
    encoded = [member.encode(src, src_lengths)[0] for member in models]
    start = [member.encode(src, src_lengths)[1] for member in models]
    limit = int(max_output_lengths(src_lengths, config)[0])  # at this step only EOS may come

    def next_log_probs(tokens: list[int], states):  # -> {token: log-probability}, new states
        previous = torch.tensor([tokens[-1] if tokens else BOS_ID])
        member_log_probs, new_states = [], []
        for member, state, member_encoded in zip(models, states, encoded):
            log_probs, state, _ = member.decode_step(previous, state, member_encoded)
            member_log_probs.append(log_probs[0].double().tolist())
            new_states.append(state)
        combined = []
        for values in zip(*member_log_probs):
            if config.ensemble_combine == "prob":
                combined.append(math.log(sum(share * math.exp(value)
                                             for share, value in zip(shares, values))))
            else:
                combined.append(sum(share * value for share, value in zip(shares, values)))
        normaliser = math.log(sum(math.exp(value) for value in combined))
        log_probs = [value - normaliser for value in combined]
        allowed = {token: value for token, value in enumerate(log_probs)
                   if token not in (PAD_ID, BOS_ID)}
        if len(tokens) >= limit:
            allowed = {EOS_ID: allowed[EOS_ID]}
        elif len(tokens) < len(prefix):
            allowed = {prefix[len(tokens)]: allowed[prefix[len(tokens)]]}
        return allowed, new_states

    if config.beam_size == 1 and config.nbest == 1:  # greedy: the best token at every step
        tokens, score, state = [], 0.0, start
        while True:
            allowed, state = next_log_probs(tokens, state)
            token = max(allowed, key=allowed.get)
            score += allowed[token]
            if token == EOS_ID:
                return [(tokens, score)]
            tokens.append(token)

    def penalty(length: int) -> float:  # length counts the EOS
        if config.length_penalty == "gnmt":
            return ((5 + length) / 6) ** config.alpha
        return float(length) if config.length_penalty == "average" else 1.0

    if constraints:
        return _reference_constrained(next_log_probs, start, config, constraints, penalty)
    size = config.beam_size
    beams = [([], 0.0, start)]  # (tokens, log-probability, decoder state)
    finished: list[tuple[list[int], float]] = []  # (tokens, length-penalised score)
    while len(finished) < size and beams:
        candidates = []
        for tokens, score, state in beams:
            allowed, new_state = next_log_probs(tokens, state)
            candidates += [(tokens + [token], score + value, new_state)
                           for token, value in allowed.items()]
        candidates.sort(key=lambda candidate: -candidate[1])
        best = candidates[:2 * size]
        # an EOS among the K best ends a hypothesis; the K best others go on
        finished += [(tokens[:-1], score / penalty(len(tokens)))
                     for tokens, score, _ in best[:size] if tokens[-1] == EOS_ID]
        finished = sorted(finished, key=lambda hypothesis: -hypothesis[1])[:size]
        beams = [beam for beam in best if beam[0][-1] != EOS_ID][:size]
    return finished[:config.nbest]


def _reference_constrained(next_log_probs, start, config: DecodeConfig,
                           phrases: Sequence[Sequence[int]], penalty
                           ) -> list[tuple[list[int], float]]:
    """Dynamic beam allocation one hypothesis at a time: each beam offers its best 2K tokens
    and the next token of the phrase it is inside (else every unmet phrase's first); the
    candidates, best first, fill the beam round-robin over banks (constraint tokens
    produced), the fullest bank first."""
    size = config.beam_size
    # (tokens, log-probability, state, met phrases, phrase inside or -1, its tokens so far)
    beams = [([], 0.0, start, frozenset(), -1, 0)]
    finished: list[tuple[list[int], float]] = []
    total = sum(len(phrase) for phrase in phrases)
    while len(finished) < size and beams:
        candidates = []
        for tokens, score, state, met, inside, position in beams:
            allowed, new_state = next_log_probs(tokens, state)
            if len(met) < len(phrases):
                allowed.pop(EOS_ID, None)
            best = sorted(allowed, key=lambda token: -allowed[token])[:2 * size]
            offered = [phrases[inside][position]] if inside >= 0 else [
                phrase[0] for rank, phrase in enumerate(phrases) if rank not in met]
            for token in best + [t for t in dict.fromkeys(offered) if t not in best]:
                if token not in allowed:
                    continue
                new_met, new_inside, new_position = set(met), -1, 0
                if inside >= 0 and phrases[inside][position] == token:
                    new_inside, new_position = inside, position + 1
                else:
                    starts = [rank for rank, phrase in enumerate(phrases)
                              if rank not in met and phrase[0] == token]
                    if starts:
                        new_inside, new_position = starts[0], 1
                if new_inside >= 0 and new_position == len(phrases[new_inside]):
                    new_met.add(new_inside)
                    new_inside, new_position = -1, 0
                candidates.append((tokens + [token], score + allowed[token], new_state,
                                   frozenset(new_met), new_inside, new_position))
        candidates.sort(key=lambda candidate: -candidate[1])
        banks: dict[int, list] = {}
        for candidate in candidates:
            bank = sum(len(phrases[rank]) for rank in candidate[3]) + candidate[5]
            banks.setdefault(bank, []).append(candidate)
        ordered = [banks[bank][rank] for rank in range(len(candidates))
                   for bank in range(total, -1, -1) if rank < len(banks.get(bank, []))]
        best = ordered[:2 * size]
        finished += [(tokens[:-1], score / penalty(len(tokens)))
                     for tokens, score, *_ in best[:size] if tokens[-1] == EOS_ID]
        finished = sorted(finished, key=lambda hypothesis: -hypothesis[1])[:size]
        beams = [beam for beam in best if beam[0][-1] != EOS_ID][:size]
    return finished[:config.nbest]


@pytest.mark.parametrize("cell,beam,nbest,length_penalty", [
    ("lstm", 1, 1, "none"), ("lstm", 4, 1, "gnmt"), ("lstm", 4, 3, "gnmt"),
    ("lstm", 4, 1, "average"), ("gru", 4, 3, "gnmt"), ("rnn", 4, 3, "gnmt")])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_batched_search_equals_the_naive_reference(copy_models: dict[ModelKey, Seq2Seq],
                                                   cell: str, input_feeding: bool, beam: int,
                                                   nbest: int, length_penalty: str) -> None:
    model = copy_models[cell, input_feeding]
    sentences = random_sentences(25, seed=4)
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=100_000,
                            length_penalty=length_penalty)  # type: ignore[arg-type]
    batched = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    with torch.no_grad():
        expected = [_reference_search(model, sentence, settings) for sentence in sentences]
    assert len({len(found[0][0]) for found in expected}) >= 4  # outputs of many lengths
    for ours, theirs in zip(batched, expected):
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], abs=1e-4)


@pytest.mark.parametrize("beam", [1, 4])
def test_passengers_change_the_rows_computed_and_nothing_else(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 models on a CPU keep finished sentences on as passengers (``keeps_passengers``), the
    others drop them at once: the same translations either way."""
    model = copy_models["lstm", False]
    assert not keeps_passengers(model) and not keeps_passengers(quantized_for_cpu(model))
    assert keeps_passengers(copy.deepcopy(model).to(torch.bfloat16))
    sentences = random_sentences(25, seed=5)
    settings = DecodeConfig(beam_size=beam, batch_tokens=100_000)
    step, rows = model.decode_step, []

    def counted_step(prev: torch.Tensor, *state: object) -> object:
        rows.append(len(prev))
        return step(prev, *state)

    monkeypatch.setattr(model, "decode_step", counted_step)
    dropped = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    dropped_rows, rows = rows, []
    for module in (beam_module, greedy_module):
        monkeypatch.setattr(module, "keeps_passengers", lambda _: True)
    kept = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    def shrunk_to(counts: list[int]) -> list[int]:
        """The sentence counts the batch shrank to."""
        sentences = [count // beam for count in counts]
        return [new for old, new in zip(sentences, sentences[1:]) if new != old]

    assert all(count == bucket_size(count) for count in shrunk_to(rows))
    assert any(count != bucket_size(count) for count in shrunk_to(dropped_rows))
    assert sum(rows) > sum(dropped_rows)
    for ours, theirs in zip(dropped, kept):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-5)


@pytest.mark.parametrize("cell,beam,nbest", [("lstm", 1, 1), ("lstm", 4, 3), ("gru", 4, 1)])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_batched_search_of_an_int8_model_equals_the_naive_reference(
        copy_models: dict[ModelKey, Seq2Seq], cell: str, input_feeding: bool, beam: int,
        nbest: int) -> None:
    """Every path through an int8 model (search's steps, the reference's decode_step) uses
    the same int8 layers, and the batched search still finds what the reference finds.

    Scores agree to 0.1%, not 1e-4: fp32 kernels (attention's bmm) differ in the last bit
    between batch shapes, and a rounding to int8 can turn that into one quantisation step."""
    model = quantized_for_cpu(copy_models[cell, input_feeding])
    sentences = random_sentences(20, seed=4)
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=100_000)
    batched = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    with torch.no_grad():
        expected = [_reference_search(model, sentence, settings) for sentence in sentences]
    for ours, theirs in zip(batched, expected):
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], rel=1e-3)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_sentences_that_join_a_running_batch_find_what_the_naive_reference_finds(
        copy_models: dict[ModelKey, Seq2Seq], input_feeding: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A small budget makes decode_corpus top the running batch up many times: joiners start
    beside sentences halfway through, with longer or shorter sources. Topped up at three
    quarters of the budget, as on a GPU: at a CPU's quarter these few sentences join less."""
    model = copy_models["lstm", input_feeding]
    sentences = random_sentences(25, seed=4)
    settings = DecodeConfig(beam_size=4, nbest=3, batch_tokens=4 * 16)
    monkeypatch.setattr("s2s.search.corpus.top_up_below", lambda device: 0.75)
    sizes_at_join: list[int] = []
    real_add = BeamBatch.add

    def add(batch: BeamBatch, *args, **kwargs) -> None:
        sizes_at_join.append(len(batch))
        real_add(batch, *args, **kwargs)

    monkeypatch.setattr(BeamBatch, "add", add)
    joined = decode_corpus(model, sentences, SearchOptions(settings, CPU, with_attention=True))
    assert sum(size > 0 for size in sizes_at_join) >= 5  # joined running batches
    with torch.no_grad():
        expected = [_reference_search(model, sentence, settings) for sentence in sentences]
    for ours, theirs in zip(joined, expected):
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], abs=1e-4)
    whole = decode_corpus(model, sentences, SearchOptions(
        replace(settings, batch_tokens=100_000), CPU, with_attention=True))
    for ours, theirs in zip(joined, whole):
        for mine, other in zip(ours, theirs):
            assert mine.attention.shape == other.attention.shape
            assert mine.attention == pytest.approx(other.attention, abs=1e-5)


@pytest.mark.parametrize("beam,nbest", [(1, 1), (4, 3)])
@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_an_ensemble_of_a_model_with_itself_is_that_model(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, nbest: int, combine: str) -> None:
    model = copy_models["lstm", True]
    sentences = random_sentences(25, seed=4)
    settings = DecodeConfig(beam_size=beam, nbest=nbest, ensemble_combine=combine)  # type: ignore[arg-type]
    alone = decode_corpus(model, sentences, SearchOptions(settings, CPU, with_attention=True))
    twice = decode_corpus(Ensemble([model, model], [2.0, 1.0], combine), sentences,
                          SearchOptions(settings, CPU, with_attention=True))
    for ours, theirs in zip(twice, alone):
        assert [hypothesis.tokens for hypothesis in ours] == [h.tokens for h in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [h.score for h in theirs], abs=1e-5)
        for mine, other in zip(ours, theirs):
            assert mine.attention == pytest.approx(other.attention, abs=1e-6)


@pytest.mark.parametrize("beam,nbest", [(1, 1), (4, 3)])
@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_batched_ensemble_search_equals_the_naive_reference(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, nbest: int, combine: str) -> None:
    """Two models of different cells that disagree (they are half-trained), weighted 3:1."""
    members = [copy_models["lstm", True], copy_models["gru", False]]
    sentences = random_sentences(25, seed=4)
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=4 * 30,
                            ensemble_combine=combine)  # type: ignore[arg-type]
    batched = decode_corpus(Ensemble(members, [3.0, 1.0], combine), sentences,
                            SearchOptions(settings, CPU))
    single = decode_corpus(members[0], sentences, SearchOptions(settings, CPU))
    assert sum(ours[0].tokens != theirs[0].tokens for ours, theirs in zip(batched, single)) >= 3
    with torch.no_grad():
        expected = [_reference_search(members, sentence, settings, [3.0, 1.0])
                    for sentence in sentences]
    for ours, theirs in zip(batched, expected):
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], abs=1e-4)


@pytest.mark.parametrize("beam,nbest", [(1, 1), (4, 3)])
def test_every_output_starts_with_its_prefix_as_the_naive_reference_finds(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, nbest: int) -> None:
    """Prefixes of 0-3 random tokens (often not what the model would say): scores include
    the forced tokens."""
    model = copy_models["lstm", False]
    sentences = random_sentences(25, seed=4)
    generator = torch.Generator().manual_seed(7)
    prefixes = [tuple(torch.randint(4, 30, (int(n),), generator=generator).tolist())
                for n in torch.randint(0, 4, (25,), generator=generator)]
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=4 * 40)
    found = decode_corpus(model, sentences, SearchOptions(settings, CPU),
                          [TargetTerms(prefix=prefix) for prefix in prefixes])
    with torch.no_grad():
        expected = [_reference_search(model, sentence, settings, prefix=prefix)
                    for sentence, prefix in zip(sentences, prefixes)]
    for ours, theirs, prefix in zip(found, expected, prefixes):
        assert len(ours) == nbest
        assert all(tuple(h.tokens[:len(prefix)]) == prefix for h in ours)
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], abs=1e-4)


def _contains(tokens: list[int], phrase: Sequence[int]) -> bool:
    return any(tuple(tokens[i:i + len(phrase)]) == tuple(phrase)
               for i in range(len(tokens) - len(phrase) + 1))


@pytest.mark.parametrize("beam,nbest", [(1, 1), (2, 1), (5, 3)])
def test_every_hypothesis_contains_every_constraint_whole(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, nbest: int) -> None:
    """Random phrases of 1-3 random tokens, up to as many as the beam holds, some sharing
    tokens; sentences join a running batch beside others with other constraints or none."""
    model = copy_models["gru", True]
    sentences = random_sentences(40, seed=5)
    generator = torch.Generator().manual_seed(8)
    terms = []
    for _ in sentences:
        count = int(torch.randint(0, min(beam, 3) + 1, (1,), generator=generator))
        terms.append(TargetTerms(constraints=tuple(
            tuple(torch.randint(4, 12, (int(torch.randint(1, 4, (1,), generator=generator)),),
                                generator=generator).tolist()) for _ in range(count))))
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=beam * 60, max_len_b=12)
    found = decode_corpus(model, sentences, SearchOptions(settings, CPU), terms)
    plain = decode_corpus(model, sentences, SearchOptions(settings, CPU))
    assert sum(bool(t.constraints) for t in terms) >= 15
    for ours, theirs, of_sentence in zip(found, plain, terms):
        assert len(ours) >= 1
        for hypothesis in ours:
            assert all(_contains(hypothesis.tokens, phrase) for phrase in of_sentence.constraints)
        if not of_sentence.constraints:  # the same search as without constraints
            assert [h.tokens for h in ours] == [h.tokens for h in theirs]
            if beam > 1:  # (greedy search's scores have no length penalty)
                assert [h.score for h in ours] == pytest.approx([h.score for h in theirs],
                                                                abs=1e-5)


@pytest.mark.parametrize("beam,nbest", [(2, 1), (4, 3)])
def test_constrained_search_equals_the_naive_reference(
        copy_models: dict[ModelKey, Seq2Seq], beam: int, nbest: int) -> None:
    """Sentences join a running batch, beside others with other phrases or none."""
    model = copy_models["lstm", False]
    sentences = random_sentences(25, seed=9)
    generator = torch.Generator().manual_seed(10)
    phrases = [tuple(tuple(torch.randint(4, 14, (int(length),), generator=generator).tolist())
                     for length in torch.randint(1, 4, (int(count),), generator=generator))
               for count in torch.randint(0, beam + 1, (25,), generator=generator)]
    settings = DecodeConfig(beam_size=beam, nbest=nbest, batch_tokens=beam * 50, max_len_b=12)
    found = decode_corpus(model, sentences, SearchOptions(settings, CPU),
                          [TargetTerms(constraints=of) for of in phrases])
    with torch.no_grad():
        expected = [_reference_search(model, sentence, settings, constraints=of)
                    for sentence, of in zip(sentences, phrases)]
    assert sum(bool(of) for of in phrases) >= 15
    for ours, theirs in zip(found, expected):
        assert [hypothesis.tokens for hypothesis in ours] == [tokens for tokens, _ in theirs]
        assert [hypothesis.score for hypothesis in ours] == pytest.approx(
            [score for _, score in theirs], abs=1e-4)


def test_constraints_and_a_prefix_together(copy_models: dict[ModelKey, Seq2Seq]) -> None:
    model = copy_models["lstm", True]
    sentences = random_sentences(10, seed=6)
    terms = [TargetTerms(prefix=(5, 6), constraints=((7, 8, 9), (10,))) for _ in sentences]
    found = decode_corpus(model, sentences, SearchOptions(DecodeConfig(beam_size=4, nbest=2), CPU),
                          terms)
    for hypotheses in found:
        for hypothesis in hypotheses:
            assert hypothesis.tokens[:2] == [5, 6]
            assert _contains(hypothesis.tokens, (7, 8, 9)) and 10 in hypothesis.tokens
