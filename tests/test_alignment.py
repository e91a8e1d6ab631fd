"""Word alignments from attention: formats, and that they point where the task says."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s2s.cli import app
from s2s.translation.alignment import (
    hard_alignment,
    piece_words,
    word_matrix,
    word_spans,
)
from s2s.translation.output import OutputFormat
from s2s.translation.translator import Translator
from tests.tasks import LIMIT, reverse, sentence

runner = CliRunner()


def _links(translator: Translator, lines: list[str]) -> list[tuple[list[tuple[int, int]], int,
                                                                    int, str]]:
    """Per line: the hard links, the source and target word counts, the translation."""
    found, hard = [], OutputFormat(alignment="hard")
    for line, result in zip(lines, translator.translate(lines, with_attention=True)):
        pairs = [tuple(map(int, link.split("-"))) for link in hard.alignment_text(result).split()]
        found.append((pairs, len(line.split()), len(result.text.split()), result.text))
    return found


def _chance_lines(translator: Translator, count: int, seed: int, full_stop: bool
                  ) -> list[str]:
    """Lines within the models' limit: a longer one would be translated in pieces."""
    chance, lines = random.Random(seed), []
    while len(lines) < count:
        line = sentence(chance, 8, full_stop)
        if len(translator.encode_source(line)) <= LIMIT:
            lines.append(line)
    return lines


@pytest.mark.slow
def test_a_copy_model_aligns_on_the_diagonal(copy_translator: Translator) -> None:
    on_diagonal = total = 0
    for pairs, _, _, _ in _links(copy_translator, _chance_lines(copy_translator, 40, 1, True)):
        on_diagonal += sum(source == target for source, target in pairs)
        total += len(pairs)
    assert on_diagonal / total >= 0.9


@pytest.mark.slow
def test_a_reversal_model_aligns_on_the_anti_diagonal(reversal_translator: Translator) -> None:
    lines = _chance_lines(reversal_translator, 40, 2, full_stop=False)
    exact, mirrored, total, correlations = 0, 0, 0, []
    for line, (pairs, source_words, target_words, text) in zip(
            lines, _links(reversal_translator, lines)):
        exact += text == reverse(line)
        mirrored += sum(source == source_words - 1 - target for source, target in pairs)
        total += len(pairs)
        if len(pairs) >= 3:
            correlations.append(np.corrcoef(*zip(*pairs))[0, 1])
    assert exact / len(lines) >= 0.8  # it learned the task ...
    assert mirrored / total >= 0.9  # ... and looks where the task says
    assert np.mean(correlations) <= -0.9


@pytest.mark.slow
def test_links_stay_inside_both_sentences_and_cover_every_target_word(
        copy_translator: Translator) -> None:
    lines = _chance_lines(copy_translator, 30, 3, True) + ["red fox. " * 12, "",
                                                    "unknown ünïcödé words 中文"]
    for pairs, source_words, target_words, _ in _links(copy_translator, lines):
        assert all(0 <= s < source_words and 0 <= t < target_words for s, t in pairs)
        assert [t for _, t in pairs] == list(range(target_words))


def test_subword_attention_is_summed_into_words() -> None:
    # source "ab c": pieces _a, b, _c (+EOS); target "x yz": pieces _x, _y, z (+EOS)
    source = word_spans("ab c", by_character=False)
    assert source == [(0, 2), (3, 4)]
    src_words = piece_words([(0, 1), (1, 2), (2, 4)], source)
    tgt_words = piece_words([(0, 1), (1, 3), (3, 4)], word_spans("x yz", by_character=False))
    assert src_words == [[0], [0], [1]] and tgt_words == [[0], [1], [1]]
    weights = np.array([[0.5, 0.3, 0.2, 0.0],
                        [0.1, 0.1, 0.8, 0.0],
                        [0.0, 0.2, 0.6, 0.2],
                        [0.0, 0.0, 0.0, 1.0]])  # last row and column: the EOS
    matrix = word_matrix(weights[:-1, :-1], src_words, tgt_words, 2, 2)
    np.testing.assert_allclose(matrix, [[0.8, 0.2], [0.2, 0.7]])
    assert hard_alignment(matrix) == "0-0 1-1"
    # a language written without spaces aligns character by character, in UTF-8 bytes
    assert word_spans("我 爱猫", by_character=True) == [(0, 3), (4, 7), (7, 10)]


@pytest.mark.slow
def test_translate_alignment_lines_hard_soft_and_nbest(copy_translator: Translator,
                                                       tmp_path: Path) -> None:
    checkpoint = copy_translator.loaded.path
    assert checkpoint is not None
    text = "red fox.\n\nold dog sees tree\n"
    hard = runner.invoke(app, ["translate", "--run", str(tmp_path), "--checkpoint",
                               str(checkpoint), "--alignment", "hard"], input=text)
    assert hard.exit_code == 0, hard.output
    lines = hard.stdout.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    translation, links = lines[0].split("\t")
    assert translation == "red fox." and links == "0-0 1-1"
    soft = runner.invoke(app, ["translate", "--run", str(tmp_path), "--checkpoint",
                               str(checkpoint), "--alignment", "soft", "--beam", "3",
                               "--nbest", "2"], input=text)
    assert soft.exit_code == 0, soft.output
    columns = soft.stdout.split("\n")[2].split("\t")
    assert len(columns) == 6  # (translation, score, matrix) for each of 2 hypotheses
    for translation, matrix in ((columns[0], columns[2]), (columns[3], columns[5])):
        rows = json.loads(matrix)
        assert len(rows) == len(translation.split()) and all(len(row) == 4 for row in rows)
    wrong = runner.invoke(app, ["translate", "--run", str(tmp_path), "--checkpoint",
                                str(checkpoint), "--alignment", "fuzzy"], input=text)
    assert wrong.exit_code == 2 and "choose one of none, hard, soft" in wrong.stderr

