"""Looking inside a run: learning curves, attention heatmaps, TensorBoard."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.plots import attention_figure, curves_of, font_for, heatmap_labels, save_figure
from s2s.rundir import RunDir
from s2s.translation.alignment import Alignment
from tests.conftest import config_dict, write_config

runner = CliRunner()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return struct.unpack(">II", data[16:24])


def test_curves_are_the_metrics_records() -> None:
    records = [
        {"kind": "train", "step": 10, "lr": 1e-3, "loss": 5.0, "elapsed": 6.0},
        {"kind": "valid", "step": 10, "loss": 4.0, "ppl": 54.6, "bleu": 1.0, "chrf": 9.0,
         "elapsed": 7.0, "best": True},
        {"kind": "train", "step": 20, "lr": 5e-4, "loss": 4.5, "elapsed": 12.0},
        {"kind": "valid", "step": 20, "loss": 3.5, "ppl": 33.1, "bleu": 3.0, "chrf": 12.0,
         "elapsed": 13.0, "best": True},
        {"kind": "valid", "step": 30, "loss": 3.6, "ppl": 36.6, "bleu": 2.0, "chrf": 11.0,
         "elapsed": 19.0, "best": False},
    ]
    curves = curves_of(records, "run")
    assert (curves.train_loss.steps, curves.train_loss.values) == ([10, 20], [5.0, 4.5])
    assert curves.lr.values == [1e-3, 5e-4]
    assert (curves.valid_loss.steps, curves.valid_loss.values) == ([10, 20, 30], [4.0, 3.5, 3.6])
    assert curves.bleu.values == [1.0, 3.0, 2.0] and curves.chrf.values == [9.0, 12.0, 11.0]
    assert curves.valid_ppl.values == [54.6, 33.1, 36.6]
    assert curves.best_step == 20  # the last validation marked best
    assert curves.minutes.values == pytest.approx([0.1, 7 / 60, 0.2, 13 / 60, 19 / 60])


def test_plot_writes_curves_of_one_or_several_runs(trained_run: Path, tmp_path: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["plot", str(run_dir)])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == RunDir(run_dir).plots / "curves.png"
    assert _png_size(path) == (1320, 900)  # 11 x 7.5 inches at 120 dpi
    curves = curves_of(RunDir(run_dir).read_metrics(), "run")
    assert curves.best_step is not None and len(curves.valid_loss.steps) == 2
    other = tmp_path / "other"
    RunDir(other).root.mkdir()
    for record in RunDir(run_dir).read_metrics()[:3]:  # a run still training
        RunDir(other).append_metrics(record)
    result = runner.invoke(app, ["plot", str(run_dir), str(other)])
    assert result.exit_code == 0, result.output
    assert _png_size(Path(result.stdout.strip())) == (1320, 900)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["plot", str(empty)])
    assert result.exit_code == 2 and "no metrics yet" in result.stderr
    result = runner.invoke(app, ["plot", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a run directory" in result.stderr


def test_plot_attention_translates_and_numbers_its_pictures(trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    taken = set(RunDir(run_dir).plots.glob("attention-*.png"))  # other tests' pictures
    paths = []
    for _ in range(2):
        result = runner.invoke(app, ["plot", str(run_dir), "--attention",
                                     "The old dog sees a small cat."])
        assert result.exit_code == 0, result.output
        paths.append(Path(result.stdout.strip()))
    first = len(taken) + 1  # numbered from 1, never overwriting a picture
    assert [path.name for path in paths] == [f"attention-{first}.png",
                                             f"attention-{first + 1}.png"]
    assert not taken & set(paths)
    width, height = _png_size(paths[0])
    assert width >= 600 and height >= 480
    result = runner.invoke(app, ["plot", str(run_dir), "--attention", "  "])
    assert result.exit_code == 2 and "empty" in result.stderr


def test_heatmap_labels_fall_back_to_indices_without_a_font(tmp_path: Path) -> None:
    attention = Alignment(np.full((3, 4), 0.25), ["\u2581我", "爱", "猫", "</s>"],
                          ["\u2581I", "\u2581love", "</s>"], np.zeros((2, 3)))
    assert heatmap_labels(attention, drawable=True) == (["_我", "爱", "猫", "</s>"],
                                                        ["_I", "_love", "</s>"])
    assert heatmap_labels(attention, drawable=False) == (["0", "1", "2", "3"],
                                                         ["0", "1", "2"])
    font, drawable = font_for("我爱猫")
    figure, drawn = attention_figure(attention, "我爱猫")
    assert drawn == drawable  # CJK pieces are drawn when some installed font has them
    assert font_for("plain ascii") == (None, True)  # matplotlib's own font suffices
    # no font draws private-use characters: never matplotlib's "Last Resort" boxes
    assert font_for("\U000f0001") == (None, False)
    assert font is None or "LastResort" not in font
    assert _png_size(save_figure(figure, tmp_path / "cjk.png"))[0] >= 600


def test_tensorboard_records_the_metrics_and_attention(demo_corpus: Path,
                                                       tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    config_path = write_config(tmp_path / "config.yaml", config_dict(
        demo_corpus, tmp_path / "run", train={"max_steps": 20, "tensorboard": True}))
    for command in ("prepare", "train"):
        result = runner.invoke(app, [command, str(config_path)])
        assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    events = EventAccumulator(str(run.tensorboard), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    records = run.read_metrics()
    for kind, key in (("train", "loss"), ("valid", "bleu"), ("valid", "ppl")):
        logged = [(record["step"], record[key]) for record in records if record["kind"] == kind]
        written = [(event.step, event.value) for event in events.Scalars(f"{kind}/{key}")]
        assert [step for step, _ in written] == [step for step, _ in logged]
        assert [value for _, value in written] == pytest.approx([v for _, v in logged])
    images = events.Images("valid/attention")
    assert [image.step for image in images] == [10, 20]  # one per validation
    assert images[0].width >= 600


def test_tensorboard_without_the_package_is_a_one_line_error(
        trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    result = runner.invoke(app, ["train", str(trained_run), "--set", "train.tensorboard=true",
                                 "--set", "train.max_steps=151"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: train.tensorboard: true needs the tensorboard "
                                     "package; install it with pip install "
                                     "'s2s[tensorboard]', or set train.tensorboard: false")


def test_a_heatmap_without_a_font_for_its_pieces_warns_once(
        trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s2s.plots.font_for", lambda text: (None, False))
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["plot", str(run_dir), "--attention", "A dog."])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("no installed font draws these pieces") == 1
    assert _png_size(Path(result.stdout.strip()))[0] >= 600
