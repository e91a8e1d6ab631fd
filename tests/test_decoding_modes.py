"""Decoding modes as a user meets them: ensembles, a forced target prefix and terminology
constraints, through the translator and the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_config
from s2s.translation.terms import LineTerms, TermsError, parse_terms_line
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


def _other_vocabulary_checkpoint(directory: Path) -> Path:
    """An untrained model with a vocabulary of its own (34 pieces of a word task)."""
    import random

    from s2s.config import VocabConfig, config_from_dict
    from s2s.data.vocab import Tokenizer, train_sentencepiece
    from s2s.model.seq2seq import Seq2Seq
    from s2s.run.checkpoint import LoadedModel, save_model
    from tests.conftest import config_dict
    from tests.tasks import sentence

    config = config_from_dict(config_dict(directory, directory / "run", data={
        "src_lang": "aa", "tgt_lang": "bb"}))
    chance = random.Random(1)
    train_sentencepiece([sentence(chance) for _ in range(500)], directory / "spm.model", 34,
                        VocabConfig(src_size=34, tgt_size=34, byte_fallback=False,
                                    character_coverage=1.0))
    tokenizer = Tokenizer.from_file(directory / "spm.model")
    model = Seq2Seq(config.model, len(tokenizer), len(tokenizer))
    save_model(LoadedModel(config, model, tokenizer, tokenizer, step=0), directory / "other.pt")
    return directory / "other.pt"


def test_ensemble_members_must_share_the_vocabularies(trained_run: Path, tmp_path: Path
                                                      ) -> None:
    other = _other_vocabulary_checkpoint(tmp_path)
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


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return load_translator(load_config(trained_run).run_dir, "best",
                           overrides=("decode.beam_size=4",), device="cpu")


def test_translate_with_a_prefix_starts_every_hypothesis_with_it_exactly(
        trained_run: Path) -> None:
    """A prefix that ends in a space is continued with a new word; one that ends inside a
    word may be continued inside it; characters outside the vocabulary are spelled in bytes."""
    lines = ["The dog sees a cat.\tDer Hund", "A man.\tEin ", "The old woman.\tDie al",
             "A cat.\tEine ☃ Katze", "The dog.\t"]
    result = runner.invoke(app, ["translate", str(trained_run), "--prefix", "--beam", "3",
                                 "--nbest", "3"], input="".join(f"{x}\n" for x in lines))
    assert result.exit_code == 0, result.output
    outputs = result.stdout.splitlines()
    assert len(outputs) == len(lines)
    for line, output in zip(lines, outputs):
        prefix = line.split("\t")[1]
        texts = output.split("\t")[0::2]
        assert len(texts) == 3 and all(text.startswith(prefix) for text in texts), output
        if prefix.endswith(" "):
            assert all(not text[len(prefix):].startswith(" ") for text in texts)
    plain = runner.invoke(app, ["translate", str(trained_run), "--beam", "3"],
                          input="The dog.\n")
    assert outputs[-1].split("\t")[0] == plain.stdout.strip()  # an empty prefix: as without


def _words(text: str) -> list[str]:
    return [word.strip(".,") for word in text.split() if word.strip(".,")]


def test_every_translation_contains_every_constraint(trained_run: Path,
                                                     translator: Translator) -> None:
    """One or two phrases per line, of one or two words drawn at random from the references
    (mostly not what the model would write there)."""
    import random
    config = load_config(trained_run)
    sources = Path(f"{config.data.test}.en").read_text(encoding="utf-8").splitlines()
    references = Path(f"{config.data.test}.de").read_text(encoding="utf-8").splitlines()
    chance = random.Random(4)
    vocabulary = sorted({word for line in references for word in _words(line)})
    terms = []
    for _ in sources:
        phrases = []
        for _ in range(chance.randint(1, 2)):
            start = chance.randrange(len(vocabulary))
            phrases.append(" ".join(vocabulary[start:start + chance.randint(1, 2)]))
        terms.append(LineTerms(constraints=tuple(phrases)))
    results = translator.translate(sources, terms=terms)
    plain = translator.translate(sources)
    assert sum(result.text != other.text for result, other in zip(results, plain)) > 40
    for result, line_terms in zip(results, terms):
        for text in result.texts:  # each phrase whole: its last word not continued
            assert all(re.search(re.escape(phrase) + r"(?!\w)", text)
                       for phrase in line_terms.constraints), (text, line_terms)


def test_constraints_of_a_line_split_for_length_reach_its_translation(
        translator: Translator) -> None:
    line = " ".join(["The dog sees a small cat in the old house."] * 12)
    assert len(translator.encode_source(line)) > translator.max_tokens
    phrases = ("Haus Katze", "Frau", "Mann sieht")
    [result] = translator.translate([line], terms=[LineTerms("Die ", phrases)])
    assert result.text.startswith("Die ")
    assert all(phrase in result.text for phrase in phrases), result.text


@pytest.mark.parametrize("line,message", [
    ("A man.\tEin Mann\t", "line 2: constraint 1 is empty"),
    ("A man.\tx\ta\tb\tc\td\te", "line 2: 5 constraints, more than the beam holds "
                                 "(decode.beam_size 4)"),
    ("A man.\t" + "Hund " * 40, "line 2: the prefix and constraints take"),
])
def test_terms_that_cannot_be_kept_are_line_errors_and_n_lines_still_come_out(
        trained_run: Path, line: str, message: str) -> None:
    text = f"The dog.\tDer\n{line}\nA cat.\tEine\n"
    result = runner.invoke(app, ["translate", str(trained_run), "--beam", "4", "--prefix",
                                 "--constraints"], input=text)
    assert result.exit_code == 2
    outputs = result.stdout.split("\n")[:-1]
    assert len(outputs) == 3 and outputs[1] == "" and outputs[0].startswith("Der")
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and message in errors[0], result.stderr
    assert "1 of 3 lines not translated" in errors[1]


def test_terms_lines_parse_as_documented() -> None:
    assert parse_terms_line("a\tb\tc", prefix=True, constraints=True, number=1) == (
        "a", LineTerms("b", ("c",)))
    assert parse_terms_line("a\tb\tc", prefix=False, constraints=True, number=1) == (
        "a", LineTerms("", ("b", "c")))
    assert parse_terms_line("a", prefix=True, constraints=False, number=1) == ("a", LineTerms())
    with pytest.raises(TermsError, match="line 7: 3 tab-separated fields"):
        parse_terms_line("a\tb\tc", prefix=True, constraints=False, number=7)


def test_an_ensemble_splits_long_lines_and_aligns_as_its_single_model(
        trained_run: Path, translator: Translator) -> None:
    run_dir = load_config(trained_run).run_dir
    twice = load_translator(run_dir, "best", overrides=("decode.beam_size=4",), device="cpu",
                            ensemble=[ModelRef(run_dir, "best")])
    line = " ".join(["The dog sees a small cat in the old house."] * 12)
    lines = [line, "A man.", ""]
    [alone, short, empty] = translator.translate(lines, with_attention=True)
    [mine, my_short, my_empty] = twice.translate(lines, with_attention=True)
    assert mine.texts == alone.texts and my_short.texts == short.texts and my_empty.texts == []
    assert mine.alignments[0].hard() == alone.alignments[0].hard()
    assert mine.alignments[0].words == pytest.approx(alone.alignments[0].words, abs=1e-5)


def test_evaluate_tests_checkpoints_against_a_baseline_file(trained_run: Path) -> None:
    """Against a baseline that lost half its lines, the checkpoint is
    significantly better; the same output as the baseline is no different (p = 1)."""
    run_dir = load_config(trained_run).run_dir
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "best"])
    assert result.exit_code == 0, result.output
    hypotheses = (run_dir / "eval" / "valid.best.hyp").read_text(encoding="utf-8").splitlines()
    worse = run_dir / "worse.hyp"
    worse.write_text("".join(("" if n % 2 else line) + "\n"
                             for n, line in enumerate(hypotheses)), encoding="utf-8")
    same = run_dir / "same.hyp"
    same.write_text("".join(line + "\n" for line in hypotheses), encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "best,last", "--baseline", str(worse)])
    assert result.exit_code == 0, result.output
    assert "significance against baseline worse.hyp" in result.stderr
    best = json.loads((run_dir / "eval" / "valid.best.json").read_text())["significance"]
    # (this tiny model's BLEU is near 0: chrF tells)
    assert best["baseline"] == "baseline worse.hyp" and best["chrf"]["p_value"] < 0.05
    assert best["test"] == "paired bootstrap resampling" and best["chrf"]["ci95"] > 0
    assert "bs:1000" in best["signatures"]["bleu"]
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--baseline", str(same)])
    assert result.exit_code == 0, result.output
    best = json.loads((run_dir / "eval" / "valid.best.json").read_text())["significance"]
    assert best["bleu"]["p_value"] == best["chrf"]["p_value"] == 1.0
    result = runner.invoke(app, ["evaluate", str(trained_run), "--split", "valid",
                                 "--checkpoint", "best,last", "--significance", "ar"])
    assert result.exit_code == 0, result.output
    last = json.loads((run_dir / "eval" / "valid.last.json").read_text())["significance"]
    assert last["test"] == "approximate randomisation" and last["bleu"]["ci95"] is None


@pytest.mark.parametrize("arguments,message", [
    (["--significance", "t"], "--significance t: choose bs"),
    (["--baseline", "missing.hyp"], "--baseline missing.hyp: cannot read it"),
])
def test_bad_significance_options(trained_run: Path, arguments: list[str], message: str
                                  ) -> None:
    result = runner.invoke(app, ["evaluate", str(trained_run), *arguments])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_paired_tests_find_a_real_difference_and_not_a_one_line_one() -> None:
    import random

    from s2s.evaluation.scoring import Scorer
    from s2s.evaluation.significance import paired_significance
    chance = random.Random(2)
    words = "the a dog cat man woman sees runs old small house tree red blue".split()
    references = [" ".join(chance.choice(words) for _ in range(8)) for _ in range(300)]
    def damaged(share: float) -> list[str]:
        return [" ".join(r.split()[:4]) if chance.random() < share else r for r in references]
    baseline, better = damaged(0.5), damaged(0.3)
    one_line = list(baseline)
    one_line[0] = references[0]
    for test in ("bs", "ar"):
        results = paired_significance([("base", baseline), ("better", better),
                                       ("one line", one_line)], [references],
                                      Scorer("en", "13a"), test)
        assert [r.system for r in results] == ["base", "better", "one line"]
        assert results[0].bleu.p_value is None and results[1].bleu.score > results[0].bleu.score
        assert results[1].bleu.p_value < 0.01 and results[1].chrf.p_value < 0.01
        if test == "bs":  # (approximate randomisation of a one-line change is degenerate)
            assert results[2].bleu.p_value > 0.05
            assert abs(results[1].bleu.mean - results[1].bleu.score) < results[1].bleu.ci
