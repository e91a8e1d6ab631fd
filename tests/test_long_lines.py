"""Lines longer than the training limit are translated whole, in pieces, never truncated."""

from __future__ import annotations

import difflib
import random

import pytest

from s2s.search.hypothesis import Hypothesis
from s2s.translation.splitting import split_sentences, split_to_limit
from s2s.translation.translator import Translator
from tests.tasks import LIMIT, WORDS, sentence


def test_sentences_split_at_their_ends_in_any_script() -> None:
    assert split_sentences('He left. "Why?" she asked!  Fine') == [
        "He left.", '"Why?"', "she asked!", "Fine"]
    assert split_sentences("你好。你好吗？我很好！谢谢") == [
        "你好。", "你好吗？", "我很好！", "谢谢"]
    assert split_sentences("no ending at all") == ["no ending at all"]


def test_pieces_fit_the_limit_and_keep_every_token_in_order() -> None:
    def encode(text: str) -> list[int]:  # one id per character: easy to check
        return [ord(character) for character in text]

    text = "An old fox. " * 6 + "x" * 50 + " " + "word " * 20
    pieces = split_to_limit(text, encode, 16)
    assert all(len(piece.ids) <= 16 for piece in pieces)
    assert "".join(chr(i) for piece in pieces for i in piece.ids).replace(" ", "") == \
        text.replace(" ", "")
    assert [piece.ids for piece in split_to_limit("short", encode, 16)] == [encode("short")]
    for piece in pieces:  # each piece's ids are those of its text (a cut word: a part of them)
        assert piece.ids == encode(piece.text)[piece.start:piece.start + len(piece.ids)]


def _long_lines() -> list[str]:
    chance = random.Random(11)
    sentences = " ".join(sentence(chance).rstrip(".") + "." for _ in range(10))
    no_punctuation = " ".join(chance.choice(WORDS) for _ in range(3 * LIMIT))
    return [sentences, "", no_punctuation, "red fox."]


@pytest.mark.slow
def test_split_pieces_are_joined_back_in_order(copy_translator: Translator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With a decoder that returns its input, a long line comes back exactly as it went in."""
    def echo(model, sentences, config, device, **options):
        assert all(len(sentence) <= LIMIT for sentence in sentences)
        return [[Hypothesis(list(sentence), 0.0)] for sentence in sentences]

    monkeypatch.setattr("s2s.translation.translator.decode_corpus", echo)
    lines = _long_lines()
    assert all(len(copy_translator.encode_source(line)) >= 3 * LIMIT for line in lines[::2])
    assert [result.text for result in copy_translator.translate(lines)] == lines


@pytest.mark.slow
def test_a_line_three_times_the_limit_is_translated_whole(copy_translator: Translator) -> None:
    """The real copy model: nothing is dropped (a truncated line would keep a third of it)."""
    lines = _long_lines()
    results = copy_translator.translate(lines)
    assert results[1].text == "" and results[3].text == "red fox."
    for line, result in zip(lines[::2], results[::2]):
        words, copied = line.split(), result.text.split()
        assert 0.9 * len(words) <= len(copied) <= 1.1 * len(words)
        assert difflib.SequenceMatcher(a=words, b=copied).ratio() >= 0.9, result.text


@pytest.mark.slow
def test_translate_warns_that_a_long_line_was_split(copy_translator: Translator,
                                                    capsys: pytest.CaptureFixture) -> None:
    from rich.console import Console

    from s2s.report import Reporter
    copy_translator.reporter = Reporter(Console(stderr=True, width=200))
    try:
        copy_translator.translate(["red fox. " * 20], first_line=5)
    finally:
        copy_translator.reporter = Reporter()
    assert "line 5: longer than the model's limit of 10 tokens, translated in" in \
        capsys.readouterr().err
