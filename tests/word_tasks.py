"""Tiny translators trained in the tests on word tasks: copying a sentence, or reversing it.

A 12-word language with a 34-piece vocabulary: the models learn in seconds, and what they
should do (and where they should look) is known exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch

from s2s.batching import pad
from s2s.checkpoint import LoadedModel
from s2s.config import VocabConfig, config_from_dict, config_to_dict
from s2s.model import Seq2Seq
from s2s.translate import Translator
from s2s.vocab import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from tests.conftest import config_dict

WORDS = "red green blue small big old dog cat bird fox tree house".split()
LIMIT = 10  # data.max_tokens of the models: they never see longer inputs


def sentence(chance: random.Random, longest: int = 6, full_stop: bool = True) -> str:
    """Words, with a full stop or not: pieces of a long line may end either way."""
    words = " ".join(chance.choice(WORDS) for _ in range(chance.randint(2, longest)))
    return words + (chance.choice([".", ""]) if full_stop else "")


def copy(text: str) -> str:
    return text


def reverse(text: str) -> str:
    return " ".join(reversed(text.split()))


def word_task_translator(directory: Path, task: Callable[[str], str], *,
                         full_stops: bool = True, steps: int = 600) -> Translator:
    """A model trained to map sentences of up to LIMIT tokens through ``task``."""
    config = config_from_dict(config_dict(directory, directory / "run", data={
        "src_lang": "aa", "tgt_lang": "bb", "max_tokens": LIMIT}))
    chance = random.Random(3)
    vocab = VocabConfig(src_size=34, tgt_size=34, byte_fallback=False, character_coverage=1.0)
    model_path = directory / "spm.model"
    train_sentencepiece([sentence(chance) for _ in range(2000)], model_path, 34, vocab)
    tokenizer = Tokenizer.from_file(model_path)
    torch.manual_seed(0)
    model = Seq2Seq(config.model, len(tokenizer), len(tokenizer))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        texts = [sentence(chance, LIMIT - 1, full_stops) for _ in range(32)]
        sources = tokenizer.encode(texts)
        targets = tokenizer.encode([task(text) for text in texts])
        src, src_lengths = pad(sources, suffix=EOS_ID)
        tgt_in, _ = pad(targets, prefix=BOS_ID)
        tgt_out, _ = pad(targets, suffix=EOS_ID)
        positions = tgt_out != PAD_ID
        loss = torch.nn.functional.cross_entropy(
            model(src, src_lengths, tgt_in, positions), tgt_out[positions])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    payload = {"config": config_to_dict(config), "model": model.eval().state_dict(),
               "vocab": {"src": tokenizer.model_proto, "tgt": tokenizer.model_proto,
                         "joint": False},
               "progress": {"step": steps}}
    return Translator(LoadedModel.from_payload(payload, directory / f"{task.__name__}.pt"),
                      device="cpu")
