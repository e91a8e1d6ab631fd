"""int8 decoding (``s2s.model.int8``): close to fp32, every row its own, the caller's model and
the process left as they were, no warnings, refused where it cannot run."""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ModelConfig, load_config
from s2s.device import check_int8, decode_dtype
from s2s.errors import DeviceError
from s2s.model.cells import CELLS
from s2s.model.int8 import (
    LOG_SOFTMAX_ROWS,
    Int8Linear,
    Int8Recurrent,
    fast_tanh,
    quantized_for_cpu,
)
from s2s.model.seq2seq import Seq2Seq
from s2s.translation.translator import Translator
from tests.tasks import LIMIT, sentence


def _relative_error(ours: torch.Tensor, expected: torch.Tensor) -> float:
    return float((ours - expected).norm() / expected.norm())


def test_int8_linear_is_close_to_fp32_and_each_row_is_its_own() -> None:
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(300, 700)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(700, 300, generator=generator) * 0.05)
    inputs = torch.randn(5, 7, 300, generator=generator)
    inputs[0, 0] *= 100  # one large row must not coarsen the others
    quantized = Int8Linear.of(linear)
    with torch.no_grad():
        ours, expected = quantized(inputs), linear(inputs)
    assert 0 < _relative_error(ours[1:], expected[1:]) < 0.01  # really quantised, and close
    assert torch.equal(quantized(inputs[2:3, 4:5]), ours[2:3, 4:5])  # alone as in the batch
    assert ours.dtype == torch.float32 and ours.shape == (5, 7, 700)


@pytest.mark.parametrize("rows", [1, LOG_SOFTMAX_ROWS, 2 * LOG_SOFTMAX_ROWS + 3])
def test_the_int8_output_layer_normalises_block_by_block_to_the_last_bit(rows: int) -> None:
    generator = torch.Generator().manual_seed(1)
    linear = nn.Linear(48, 900)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(900, 48, generator=generator))
        linear.bias[5] = float("-inf")  # a piece never produced (``never_produce``)
    quantized = Int8Linear.of(linear)
    inputs = torch.randn(rows, 48, generator=generator)
    expected = torch.log_softmax(quantized(inputs), dim=-1)
    assert torch.equal(quantized.log_softmax(inputs), expected)
    assert float(expected[:, 5].max()) == float("-inf")


def test_an_int8_decoding_step_gives_what_the_fp32_step_gives_within_int8s_rounding() -> None:
    """The int8 step against the fp32 one on the same inputs: both normalised, and every
    log-probability of a likely token (p > 1e-3) within 0.05 of fp32's (measured: at most
    0.011 here; int8's rounding is about 1% of each matmul's largest value)."""
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed_size=32, encoder_hidden=32, decoder_hidden=64), 50, 60)
    quantized = quantized_for_cpu(model)
    src = torch.randint(4, 50, (6, 9))
    src[:, -1] = 2
    lengths = torch.full((6,), 9)
    prev = torch.randint(4, 60, (6,))
    with torch.no_grad():
        steps = [decodable.decode_step(prev, state, encoded)
                 for decodable in (model, quantized)
                 for encoded, state in [decodable.encode(src, lengths, for_search=True)]]
    fp32, int8 = (step.log_probs for step in steps)
    assert fp32.shape == int8.shape == (6, 60)
    for log_probs in (fp32, int8):
        assert torch.allclose(log_probs.exp().sum(dim=1), torch.ones(6), atol=1e-5)
    likely = fp32 > math.log(1e-3)
    assert int(likely.sum()) > 100
    assert float((int8 - fp32)[likely].abs().max()) < 0.05
    assert torch.allclose(steps[0].attention, steps[1].attention, atol=0.02)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_int8_recurrent_layers_match_the_fused_module_on_packed_sequences(cell: str) -> None:
    torch.manual_seed(0)
    rnn = CELLS[cell].module(12, 20, num_layers=2, bidirectional=True, batch_first=True).eval()
    lengths = torch.tensor([3, 7, 1, 5])  # not sorted: the final states must come back in order
    packed = pack_padded_sequence(torch.randn(4, 7, 12), lengths, batch_first=True,
                                  enforce_sorted=False)
    with torch.no_grad():
        expected_output, expected_final = rnn(packed)
        output, final = Int8Recurrent(rnn, CELLS[cell])(packed)
    expected_states = pad_packed_sequence(expected_output, batch_first=True)[0]
    states = pad_packed_sequence(output, batch_first=True)[0]
    assert states.shape == expected_states.shape
    assert torch.equal(states == 0, expected_states == 0)  # padding stays zero
    assert _relative_error(states, expected_states) < 0.03
    if cell == "lstm":
        assert _relative_error(final[1], expected_final[1]) < 0.03
        final, expected_final = final[0], expected_final[0]
    for row in range(4):  # row by row: a final state in the wrong row fails here
        assert _relative_error(final[:, row], expected_final[:, row]) < 0.03


def _translator(copy_translator: Translator, dtype: torch.dtype) -> Translator:
    return Translator(copy_translator.loaded, decode=copy_translator.decode,
                      device=torch.device("cpu"), dtype=dtype, threads=1)


