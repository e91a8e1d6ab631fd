"""The command line as a user meets it: help, errors without tracebacks, the whole pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import yaml
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.rundir import RunDir
from s2s.translation.translator import load_translator
from tests.conftest import TEST_THREADS, config_dict, write_config

runner = CliRunner()


def test_help_lists_the_commands_without_importing_torch() -> None:
    code = ("import sys; from s2s.cli import app; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "evaluate", "translate"):
        assert command in result.output


def test_version_and_help_without_placeholders() -> None:
    from s2s import __version__
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"s2s {__version__}\n"
    for command in ("prepare", "train", "evaluate", "translate", "average", "demo-data"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        options = result.output.split("Options:")[1]
        assert "<" not in options, options  # no <list[str]>, <int>, <bool> placeholders
    assert "--set KEY=VALUE" in runner.invoke(app, ["train", "--help"]).output


def test_command_line_options_are_named_in_errors(trained_run: Path) -> None:
    result = runner.invoke(app, ["translate", str(trained_run), "--nbest", "3", "--beam", "2"],
                           input="x\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --nbest 3: decode.nbest: 3 is larger than "
                                    "decode.beam_size (2)")
    run_dir = trained_run.parent / "run"
    result = runner.invoke(app, ["translate", "--run", str(run_dir), "--set", "train.lr=fast"],
                           input="x\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --set train.lr=fast: train.lr: expected a number")


def test_a_new_run_dir_from_set_says_to_prepare_with_the_same_set(trained_run: Path,
                                                                  tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(trained_run), "--set",
                                 f"run_dir={tmp_path / 'other'}"])
    assert result.exit_code == 2
    assert "no prepared data; run `s2s prepare` with this config (and the same --set " \
           "options) first" in result.stderr


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, tmp_path / "run", model={"decoder_hiden": 64})
    path = write_config(tmp_path / "bad.yaml", raw)
    result = runner.invoke(app, ["prepare", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {path}: model.decoder_hiden: unknown key — "
                             "did you mean decoder_hidden?\n")
    assert "Traceback" not in result.output


def test_bad_override_and_missing_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path, tmp_path / "run"))
    result = runner.invoke(app, ["train", str(path), "--set", "train.lr=-1"])
    assert result.exit_code == 2
    assert result.stderr == ("error: --set train.lr=-1: train.lr: must be greater than 0.0, "
                             "got -1.0\n")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: config file not found\n"


def test_data_error_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path / "missing", tmp_path / "run"))
    result = runner.invoke(app, ["prepare", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "data file not found" in result.stderr


@pytest.mark.slow
def test_whole_pipeline_through_the_cli(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    result = runner.invoke(app, ["demo-data", str(corpus)])
    assert result.exit_code == 0, result.output
    assert len((corpus / "train.en").read_text(encoding="utf-8").splitlines()) == 12000
    # 300 steps learn the demo grammar: test BLEU 87 (at 150 steps it is still near 1)
    raw = config_dict(corpus, tmp_path / "run", train={
        "max_steps": 300, "valid_every": 150, "lr": 0.01, "batch_tokens": 2000})
    path = write_config(tmp_path / "c.yaml", raw)
    for command in (["prepare", str(path)], ["train", str(path), "--set", "train.keep_last=4"],
                    ["evaluate", str(path), "--checkpoint", "best,last"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    scores = json.loads((tmp_path / "run" / "eval" / "test.best.json").read_text())
    assert scores["sentences"] == 500 and scores["bleu"] > 60.0
    # the run's config.yaml is what training ran with, its --set included
    assert load_config(tmp_path / "run" / "config.yaml").train.keep_last == 4
    assert scores["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    lines = ["A dog sees a cat.", "", "The man."]
    result = runner.invoke(app, ["translate", str(path)], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    config = load_config(path)
    library = load_translator(config.run_dir, decode=config.decode, device="cpu")
    assert result.stdout.split("\n") == [r.text for r in library.translate(lines)] + [""]
    assert result.stdout.split("\n")[1] == "" and "Hund" in result.stdout


def test_evaluate_reproduces_sacrebleu_on_its_hypothesis_file(trained_run: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid", "--ter"])
    assert result.exit_code == 0, result.output
    run_dir = trained_run.parent / "run"
    hypotheses = (run_dir / "eval" / "valid.best.hyp").read_text(encoding="utf-8").splitlines()
    config = load_config(trained_run)
    references = Path(f"{config.data.valid}.de").read_text(encoding="utf-8").splitlines()
    record = json.loads((run_dir / "eval" / "valid.best.json").read_text())
    assert record["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert record["chrf"] == sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert record["ter"] is not None and record["decode"]["beam_size"] == 3


def test_evaluate_external_files_and_usage_errors(trained_run: Path, tmp_path: Path) -> None:
    src, ref = tmp_path / "x.en", tmp_path / "x.de"
    src.write_text("The dog sees a cat.\nA woman.\n", encoding="utf-8")
    ref.write_text("Der Hund sieht eine Katze.\nEine Frau.\n", encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(trained_run), "--src", str(src),
                                 "--ref", str(ref)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(trained_run), "--src", str(src)])
    assert result.exit_code == 2 and "--src and --ref go together" in result.stderr


def test_evaluate_scores_against_the_references_as_distributed(trained_run: Path,
                                                               tmp_path: Path) -> None:
    src, ref = tmp_path / "x.en", tmp_path / "x.de"
    src.write_text("The dog.\n", encoding="utf-8")
    ref.write_text("Der Hund\uff01\n", encoding="utf-8")  # full-width "!" that NFKC would change
    result = runner.invoke(app, ["evaluate", str(trained_run), "--src", str(src), "--ref",
                                 str(ref)])
    assert result.exit_code == 0, result.output
    run_dir = trained_run.parent / "run"
    hypothesis = (run_dir / "eval" / "x.en.best.hyp").read_text(encoding="utf-8").splitlines()
    record = json.loads((run_dir / "eval" / "x.en.best.json").read_text())
    assert record["bleu"] == sacrebleu.corpus_bleu(hypothesis, [["Der Hund\uff01"]]).score


def test_evaluate_and_translate_decode_as_the_config_and_set_say(trained_run: Path,
                                                                 tmp_path: Path) -> None:
    """The config's decode section and --set win over the settings stored at training."""
    config = yaml.safe_load(trained_run.read_text(encoding="utf-8"))
    config["decode"] = {"beam_size": 2, "nbest": 2, "length_penalty": "none"}
    edited = write_config(tmp_path / "edited.yaml", config)
    result = runner.invoke(app, ["evaluate", str(edited), "--split", "valid",
                                 "--set", "decode.max_len_b=3"])
    assert result.exit_code == 0, result.output
    record = json.loads((trained_run.parent / "run" / "eval" / "valid.best.json").read_text())
    assert record["decode"]["beam_size"] == 2 and record["decode"]["max_len_b"] == 3
    assert record["decode"]["length_penalty"] == "none"
    result = runner.invoke(app, ["translate", str(edited)], input="The dog sees a cat.\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.rstrip("\n").split("\t")) == 4  # nbest 2 from the config


def test_validation_bleu_during_training_equals_evaluate_on_that_checkpoint(
        trained_run: Path) -> None:
    """Validation decodes with the weights as they are at that step, as evaluate later does."""
    run_dir = trained_run.parent / "run"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_validation = [r for r in records if r["kind"] == "valid"][-1]
    assert last_validation["step"] == 150  # the step of last.pt
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "last", "--beam", "1"])  # valid_beam_size
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "eval" / "valid.last.json").read_text())
    assert record["bleu"] == pytest.approx(last_validation["bleu"], abs=1e-9)
    assert last_validation["bleu"] > 0.0


