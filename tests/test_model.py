"""The encoder-decoder: masking, batch invariance, exact gradients, and that it can learn."""

from __future__ import annotations

import pytest
import torch

from s2s.config import DecodeConfig, ModelConfig
from s2s.data.batching import pad
from s2s.data.vocab import EOS_ID
from s2s.model.seq2seq import DecoderState, Seq2Seq
from s2s.search.greedy import greedy_search
from s2s.search.options import SearchOptions
from tests.tasks import fit

VARIANTS = [
    ("general", True), ("general", False), ("bahdanau", True), ("dot", True), ("dot", False)]
CELLS = ["lstm", "gru", "rnn"]


def _model(attention: str, input_feeding: bool, cell: str = "lstm", **overrides) -> Seq2Seq:
    torch.manual_seed(0)
    sizes = {"embed_size": 24, "encoder_hidden": 16, "decoder_hidden": 32, "encoder_layers": 2,
             "decoder_layers": 2, "dropout": 0.0, "embed_dropout": 0.0}
    sizes.update(overrides)
    config = ModelConfig(attention=attention, input_feeding=input_feeding,
                         cell=cell, **sizes)  # type: ignore[arg-type]
    return Seq2Seq(config, 40, 50).double().eval()


def _sources(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(4, 40, (n,), generator=generator).tolist() for n in lengths]
    return pad(sequences, suffix=EOS_ID)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention,input_feeding", VARIANTS)
def test_attention_gives_padding_exactly_zero_weight(attention: str, input_feeding: bool,
                                                      cell: str) -> None:
    model = _model(attention, input_feeding, cell)
    src, lengths = _sources([9, 3, 6])
    tgt = torch.randint(4, 50, (3, 4), generator=torch.Generator().manual_seed(3))
    encoded, state = model.encode(src, lengths)
    _, _, weights = model.decoder(tgt, state, encoded)  # (B, T, S), the decoder's own queries
    padding = ~encoded.mask
    assert padding.any()
    assert torch.all(weights.masked_select(padding[:, None, :].expand_as(weights)) == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, dtype=torch.double))
    # and the encoder states at padding positions are exactly zero (packed: no work there)
    assert torch.all(encoded.states[padding] == 0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention,input_feeding", VARIANTS)
def test_a_sentence_decodes_the_same_alone_and_batched(attention: str, input_feeding: bool,
                                                       cell: str) -> None:
    model = _model(attention, input_feeding, cell)
    src, lengths = _sources([4, 11, 7])
    tgt = torch.randint(4, 50, (3, 6), generator=torch.Generator().manual_seed(3))
    batched = model(src, lengths, tgt)
    alone = model(src[:1, :lengths[0]], lengths[:1], tgt[:1])
    assert torch.allclose(batched[:1], alone, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_deferred_recurrent_gradients_equal_plain_autograd(cell: str) -> None:
    model = _model("general", True, cell)
    src, lengths = _sources([5, 3, 8])
    tgt = torch.randint(4, 50, (3, 7), generator=torch.Generator().manual_seed(4))
    model.train()  # the deferred path
    model(src, lengths, tgt).square().sum().backward()
    deferred = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.eval()  # plain nn.Linear per step (no dropout here, so the same function)
    model(src, lengths, tgt).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(deferred[name], parameter.grad, atol=1e-12), name


def test_tied_and_shared_embeddings() -> None:
    config = ModelConfig(embed_size=16, encoder_hidden=8, decoder_hidden=16)
    joint = Seq2Seq(config, 30, 30, joint_vocab=True)
    assert joint.encoder.embedding is joint.decoder.embedding
    assert joint.decoder.output.weight is joint.decoder.embedding.weight
    separate = Seq2Seq(config, 30, 40)
    assert separate.encoder.embedding is not separate.decoder.embedding
    untied = Seq2Seq(ModelConfig(embed_size=16, encoder_hidden=8, decoder_hidden=16,
                                 tie_embeddings=False), 30, 40)
    assert untied.decoder.output.weight is not untied.decoder.embedding.weight


@pytest.mark.parametrize("input_feeding", [True, False])
def test_weights_start_uniform_in_the_init_range_and_embeddings_keep_theirs(
        input_feeding: bool) -> None:
    sizes = {"embed_size": 16, "encoder_hidden": 64, "decoder_hidden": 128,
             "input_feeding": input_feeding}
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(init_range=0.2, **sizes), 300, 300)
    embeddings = {"encoder.embedding.weight", "decoder.embedding.weight"}
    for name, parameter in model.named_parameters():
        if name in embeddings:
            assert parameter.std().item() == pytest.approx(16 ** -0.5, rel=0.1), name
            continue
        # every weight and bias fills [-0.2, 0.2]: the largest draw of >= 128 is near the bound
        assert parameter.abs().max().item() <= 0.2, name
        assert parameter.abs().max().item() > 0.19, name
    torch.manual_seed(0)
    default = Seq2Seq(ModelConfig(init_range=0.0, **sizes), 300, 300)
    # PyTorch's own start: a linear map within 1/sqrt(fan-in), here 1/sqrt(128 + 128)
    assert 0.06 < default.decoder.combine.weight.abs().max().item() <= 256 ** -0.5


@pytest.mark.slow
@pytest.mark.parametrize("task,cell", [("copy", "lstm"), ("reverse", "lstm"), ("copy", "gru"),
                                       ("copy", "rnn")])
def test_learns_a_tiny_copy_or_reverse_task(task: str, cell: str) -> None:
    """Judged on held-out sentences, not on the last batch's loss: Adam at this rate has loss
    spikes whose timing changes with float rounding (thread count, BLAS), learning does not.
    Measured over 3 seeds x 1 and 2 threads: 0.98 to 1.0 exact copies."""
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, embed_size=32, encoder_layers=1,  # type: ignore[arg-type]
                         encoder_hidden=32, decoder_layers=1, decoder_hidden=64, dropout=0.0,
                         embed_dropout=0.0)
    generator = torch.Generator().manual_seed(1)

    def examples(count: int = 32) -> tuple[list[list[int]], list[list[int]]]:
        lengths = torch.randint(2, 7, (count,), generator=generator)
        sequences = [torch.randint(4, 14, (int(n),), generator=generator).tolist()
                     for n in lengths]
        return sequences, [s if task == "copy" else s[::-1] for s in sequences]

    model = fit(Seq2Seq(config, 14, 14), examples, 400, clip_norm=1.0)
    sequences, targets = examples(200)
    src, src_lengths = pad(sequences, suffix=EOS_ID)
    found = greedy_search(model, src, src_lengths, SearchOptions(DecodeConfig(beam_size=1),
                                                               torch.device("cpu")))
    exact = sum(hypotheses[0].tokens == target for hypotheses, target in zip(found, targets))
    assert exact / len(targets) >= 0.9


