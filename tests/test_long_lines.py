"""Lines longer than the training limit are translated whole, in pieces, never truncated."""

from __future__ import annotations

import difflib
import random

import pytest

import torch

from s2s.batching import pad
from s2s.checkpoint import LoadedModel
from s2s.config import ModelConfig, VocabConfig, config_from_dict, config_to_dict
from s2s.model import Seq2Seq
from s2s.search import Hypothesis
from s2s.splitting import split_sentences, split_to_limit
from s2s.translate import Translator
from s2s.vocab import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from tests.conftest import config_dict

WORDS = "red green blue small big old dog cat bird fox tree house".split()
LIMIT = 10  # data.max_tokens of the copy model: it never sees longer inputs


def _sentence(chance: random.Random, longest: int = 6) -> str:
    """Words, with a full stop or not: pieces of a long line may end either way."""
    words = " ".join(chance.choice(WORDS) for _ in range(chance.randint(2, longest)))
    return words + chance.choice([".", ""])


@pytest.fixture(scope="module")
def copy_translator(tmp_path_factory: pytest.TempPathFactory) -> Translator:
    """A model trained to copy sentences of up to LIMIT tokens (about 98% exactly)."""
    directory = tmp_path_factory.mktemp("copy")
    config = config_from_dict(config_dict(directory, directory / "run", data={
        "src_lang": "aa", "tgt_lang": "bb", "max_tokens": LIMIT}))
    chance = random.Random(3)
    vocab = VocabConfig(src_size=34, tgt_size=34, byte_fallback=False, character_coverage=1.0)
    model_path = directory / "spm.model"
    train_sentencepiece([_sentence(chance) for _ in range(2000)], model_path, 34, vocab)
    tokenizer = Tokenizer.from_file(model_path)
    model = _train_copy_model(tokenizer, config.model)
    payload = {"config": config_to_dict(config), "model": model.state_dict(),
               "vocab": {"src": tokenizer.model_proto, "tgt": tokenizer.model_proto,
                         "joint": False},
               "progress": {"step": 600}}
    return Translator(LoadedModel.from_payload(payload, directory / "copy.pt"), device="cpu")


def _train_copy_model(tokenizer: Tokenizer, config: ModelConfig) -> Seq2Seq:
    torch.manual_seed(0)
    model = Seq2Seq(config, len(tokenizer), len(tokenizer))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    chance = random.Random(5)
    for _ in range(600):
        sentences = tokenizer.encode([_sentence(chance, longest=LIMIT - 1) for _ in range(32)])
        src, src_lengths = pad(sentences, suffix=EOS_ID)
        tgt_in, _ = pad(sentences, prefix=BOS_ID)
        tgt_out, _ = pad(sentences, suffix=EOS_ID)
        positions = tgt_out != PAD_ID
        loss = torch.nn.functional.cross_entropy(
            model(src, src_lengths, tgt_in, positions), tgt_out[positions])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()


def test_sentences_split_at_their_ends_in_any_script() -> None:
    assert split_sentences('He left. "Why?" she asked!  Fine') == [
        "He left.", '"Why?"', "she asked!", "Fine"]
    assert split_sentences("你好。你好吗？我很好！谢谢") == ["你好。", "你好吗？", "我很好！", "谢谢"]
    assert split_sentences("no ending at all") == ["no ending at all"]


def test_pieces_fit_the_limit_and_keep_every_token_in_order() -> None:
    def encode(text: str) -> list[int]:  # one id per character: easy to check
        return [ord(character) for character in text]

    text = "An old fox. " * 6 + "x" * 50 + " " + "word " * 20
    pieces = split_to_limit(text, encode, 16)
    assert all(len(piece) <= 16 for piece in pieces)
    assert "".join(chr(i) for piece in pieces for i in piece).replace(" ", "") == \
        text.replace(" ", "")
    assert split_to_limit("short", encode, 16) == [encode("short")]


def _long_lines() -> list[str]:
    chance = random.Random(11)
    sentences = " ".join(_sentence(chance).rstrip(".") + "." for _ in range(10))
    no_punctuation = " ".join(chance.choice(WORDS) for _ in range(3 * LIMIT))
    return [sentences, "", no_punctuation, "red fox."]


def test_split_pieces_are_joined_back_in_order(copy_translator: Translator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With a decoder that returns its input, a long line comes back exactly as it went in."""
    def echo(model, sentences, config, device):
        assert all(len(sentence) <= LIMIT for sentence in sentences)
        return [[Hypothesis(list(sentence), 0.0)] for sentence in sentences]

    monkeypatch.setattr("s2s.translate.decode_corpus", echo)
    lines = _long_lines()
    assert all(len(copy_translator.encode_source(line)) >= 3 * LIMIT for line in lines[::2])
    assert [result.text for result in copy_translator.translate(lines)] == lines


def test_a_line_three_times_the_limit_is_translated_whole(copy_translator: Translator) -> None:
    """The real copy model: nothing is dropped (a truncated line would keep a third of it)."""
    lines = _long_lines()
    results = copy_translator.translate(lines)
    assert results[1].text == "" and results[3].text == "red fox."
    for line, result in zip(lines[::2], results[::2]):
        words, copied = line.split(), result.text.split()
        assert 0.9 * len(words) <= len(copied) <= 1.1 * len(words)
        assert difflib.SequenceMatcher(a=words, b=copied).ratio() >= 0.9, result.text


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