@pytest.mark.slow  # trains the word-task copy model
def test_the_int8_copy_translates_as_well_as_fp32_and_changes_nothing(
        copy_translator: Translator) -> None:
    model = copy_translator.loaded.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation notice (or any other) reaches the user
        int8 = _translator(copy_translator, torch.qint8)
        chance = random.Random(3)
        lines = [sentence(chance, longest=LIMIT - 2) for _ in range(60)]
        int8_texts = [result.text for result in int8.translate(lines)]
    fp32 = _translator(copy_translator, torch.float32)
    fp32_texts = [result.text for result in fp32.translate(lines)]
    int8_copies = sum(text == line for text, line in zip(int8_texts, lines))
    fp32_copies = sum(text == line for text, line in zip(fp32_texts, lines))
    assert fp32_copies >= 50 and int8_copies >= fp32_copies - 2
    assert isinstance(int8.model.decoder.output, Int8Linear)
    assert isinstance(int8.model.encoder.rnn, Int8Recurrent)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_the_fast_tanh_of_int8_decoding_is_within_two_ten_millionths_of_torchs() -> None:
    inputs = torch.cat([torch.linspace(-30, 30, 600_001), torch.tensor([float("inf"),
                                                                         float("-inf")])])
    error = (fast_tanh(inputs) - torch.tanh(inputs)).abs()
    assert float(error.max()) <= 2e-7
    assert bool((fast_tanh(inputs[inputs.abs() >= 10]).abs() == 1).all())  # saturates at +-1
    model = Seq2Seq(ModelConfig(embed_size=8, encoder_hidden=8, decoder_hidden=12), 20, 20)
    quantized = quantized_for_cpu(model)
    assert quantized.decoder.cell.tanh is fast_tanh
    assert quantized.encoder.rnn.cell.tanh is fast_tanh
    assert model.decoder.cell.tanh is torch.tanh  # the fp32 model keeps torch's


@pytest.mark.parametrize("attention", ["general", "bahdanau"])
def test_quantised_models_keep_no_trainable_weights_in_a_decoding_matmul(attention: str) -> None:
    config = ModelConfig(embed_size=8, encoder_hidden=8, decoder_hidden=12,
                         attention=attention)  # type: ignore[arg-type]
    quantized = quantized_for_cpu(Seq2Seq(config, 20, 20))
    assert quantized_for_cpu(quantized) is quantized  # an int8 model is left as it is
    decoding = [quantized.encoder.bridge, quantized.decoder.combine, quantized.decoder.output,
                *quantized.decoder.frozen_search_layers]
    attention_layers = [getattr(quantized.decoder.attention, name, None)
                        for name in ("key_projection", "query_projection", "energy")]
    assert all(isinstance(layer, Int8Linear) for layer in decoding)
    assert all(isinstance(layer, Int8Linear) for layer in attention_layers if layer is not None)
    assert not any(parameter.requires_grad for parameter in quantized.parameters())


def test_auto_is_int8_on_a_cpu_for_models_that_gain_from_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from s2s.config import DecodeConfig

    auto, cpu = DecodeConfig(precision="auto"), torch.device("cpu")
    assert decode_dtype(auto, "fp32", cpu, 512) == torch.qint8
    assert decode_dtype(auto, "bf16", cpu, 128) == torch.qint8
    assert decode_dtype(auto, "fp32", cpu, 64) == torch.float32  # too small to gain
    assert decode_dtype(DecodeConfig(precision="fp32"), "fp32", cpu, 512) == torch.float32
    assert decode_dtype(DecodeConfig(precision="int8"), "fp32", cpu, 32) == torch.qint8
    monkeypatch.setattr("s2s.device.int8_runs", lambda: False)
    assert decode_dtype(auto, "fp32", cpu, 512) == torch.float32


def test_int8_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(DeviceError, match="decode.precision: int8 runs on the CPU only"):
        check_int8(torch.device("cuda"))
    check_int8(torch.device("cpu"))


def test_translate_with_int8_from_the_command_line(trained_run: Path) -> None:
    """The command decodes int8 weights: what the library's int8 translator gives, line for
    line (and not the fp32 model's scores)."""
    from s2s.translation.translator import load_translator
    run_dir = load_config(trained_run).run_dir
    lines = ["The dog sees a cat.", "", "A man.", "Two women are walking down the street."]
    result = CliRunner().invoke(app, ["translate", str(trained_run), "--set",
                                      "decode.precision=int8", "--nbest", "2"],
                                input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    int8, fp32 = (load_translator(run_dir, overrides=[
        f"decode.precision={precision}", "decode.nbest=2"], device="cpu")
        for precision in ("int8", "fp32"))
    assert int8.dtype == torch.qint8
    expected = int8.translate(lines)
    rows = [row.split("\t") for row in result.stdout.split("\n")[:-1]]
    assert [row[0::2] for row in rows if row != [""]] == [r.texts for r in expected if r.texts]
    scores = [float(score) for row in rows if row != [""] for score in row[1::2]]
    assert scores == pytest.approx([s for r in expected for s in r.scores], abs=1e-4)
    assert scores != pytest.approx([s for r in fp32.translate(lines) for s in r.scores],
                                   abs=1e-6)
    result = CliRunner().invoke(app, ["translate", str(trained_run), "--set",
                                      "decode.precision=int4"], input="A man.\n")
    assert result.exit_code == 2
    assert "decode.precision" in result.output and "int8" in result.output
