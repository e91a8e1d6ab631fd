"""`s2s translate`: exactly one output line per input line, in order, whatever the input."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.run.checkpoint import load_checkpoint
from s2s.rundir import RunDir
from s2s.translation.stream import translate_stream
from s2s.translation.translator import Translator, load_translator

runner = CliRunner()


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return load_translator(load_config(trained_run).run_dir, "best",
                           overrides=("decode.beam_size=2",), device="cpu")


def _translate(translator: Translator, data: bytes, chunk_lines: int = 7) -> list[str]:
    output = io.StringIO()
    translate_stream(translator, io.BytesIO(data), output, chunk_lines=chunk_lines)
    return output.getvalue().split("\n")[:-1]


line_text = st.one_of(
    st.just(""), st.text(max_size=40),
    st.lists(st.sampled_from(["the", "dog", "sees", "a", "cat", "."]), max_size=12).map(" ".join),
    st.text(alphabet="ab ", min_size=300, max_size=600))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line_text, max_size=25), bad_bytes=st.booleans())
def test_n_lines_in_n_lines_out_in_order(translator: Translator, lines: list[str],
                                         bad_bytes: bool) -> None:
    raw = [line.replace("\n", " ").replace("\r", " ").encode("utf-8") for line in lines]
    if bad_bytes and raw:
        raw[0] = b"\xff\xfe" + raw[0]
    outputs = _translate(translator, b"".join(line + b"\n" for line in raw))
    texts = [line.decode("utf-8", errors="replace") for line in raw]
    # in order, each the translation of its own line, whatever the chunks
    assert outputs == [result.text for result in translator.translate(texts)]
    for text, output in zip(texts, outputs):
        assert "\n" not in output
        if not text.split():
            assert output == ""
    # each line's translation does not depend on its neighbours or chunking
    alone = [_translate(translator, line + b"\n")[0] for line in raw[:5]]
    assert alone == outputs[:5]


def test_last_line_without_newline_and_crlf(translator: Translator) -> None:
    expected = [result.text for result in translator.translate(["The dog.", "A cat."])]
    assert all(expected)
    assert _translate(translator, b"The dog.\r\nA cat.") == expected


def test_long_line_is_split_with_a_warning_not_truncated(trained_run: Path) -> None:
    long_line = " ".join(["dog"] * 400)
    result = runner.invoke(app, ["translate", str(trained_run)], input=f"{long_line}\nA cat.\n")
    assert result.exit_code == 0
    config = load_config(trained_run)
    library = load_translator(config.run_dir, decode=config.decode, device="cpu")
    expected = [result.text for result in library.translate([long_line, "A cat."])]
    assert result.stdout.splitlines() == expected and all(expected)
    assert "line 1: longer than the model's limit" in result.stderr


def test_empty_input_prints_nothing(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run)], input="")
    assert result.exit_code == 0
    assert result.stdout == ""


def test_invalid_utf8_warns_with_the_line_number(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run)], input=b"ok\n\xff bad\n")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2
    assert "line 2: invalid UTF-8" in result.stderr


def test_nbest_output_has_k_text_score_pairs(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run), "--beam", "4", "--nbest", "3"],
                           input="The dog sees a cat.\nA man.\n")
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        assert len(fields) == 6
        scores = [float(score) for score in fields[1::2]]
        assert scores == sorted(scores, reverse=True)


def test_nbest_larger_than_beam_is_a_usage_error(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run), "--beam", "2", "--nbest", "3"],
                           input="x\n")
    assert result.exit_code == 2
    assert "decode.nbest: 3 is larger than decode.beam_size (2)" in result.stderr


def test_input_and_output_files_and_checkpoint_choice(trained_run: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("The dog.\n\nA cat.\n", encoding="utf-8")
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["translate", "--run", str(run_dir), "--checkpoint", "last",
                                 "--input", str(source), "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert len(target.read_text(encoding="utf-8").split("\n")) == 4
    result = runner.invoke(app, ["translate", "--run", str(run_dir), "--checkpoint",
                                 str(tmp_path / "missing.pt")], input="x\n")
    assert result.exit_code == 1 and "checkpoint not found" in result.stderr


def test_average_checkpoints(trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["average", str(run_dir), "--last", "2"])
    assert result.exit_code == 0, result.output
    assert "averaged 2 checkpoints (steps 75, 150)" in result.stderr
    assert "warning" not in result.stderr
    directory = RunDir(run_dir).checkpoints
    inputs = [load_checkpoint(directory / f"step-{step:08d}.pt")["model"] for step in (75, 150)]
    averaged = load_checkpoint(directory / "avg.pt")["model"]
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (inputs[0][name] + inputs[1][name]) / 2, atol=1e-6), name
    for weights in (inputs[1], averaged):  # tied weights: one tensor, so stored once
        assert (weights["decoder.output.weight"].data_ptr()
                == weights["decoder.embedding.weight"].data_ptr())
    result = runner.invoke(app, ["average", str(run_dir)])  # --last 3, but 2 are kept
    assert result.exit_code == 0, result.output
    assert "asked to average the last 3 checkpoints, but" in result.stderr
    assert "keeps only 2" in result.stderr and "steps 75, 150" in result.stderr


def test_crlf_input_translates_and_scores_exactly_like_lf(trained_run: Path,
                                                          tmp_path: Path) -> None:
    """Files written on Windows end lines with CRLF: the CR is not part of the sentence."""
    lines = ["The old dog sees a small cat.", "", "A happy woman buys the new car."]
    references = ["Der alte Hund sieht eine kleine Katze.", "", "Eine glückliche Frau kauft."]
    outputs = {}
    for name, ending in (("lf", "\n"), ("crlf", "\r\n")):
        source = tmp_path / f"{name}.en"
        source.write_bytes("".join(line + ending for line in lines).encode())
        (tmp_path / f"{name}.de").write_bytes(
            "".join(line + ending for line in references).encode())
        result = runner.invoke(app, ["translate", str(trained_run), "--input", str(source)])
        assert result.exit_code == 0, result.output
        evaluated = runner.invoke(app, ["evaluate", str(trained_run), "--src", str(source),
                                        "--ref", str(tmp_path / f"{name}.de")])
        assert evaluated.exit_code == 0, evaluated.output
        record = RunDir(load_config(trained_run).run_dir).eval_file(f"{name}.en", "best",
                                                                    ".json")
        outputs[name] = (result.stdout, json.loads(record.read_text())["bleu"])
    assert "\r" not in outputs["crlf"][0]
    assert outputs["crlf"] == outputs["lf"]
    assert outputs["lf"][0].split("\n")[1] == ""  # the empty line stays empty


def test_a_translator_leaves_the_model_it_is_given_as_it_found_it(
        translator: Translator) -> None:
    """Training validates its live model through a translator: the model keeps its weights,
    dtype and train mode; a dtype it is not in is decoded from a copy of the translator's."""
    model = copy.deepcopy(translator.loaded.model).train()
    loaded = replace(translator.loaded, model=model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    shared = Translator(loaded, decode=translator.decode, device=torch.device("cpu"),
                        dtype=torch.float32, threads=2)
    assert shared.model is model
    texts = [result.text for result in shared.translate(["The dog sees a cat.", "A man."])]
    assert all(module.training for module in model.modules())
    assert texts == [result.text for result in translator.translate(["The dog sees a cat.",
                                                                      "A man."])]
    converted = Translator(loaded, decode=translator.decode, device=torch.device("cpu"),
                           dtype=torch.float64, threads=2)
    assert converted.model is not model
    assert next(converted.model.parameters()).dtype == torch.float64
    assert converted.translate(["The dog sees a cat."])[0].text
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(module.training for module in model.modules())
    assert shared.with_decode(translator.decode).model is model
