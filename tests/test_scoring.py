"""Scoring as published tables do it: several references, lowercased BLEU, Moses-tokenised
text; and test sets written the Moses way turned back into plain text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sacrebleu
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import ConfigError, config_from_dict, load_config
from s2s.data.moses import moses_tokens, plain_text
from s2s.evaluation.scoring import Scorer
from s2s.evaluation.significance import paired_significance
from tests.conftest import config_dict

runner = CliRunner()


def test_plain_text_undoes_moses_tokenisation_escaping_and_truecasing() -> None:
    assert plain_text("i &apos;ll get my sweater . ", "en") == "I'll get my sweater."
    assert plain_text("no problems . it &apos;s all taken care of .", "en") == (
        "No problems. it's all taken care of.")
    assert plain_text("hello , Mrs. Ross . woo @-@ hoo !", "en") == "Hello, Mrs. Ross. woo-hoo!"
    assert plain_text("he said &quot; no &quot; .", "en") == 'He said "no".'
    assert plain_text("", "en") == ""


def test_moses_tokens_split_as_tokenizer_perl_dash_a() -> None:
    assert moses_tokens("I'll get my sweater.", "en") == "I 'll get my sweater ."
    assert moses_tokens("Woo-hoo! Don't.", "en") == "Woo @-@ hoo ! Don 't ."
    assert moses_tokens("it&apos;s", "en") == "it 's"


def test_several_references_and_lowercase_score_as_sacrebleu_does() -> None:
    hypotheses = ["The cat sat on the mat.", "A dog barks loudly."]
    references = [["the cat sat on a mat.", "a dog barks."],
                  ["there is a cat on the mat.", "a dog is barking loudly."]]
    scores = Scorer("en", "13a", lowercase=True).score(hypotheses, references)
    expected = sacrebleu.corpus_bleu(hypotheses, references, lowercase=True)
    assert scores.bleu == pytest.approx(expected.score) and scores.bleu > 0
    single = Scorer("en", "13a", lowercase=True).score(hypotheses, references[:1])
    assert single.bleu < scores.bleu  # a second reference can only match more n-grams
    assert scores.signatures["bleu"].startswith("nrefs:2|case:lc")
    cased = Scorer("en", "13a").score(hypotheses, references)
    assert cased.bleu < scores.bleu and scores.tokenized_bleu is None


def test_tokenized_bleu_compares_moses_tokens_with_tokenised_references() -> None:
    """The published metric: a perfect detokenised hypothesis scores 100 against the
    lowercased, tokenised reference it came from; 13a on raw text would not."""
    hypotheses = ["I'll get my sweater.", "Don't go, Ross."]
    references = [["i 'll get my sweater .", "don 't go , ross ."]]
    scorer = Scorer("en", "13a", lowercase=True, moses_references=True, tokenized_bleu=True)
    scores = scorer.score(hypotheses, references)
    assert scores.tokenized_bleu == pytest.approx(100.0)
    assert scores.bleu == pytest.approx(100.0)  # references detokenised for sacreBLEU
    raw = sacrebleu.corpus_bleu(hypotheses, references, lowercase=True).score
    assert raw < 60.0
    assert "moses-tokenized" in scores.signatures["tokenized_bleu"]


def test_significance_takes_several_references() -> None:
    references = [[f"the dog number {i} runs home" for i in range(60)],
                  [f"a dog called {i} runs to the house" for i in range(60)]]
    baseline = [f"the cat {i}" for i in range(60)]
    better = [f"the dog number {i} runs to the house" for i in range(60)]
    tested = paired_significance([("base", baseline), ("better", better)], references,
                                 Scorer("en", "13a"), "bs")
    assert tested[1].bleu.score == pytest.approx(
        sacrebleu.corpus_bleu(better, references).score)
    assert tested[1].bleu.p_value < 0.01


def test_list_settings_are_checked_and_named(tmp_path: Path) -> None:
    raw = config_dict(tmp_path / "corpus", tmp_path / "run",
                      data={"moses_tokenized": "en", "test_references": ["a.ref0", "a.ref1"]})
    config = config_from_dict(raw)
    assert config.data.moses_tokenized == ("en",)
    assert [path.name for path in config.data.test_references] == ["a.ref0", "a.ref1"]
    raw["data"]["valid_references"] = ["ok", 3]
    with pytest.raises(ConfigError, match=r"data\.valid_references\[1\]: expected a non-empty"):
        config_from_dict(raw)


@pytest.mark.slow
def test_evaluate_with_moses_test_set_and_three_references(trained_run: Path,
                                                           tmp_path: Path) -> None:
    """A run whose test set is written the Moses way: its sources reach the model as plain
    text, and the three references are all scored."""
    config = load_config(trained_run)
    run_dir = tmp_path / "run"  # a copy: the shared run stays as it is
    shutil.copytree(config.run_dir, run_dir)
    corpus = tmp_path / "moses"
    corpus.mkdir()
    sources = Path(f"{config.data.test}.en").read_text(encoding="utf-8").splitlines()[:40]
    targets = Path(f"{config.data.test}.de").read_text(encoding="utf-8").splitlines()[:40]
    tokenized = [moses_tokens(line, "en").lower().replace("'", "&apos;") for line in sources]
    (corpus / "test.en").write_text("".join(f"{line}\n" for line in tokenized), "utf-8")
    (corpus / "test.de").write_text("".join(f"{line}\n" for line in targets), "utf-8")
    refs = []
    for index in range(3):
        ref = corpus / f"test.ref{index}"
        ref.write_text("".join(f"{line}\n" for line in (targets if index == 0 else sources)),
                       "utf-8")
        refs.append(str(ref))
    overrides = ["--set", f"run_dir={run_dir}", "--set", "data.moses_tokenized=[en]",
                 "--set", f"data.test={corpus}/test",
                 "--set", f"data.test_references=[{','.join(refs)}]"]
    result = runner.invoke(app, ["prepare", str(trained_run), *overrides])
    assert result.exit_code == 0, result.output
    prepared = (run_dir / "data" / "test.src.txt").read_text("utf-8").splitlines()
    assert prepared[0] == sources[0]  # detokenised and recased back to the original line
    result = runner.invoke(app, ["evaluate", str(trained_run), *overrides])
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "eval" / "test.best.json").read_text())
    hypotheses = (run_dir / "eval" / "test.best.hyp").read_text("utf-8").splitlines()
    references = [Path(ref).read_text("utf-8").splitlines() for ref in refs]
    assert record["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, references).score)
    assert record["signatures"]["bleu"].startswith("nrefs:3")