def _search_step_matches_training_path(model: Seq2Seq) -> bool:
    """Compare a search step (no grad, eval) with the training path over the same one step."""
    src, lengths = _sources([6, 4])
    prev = torch.tensor([5, 9])
    encoded, state = model.encode(src, lengths)
    assert encoded.step_layers is None  # only search asks for them
    if model.config.input_feeding:  # a nonzero feed, as every step after the first has
        state = state._replace(feed=torch.randn_like(state.feed))
    trained, trained_state, trained_weights = model.decoder(prev[:, None], state, encoded)
    with torch.no_grad():
        assert model.encode(src, lengths)[0].step_layers is None  # grad mode changes nothing
        search_encoded, _ = model.encode(src, lengths, for_search=True)
        assert search_encoded.step_layers is not None
        searched, searched_state, searched_weights = model.decoder(prev[:, None], state,
                                                                   search_encoded)
    return (torch.allclose(trained, searched, atol=1e-10)
            and torch.allclose(trained_weights, searched_weights, atol=1e-10)
            and all(a is b is None or torch.allclose(a, b, atol=1e-10)
                    for a, b in zip(trained_state, searched_state)))


@pytest.mark.parametrize("cell", ["gru", "rnn"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_cells_without_a_cell_state_carry_none(cell: str, input_feeding: bool) -> None:
    model = _model("general", input_feeding, cell)
    assert model.encoder.bridge.out_features == 2 * 32  # hidden only, for 2 layers
    src, lengths = _sources([6, 4])
    encoded, state = model.encode(src, lengths)
    assert state.cell is None
    _, after, _ = model.decoder(torch.tensor([[5, 7], [9, 4]]), state, encoded)
    assert after.cell is None and after.select(torch.tensor([1, 1, 0])).cell is None


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_input_feeding_step_follows_the_textbook_equations(cell: str) -> None:
    """A naive reference for the first decoder layer's step, written from each cell's
    equations with the model's own parameters (x = [embedding, feed])."""
    model = _model("general", True, cell, decoder_layers=1)
    generator = torch.Generator().manual_seed(7)
    embedded, feed, hidden = (torch.randn(3, n, generator=generator, dtype=torch.double)
                              for n in (24, 24, 32))
    cell_state = torch.randn(1, 3, 32, generator=generator, dtype=torch.double)
    state = DecoderState(hidden[None], cell_state if cell == "lstm" else None, feed)
    encoded, _ = model.encode(*_sources([5, 4, 6]))
    model.decoder.embedding.weight.data[5:8] = embedded
    _, new_state, _ = model.decoder(torch.tensor([[5], [6], [7]]), state, encoded)

    gates, layer = model.decoder.embedding_gates, model.decoder.recurrent[0]
    if cell == "gru":
        x_part = embedded @ gates.weight.T + gates.bias + feed @ layer.input.weight.T
        h_part = hidden @ layer.hidden.weight.T + layer.hidden.bias
        (x_r, x_z, x_n), (h_r, h_z, h_n) = x_part.chunk(3, dim=1), h_part.chunk(3, dim=1)
        reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        expected = (1 - update) * candidate + update * hidden
    else:
        total = (embedded @ gates.weight.T + gates.bias
                 + torch.cat([feed, hidden], dim=1) @ layer.weight.T)
        if cell == "rnn":
            expected = torch.tanh(total)  # the article's h_t = tanh(W x_t + U h_t-1 + b)
        else:
            i, f, o, g = total.chunk(4, dim=1)
            new_cell = torch.sigmoid(f) * cell_state[0] + torch.sigmoid(i) * torch.tanh(g)
            expected = torch.sigmoid(o) * torch.tanh(new_cell)
            assert torch.allclose(new_state.cell[0], new_cell, atol=1e-12)
    assert torch.allclose(new_state.hidden[0], expected, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("input_feeding", [True, False])
def test_search_step_matches_the_training_path(input_feeding: bool, cell: str) -> None:
    assert _search_step_matches_training_path(_model("general", input_feeding, cell))


@pytest.mark.parametrize("input_feeding", [True, False])
def test_search_step_follows_changed_weights(input_feeding: bool) -> None:
    """After optimizer steps, loads and dtype moves, search uses the weights as they are now.

    The fused Adam updates weights in place without bumping their version counters, so a
    cache of joined weights keyed on versions once served stale ones during validation.
    """
    model = _model("general", input_feeding)
    assert _search_step_matches_training_path(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    src, lengths = _sources([5, 3])
    tgt = torch.randint(4, 50, (2, 4), generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        model.train()
        model(src, lengths, tgt).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        model.eval()
        assert _search_step_matches_training_path(model)
    other = _model("general", input_feeding)
    with torch.no_grad():
        for parameter in other.decoder.parameters():
            parameter.add_(0.1)
    model.load_state_dict(other.state_dict())
    assert _search_step_matches_training_path(model)
    model.float()
    model.double()
    assert _search_step_matches_training_path(model)


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
def test_beams_attend_to_one_shared_copy_of_the_source(attention: str) -> None:
    model = _model(attention, input_feeding=False)
    src, lengths = _sources([5, 8])
    encoded, _ = model.encode(src, lengths)
    query = torch.randn(2 * 3, 1, 32, dtype=torch.double)  # 3 beams per sentence
    shared, shared_weights = model.decoder.attention(query, encoded)
    repeated, repeated_weights = model.decoder.attention(
        query, encoded.select(torch.tensor([0, 0, 0, 1, 1, 1])))
    assert torch.allclose(shared, repeated, atol=1e-12)
    assert torch.allclose(shared_weights, repeated_weights, atol=1e-12)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_the_training_forward_can_return_the_attention_weights(input_feeding: bool) -> None:
    model = _model("general", input_feeding)
    src, lengths = _sources([5, 8])
    tgt = torch.randint(4, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    logits, weights = model(src, lengths, tgt, with_attention=True)
    assert torch.equal(logits, model(src, lengths, tgt))
    assert weights.shape == (2, 6, 9)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 6, dtype=torch.double))
