"""Decoding modes as a user meets them: ensembles, a forced target prefix and terminology
constraints, through the translator and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.translation.translator import ModelRef, Translator, load_translator

runner = CliRunner()
LINES = "The dog sees a cat.\nA man.\nThe old woman has a small house.\n"


def test_an_ensemble_of_a_run_with_itself_translates_and_scores_as_the_run(
        trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    alone = runner.invoke(app, ["translate", str(trained_run), "--nbest", "2"], input=LINES)
    twice = runner.invoke(app, ["translate", str(trained_run), "--nbest", "2",
                                "--model", f"{run_dir}:best", "--weights", "1,3"], input=LINES)
    assert alone.exit_code == 0 and twice.exit_code == 0, twice.output
    for mine, theirs in zip(twice.stdout.splitlines(), alone.stdout.splitlines()):
        mine_fields, their_fields = mine.split("\t"), theirs.split("\t")
        assert mine_fields[0::2] == their_fields[0::2]
        assert [float(x) for x in mine_fields[1::2]] == pytest.approx(
            [float(x) for x in their_fields[1::2]], abs=1e-4)


def test_evaluate_an_ensemble_with_the_averaged_checkpoint_as_a_member(
        trained_run: Path) -> None:
    """The mean of two distributions has a loss at most the mean of theirs (log is
    concave): the ensemble's validation loss is checked against its members'."""
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "last,avg"])
    assert result.exit_code == 0, result.output
    losses = [json.loads((run_dir / "eval" / f"valid.{name}.json").read_text())["loss"]
              for name in ("last", "avg")]
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "last", "--model", f"{run_dir}:avg",
                                 "--alignment", "hard"])
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "eval" / "valid.ensemble.json").read_text())
    assert [Path(path).name for path in record["models"]] == ["last.pt", "avg.pt"]
    assert record["loss"] <= sum(losses) / 2 + 1e-6 and losses[0] != losses[1]
    hypotheses = (run_dir / "eval" / "valid.ensemble.hyp").read_text().splitlines()
    alignments = (run_dir / "eval" / "valid.ensemble.align").read_text().splitlines()
    assert len(hypotheses) == len(alignments) == 60
    result = runner.invoke(app, ["evaluate", str(trained_run), "--checkpoint", "best,last",
                                 "--model", f"{run_dir}:avg"])
    assert result.exit_code == 2 and "one ensemble with one --checkpoint" in result.stderr


def test_ensemble_members_must_share_the_vocabularies(trained_run: Path,
                                                      copy_translator: Translator) -> None:
    other = copy_translator.loaded.path
    assert other is not None
    result = runner.invoke(app, ["translate", str(trained_run), "--model",
                                 f"{other.parent}:{other}"], input="A man.\n")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "different target vocabularies" in result.stderr
    assert str(other) in result.stderr and "best.pt" in result.stderr


@pytest.mark.parametrize("arguments,message", [
    (["--weights", "1,0"], "--weights 1,0: expected positive numbers"),
    (["--weights", "1,2,3"], "3 ensemble weights for 2 models"),
    (["--model", "nowhere:best"], "--model nowhere:best: nowhere is not a run directory"),
])
def test_bad_ensemble_options_are_one_line_errors(trained_run: Path, arguments: list[str],
                                                  message: str) -> None:
    run_dir = load_config(trained_run).run_dir
    given = arguments if "--model" in arguments else ["--model", str(run_dir), *arguments]
    result = runner.invoke(app, ["translate", str(trained_run), *given], input="A man.\n")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_model_refs_name_a_checkpoint_or_default_to_best(tmp_path: Path) -> None:
    assert ModelRef.parse(str(tmp_path)) == ModelRef(tmp_path, "best")
    assert ModelRef.parse(f"{tmp_path}:avg") == ModelRef(tmp_path, "avg")


def test_an_ensemble_translator_describes_its_members(trained_run: Path) -> None:
    run_dir = load_config(trained_run).run_dir
    translator = load_translator(run_dir, "best", device="cpu",
                                 ensemble=[ModelRef(run_dir, "last")], weights=[2.0, 1.0])
    assert translator.description.startswith("ensemble (prob) of ")
    assert "best.pt" in translator.description and "last.pt" in translator.description
