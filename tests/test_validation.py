"""One validation for everyone: training picks checkpoints by the numbers `evaluate` reports."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import sacrebleu
import torch
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.data.store import text_path
from s2s.rundir import RunDir
from s2s.translation.translator import Translator
from tests.conftest import config_dict, write_config

runner = CliRunner()
FULL_WIDTH_E = "\uff45"  # NFKC folds it to "e", as it does all full-width Latin letters


def test_training_validation_scores_equal_evaluate_where_normalisation_changes_references(
        demo_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    for split in ("train", "valid", "test"):  # German typed with some full-width letters
        path = corpus / f"{split}.de"
        path.write_text(path.read_text(encoding="utf-8").replace("e", FULL_WIDTH_E),
                        encoding="utf-8")
    config_path = write_config(tmp_path / "config.yaml", config_dict(
        corpus, tmp_path / "run", data={"normalization": "nfkc"},
        train={"max_steps": 60, "valid_every": 30, "valid_beam_size": 2},
        # rules of the config's search that validation must keep, as translate keeps them
        decode={"length_penalty": "average", "max_len_a": 1.2, "no_repeat_ngram": 3}))
    for command in (["prepare"], ["train"]):
        result = runner.invoke(app, [*command, str(config_path)])
        assert result.exit_code == 0, result.output
    run = RunDir(load_config(config_path).run_dir)
    normalised = text_path(run.data, "valid", "tgt").read_text(encoding="utf-8").splitlines()
    distributed = (corpus / "valid.de").read_text(encoding="utf-8").splitlines()
    assert normalised != distributed  # the premise: normalisation changed the references

    validation = [r for r in run.read_metrics() if r["kind"] == "valid"][-1]
    assert validation["step"] == 60
    result = runner.invoke(app, ["evaluate", str(config_path), "--split", "valid",
                                 "--checkpoint", "last", "--beam", "2"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(run.eval_file("valid", "last", ".json").read_text())
    assert evaluated["checkpoint_step"] == 60
    for metric in ("bleu", "chrf", "loss"):
        assert evaluated[metric] == validation[metric], metric
    # ... and both score against the references as distributed, not the normalised ones
    hypotheses = run.eval_file("valid", "last", ".hyp").read_text(encoding="utf-8").splitlines()
    assert evaluated["chrf"] == sacrebleu.corpus_chrf(hypotheses, [distributed]).score
    assert evaluated["chrf"] < sacrebleu.corpus_chrf(hypotheses, [normalised]).score - 1.0


def test_metrics_log_is_trimmed_to_a_step_and_skips_a_half_written_line(tmp_path: Path
                                                                         ) -> None:
    run = RunDir(tmp_path)
    assert run.read_metrics() == []
    for step in (10, 20, 30):
        run.append_metrics({"kind": "train", "step": step, "text": "naïve 中文"})
    run.trim_metrics(20)
    assert [record["step"] for record in run.read_metrics()] == [10, 20]
    with open(run.metrics, "a", encoding="utf-8") as stream:
        stream.write('{"kind": "valid", "st')  # a writer caught mid-line
    assert [record["step"] for record in run.read_metrics()] == [10, 20]
    assert run.read_metrics()[0]["text"] == "naïve 中文"


@pytest.mark.slow
def test_attention_direction_tells_a_model_that_reads_forwards_from_one_that_reads_back(
        copy_translator: Translator, reversal_translator: Translator) -> None:
    """A model that copies attends along the diagonal (+1); one that reverses its input
    along the other diagonal (-1), as the failed starts of BENCHMARKS.md's "Attention that
    runs backwards" did on a task that needs no reversal."""
    from s2s.data.store import EncodedSide, EncodedSplit
    from s2s.evaluation.validation import BACKWARDS, attention_direction
    from tests.tasks import LIMIT, copy, reverse, sentence

    chance = random.Random(9)
    lines = [sentence(chance, LIMIT - 1, full_stop=False) for _ in range(64)]
    directions = []
    for translator, task in ((copy_translator, copy), (reversal_translator, reverse)):
        tokenizer = translator.loaded.src_tokenizer
        split = EncodedSplit(EncodedSide.from_lists(tokenizer.encode(lines), len(tokenizer)),
                             EncodedSide.from_lists(tokenizer.encode([task(line)
                                                                      for line in lines]),
                                                    len(tokenizer)))
        directions.append(attention_direction(translator.loaded.model, split,
                                              torch.device("cpu")))
    forwards, backwards = directions
    assert forwards is not None and forwards > 0.8
    assert backwards is not None and backwards < -0.4 < BACKWARDS


def test_training_says_so_when_its_attention_runs_backwards(
        demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each validation logs the attention's direction; a backwards one is a warning in the
    progress output, naming what to do."""
    monkeypatch.setattr("s2s.training.loop.attention_direction", lambda *args: -0.62)
    config_path = write_config(tmp_path / "config.yaml", config_dict(
        demo_corpus, tmp_path / "run", train={"max_steps": 20, "valid_every": 10}))
    for command in (["prepare"], ["train"]):
        result = runner.invoke(app, [*command, str(config_path)])
        assert result.exit_code == 0, result.output
    assert "step 10: the attention runs backwards (direction -0.62" in result.output
    assert "train.seed" in result.output and "guided_attention_steps" in result.output
    run = RunDir(load_config(config_path).run_dir)
    records = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["attention_direction"] for r in records if r["kind"] == "valid"] == [-0.62, -0.62]