def test_evaluate_and_translate_take_threads_from_the_config_and_set(
        trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    counts: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (counts.append(n), real(n)))
    result = runner.invoke(app, ["translate", str(trained_run), "--set", "train.threads=1"],
                           input="The dog.\n")
    assert result.exit_code == 0, result.output
    assert counts[:1] == [1] and torch.get_num_threads() == TEST_THREADS  # restored after
    counts.clear()
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--set", "train.threads=3"])
    assert result.exit_code == 0, result.output
    assert counts[:1] == [3]


def test_evaluate_alignment_file_has_a_line_per_translation(trained_run: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--alignment", "hard"])
    assert result.exit_code == 0, result.output
    run = RunDir(load_config(trained_run).run_dir)
    hypotheses = run.eval_file("valid", "best", ".hyp").read_text(encoding="utf-8")
    alignments = run.eval_file("valid", "best", ".align").read_text(encoding="utf-8")
    sources = (run.data / "valid.src.txt").read_text(encoding="utf-8").splitlines()
    assert len(alignments.splitlines()) == len(hypotheses.splitlines()) == len(sources)
    for source, hypothesis, links in zip(sources, hypotheses.splitlines(),
                                         alignments.splitlines()):
        pairs = [tuple(map(int, link.split("-"))) for link in links.split()]
        assert [t for _, t in pairs] == list(range(len(hypothesis.split())))
        assert all(0 <= s < len(source.split()) for s, _ in pairs)


def test_restart_under_torchrun_asks_for_yes_rather_than_asking_every_process(
        demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(demo_corpus, tmp_path / "run"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["train", str(path), "--restart"])
    assert result.exit_code == 2
    assert "--restart under torchrun needs --yes" in result.output
