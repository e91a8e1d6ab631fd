"""`s2s distill`: the teacher's translations of the training sources, streamed in parts that
survive a stop, as a corpus a student's config names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import s2s.translation.distill as distill_module
from s2s.cli import app
from s2s.config import load_config
from s2s.errors import UsageError
from s2s.translation.distill import DistillFilters, distill
from s2s.translation.translator import ModelRef, load_translator
from tests.conftest import write_config

runner = CliRunner()
LINES = 230  # three parts of 100 lines, the last one short


@pytest.fixture()
def small_config(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The trained run's config with a 230-pair training corpus (and an empty line)."""
    monkeypatch.setattr(distill_module, "PART_LINES", 100)
    config = load_config(trained_run)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for language in ("en", "de"):
        lines = Path(f"{config.data.train[0].path}.{language}").read_text("utf-8").splitlines()
        lines = lines[:LINES - 1] + [""]
        (corpus / f"train.{language}").write_text("".join(f"{line}\n" for line in lines),
                                                  "utf-8")
    raw = _yaml(trained_run)
    raw["data"]["train"] = str(corpus / "train")
    return load_config(write_config(tmp_path / "student.yaml", raw))


def _yaml(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _teacher(trained_run: Path) -> ModelRef:
    return ModelRef(load_config(trained_run).run_dir)


def test_n_lines_give_n_pairs_of_source_and_the_teachers_beam_translation(
        small_config, trained_run: Path, tmp_path: Path) -> None:
    result = distill(small_config, [_teacher(trained_run)], tmp_path / "out")
    assert (result.lines, result.pairs, result.parts_resumed) == (LINES, LINES, 0)
    sources = (tmp_path / "out" / "train.en").read_text("utf-8").split("\n")[:-1]
    targets = (tmp_path / "out" / "train.de").read_text("utf-8").split("\n")[:-1]
    original = Path(f"{small_config.data.train[0].path}.en").read_text("utf-8").split("\n")[:-1]
    assert sources == original and len(targets) == LINES and targets[-1] == ""
    translator = load_translator(small_config.run_dir, decode=small_config.decode,
                                 device="cpu", threads=2)
    assert targets[:5] == [r.text for r in translator.translate(sources[:5])]
    record = json.loads((tmp_path / "out" / "distill.json").read_text())
    assert record["complete"] and record["search"]["beam_size"] == 3


def test_a_stopped_distillation_resumes_without_redoing_finished_parts(
        small_config, trained_run: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    whole = distill(small_config, [_teacher(trained_run)], tmp_path / "whole")
    real = distill_module._distill_part
    calls = []

    def stopped_in_the_second_part(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "_distill_part", stopped_in_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        distill(small_config, [_teacher(trained_run)], tmp_path / "out")
    assert not (tmp_path / "out" / "train.de").exists()  # no half corpus to be taken
    monkeypatch.setattr(distill_module, "_distill_part", real)
    resumed = distill(small_config, [_teacher(trained_run)], tmp_path / "out")
    assert resumed.parts_resumed == 1 and resumed.pairs == whole.pairs
    for language in ("en", "de"):
        assert ((tmp_path / "out" / f"train.{language}").read_bytes()
                == (tmp_path / "whole" / f"train.{language}").read_bytes())


def test_filters_drop_and_count_what_the_teacher_got_wrong(small_config, trained_run: Path,
                                                           tmp_path: Path) -> None:
    strict = distill(small_config, [_teacher(trained_run)], tmp_path / "strict",
                     filters=DistillFilters(min_chrf=101.0))
    assert strict.dropped["low chrF"] == LINES and strict.pairs == 0
    lenient = distill(small_config, [_teacher(trained_run)], tmp_path / "lenient",
                      filters=DistillFilters(max_ratio=1.01))
    assert 0 < lenient.dropped["length ratio"] < LINES
    assert lenient.pairs == LINES - lenient.dropped["length ratio"]
    assert len((tmp_path / "lenient" / "train.de").read_text("utf-8").splitlines()) == (
        lenient.pairs)


def test_a_folder_of_another_distillation_or_a_wrong_teacher_is_refused(
        small_config, trained_run: Path, tmp_path: Path) -> None:
    distill(small_config, [_teacher(trained_run)], tmp_path / "out")
    with pytest.raises(UsageError, match="holds a different distillation .*filters"):
        distill(small_config, [_teacher(trained_run)], tmp_path / "out",
                filters=DistillFilters(min_chrf=10.0))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a distillation folder"):
        distill(small_config, [_teacher(trained_run)], tmp_path / "other")
    reverse = _yaml(trained_run)
    reverse["data"].update(src_lang="de", tgt_lang="en", train=str(small_config.data.train[0]
                                                                   .path))
    reversed_config = load_config(write_config(tmp_path / "reverse.yaml", reverse))
    with pytest.raises(UsageError, match="translates en→de, but the config's corpus is de→en"):
        distill(reversed_config, [_teacher(trained_run)], tmp_path / "reverse")


def test_the_command_line_distils_and_names_bad_input_in_one_line(
        small_config, trained_run: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "student.yaml"
    run_dir = str(load_config(trained_run).run_dir)
    result = runner.invoke(app, ["distill", str(config_path), "--teacher", run_dir,
                                 "--output", str(tmp_path / "cli"), "--beam", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "distill.json").read_text())["search"][
        "beam_size"] == 2
    assert "dropped: low chrF" in result.stderr and "source lines" in result.stderr
    result = runner.invoke(app, ["distill", str(config_path), "--teacher",
                                 str(tmp_path / "nothing"), "--output", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "is not a run directory" in result.stderr
