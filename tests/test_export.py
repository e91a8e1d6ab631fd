"""`s2s export`: ONNX graphs that compute what the model computes, and a reader that translates
as `s2s translate` does without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ModelConfig, load_config
from s2s.data.batching import pad
from s2s.data.vocab import BOS_ID, EOS_ID
from s2s.export import graphs
from s2s.export.graphs import _EncoderGraph, export_run
from s2s.model.seq2seq import Seq2Seq
from s2s.translation.translator import load_translator

onnxruntime = pytest.importorskip("onnxruntime")
runner = CliRunner()
LINES = ["The dog sees a cat.", "", "A happy woman buys the new car near the house.",
         "The old man reads.", "A small child plays with the red ball in the park today."]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_the_unpacked_encoder_equals_the_packed_one(cell: str, input_feeding: bool) -> None:
    """Padding never reaches a real position: each sentence's states and the decoder's first
    state are those of the packed encoder, whatever the other sentences' lengths."""
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, embed_size=8, encoder_layers=2, encoder_hidden=8,  # type: ignore[arg-type]
                         decoder_layers=2, decoder_hidden=12, input_feeding=input_feeding)
    model = Seq2Seq(config, 20, 20).eval()
    src, lengths = pad([[5, 6, 7, 8, 9, 10], [11], [12, 13, 14]], suffix=EOS_ID)
    with torch.no_grad():
        encoded, state = model.encode(src, lengths)
        states, keys, mask, hidden, cell_state = _EncoderGraph(model)(src, lengths)
    torch.testing.assert_close(states, encoded.states, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(keys, encoded.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden, state.hidden, atol=1e-5, rtol=1e-5)
    if state.cell is not None:
        torch.testing.assert_close(cell_state, state.cell, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask, encoded.mask)


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "model"
    result = runner.invoke(app, ["export", str(load_config(trained_run).run_dir),
                                 "--output", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(folder)
    return folder


def _reader(folder: Path, beam: int) -> list[tuple[str, float]]:
    """The folder's translate.py in a fresh interpreter that must never import torch."""
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
        "from translate import ExportedTranslator\n"
        f"found = ExportedTranslator({str(folder)!r}).translate({LINES!r}, {beam})\n"
        "assert 'torch' not in sys.modules, 'the reader imported torch'\n"
        "print(json.dumps(found))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=folder)
    assert done.returncode == 0, done.stderr
    return [tuple(pair) for pair in json.loads(done.stdout)]


@pytest.mark.slow
@pytest.mark.parametrize("beam", [1, 3])
def test_the_reader_translates_as_s2s_translate_does(trained_run: Path, exported: Path,
                                                      beam: int) -> None:
    translator = load_translator(load_config(trained_run).run_dir, "best", device="cpu",
                                 overrides=(f"decode.beam_size={beam}",
                                            "decode.precision=fp32"))
    expected = translator.translate(LINES)
    found = _reader(exported, beam)
    assert [text for text, _ in found] == [result.text for result in expected]
    assert found[1] == ("", 0.0)
    for (_, score), result in zip(found, expected):
        if result.scores:
            assert score == pytest.approx(result.scores[0], abs=1e-4)
    settings = json.loads((exported / "settings.json").read_text())
    assert settings["checkpoint"] == "best.pt" and not settings["int8"]


def test_the_step_graph_takes_beams_of_any_count(exported: Path) -> None:
    """Dynamic rows and source length: 3 sentences x 4 beams over a source of 9 tokens."""
    session = onnxruntime.InferenceSession(str(exported / "encoder.onnx"))
    src = np.full((3, 9), 0, dtype=np.int64)
    src[:, :3] = [5, 6, EOS_ID]
    src[0, :9] = [5, 6, 7, 8, 9, 10, 11, 12, EOS_ID]
    states, keys, mask, hidden, cell = session.run(None, {
        "src_ids": src, "src_lengths": np.array([9, 3, 3], dtype=np.int64)})
    step = onnxruntime.InferenceSession(str(exported / "step.onnx"))
    settings = json.loads((exported / "settings.json").read_text())
    rows = np.repeat(np.arange(3), 4)
    log_probs, new_hidden, _, _, attention = step.run(None, {
        "prev_tokens": np.full(12, BOS_ID, dtype=np.int64), "hidden": hidden[:, rows],
        "cell": cell[:, rows], "feed": np.zeros((12, settings["feed_width"]), np.float32),
        "states": states, "keys": keys, "mask": mask})
    assert log_probs.shape[0] == 12 and new_hidden.shape[1] == 12
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-4)
    assert attention.shape == (12, 9)
    np.testing.assert_allclose(attention[4:, 3:], 0.0)  # padding gets no attention
    np.testing.assert_allclose(log_probs[0], log_probs[3], rtol=1e-5)  # a sentence's beams


@pytest.mark.slow
def test_an_int8_export_translates_close_to_fp32(trained_run: Path, exported: Path,
                                                  tmp_path: Path) -> None:
    folder = export_run(load_config(trained_run).run_dir, output=tmp_path / "int8", int8=True)
    assert json.loads((folder / "settings.json").read_text())["int8"]
    assert (folder / "step.onnx").stat().st_size < 0.5 * (exported / "step.onnx").stat().st_size
    found, expected = _reader(folder, 3), _reader(exported, 3)
    assert sum(a[0] == b[0] for a, b in zip(found, expected)) >= len(LINES) - 1


def test_an_existing_folder_is_refused_and_an_interrupted_export_leaves_nothing(
        trained_run: Path, exported: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = str(load_config(trained_run).run_dir)
    result = runner.invoke(app, ["export", run_dir, "--output", str(exported)])
    assert result.exit_code == 2
    assert "the export folder exists" in result.output and len(result.output.splitlines()) == 1

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(graphs, "_write_graphs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_run(Path(run_dir), output=tmp_path / "half")
    assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["export", str(tmp_path / "no-run")])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_the_reader_names_a_bad_folder_and_keeps_lines_with_bad_bytes(exported: Path,
                                                                       tmp_path: Path) -> None:
    reader = [sys.executable, str(exported / "translate.py")]
    done = subprocess.run([*reader, str(tmp_path)], input=b"", capture_output=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"error: {tmp_path}: not a readable s2s export folder")
    done = subprocess.run(reader, input=b"The dog.\n\xff bad\n\nA man.\n", capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    outputs = done.stdout.decode().split("\n")[:-1]
    assert len(outputs) == 4 and outputs[2] == "" and all(outputs[i] for i in (0, 1, 3))
