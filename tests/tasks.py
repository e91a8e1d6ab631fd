"""Tiny models the tests train on known tasks, with one training loop for all of them.

``fit`` trains a model on batches of (source ids, target ids) pairs. ``word_task_translator``
trains one on a 12-word language (34 pieces) to copy or reverse sentences and loads it back
through the checkpoint format: it learns in seconds, and what it should do (and where it
should look) is known exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import torch

from s2s.config import ModelConfig, VocabConfig, config_from_dict
from s2s.data.batching import pad
from s2s.data.vocab import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece
from s2s.device import thread_scope
from s2s.model.seq2seq import Seq2Seq
from s2s.run.checkpoint import LoadedModel, save_model
from s2s.translation.translator import Translator, load_translator
from tests.conftest import config_dict

Pairs = tuple[list[list[int]], list[list[int]]]  # sources and targets, token ids without EOS

WORDS = "red green blue small big old dog cat bird fox tree house".split()
LIMIT = 10  # data.max_tokens of the word-task models: they never see longer inputs


def fit(model: Seq2Seq, batches: Callable[[], Pairs], steps: int, *, lr: float = 0.01,
        clip_norm: float | None = None) -> Seq2Seq:
    """``steps`` Adam updates on cross-entropy, each on a fresh ``batches()``; the model is
    returned in eval mode. One thread: these models are so small that a second one costs
    more in handing work over than it saves (about 30% of the time at 2 threads)."""
    with thread_scope(1):
        _updates(model, batches, steps, lr, clip_norm)
    return model.eval()


def _updates(model: Seq2Seq, batches: Callable[[], Pairs], steps: int, lr: float,
             clip_norm: float | None) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        sources, targets = batches()
        src, src_lengths = pad(sources, suffix=EOS_ID)
        tgt_in, _ = pad(targets, prefix=BOS_ID)
        tgt_out, _ = pad(targets, suffix=EOS_ID)
        positions = tgt_out != PAD_ID
        loss = torch.nn.functional.cross_entropy(
            model(src, src_lengths, tgt_in, positions), tgt_out[positions])
        optimizer.zero_grad()
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()


def sentence(chance: random.Random, longest: int = 6, full_stop: bool = True) -> str:
    """Words, with a full stop or not: pieces of a long line may end either way."""
    words = " ".join(chance.choice(WORDS) for _ in range(chance.randint(2, longest)))
    return words + (chance.choice([".", ""]) if full_stop else "")


def copy(text: str) -> str:
    return text


def reverse(text: str) -> str:
    return " ".join(reversed(text.split()))


def word_task_translator(directory: Path, task: Callable[[str], str], *,
                         full_stops: bool = True, steps: int = 300) -> Translator:
    """A model trained to map sentences of up to LIMIT tokens through ``task`` (batches of
    64: half the steps of 32 learn as well, in 30% less time), saved as ``directory/<task>.pt``
    and loaded back as `s2s translate` would load it."""
    config = config_from_dict(config_dict(directory, directory / "run", data={
        "src_lang": "aa", "tgt_lang": "bb", "max_tokens": LIMIT}))
    chance = random.Random(3)
    vocab = VocabConfig(src_size=34, tgt_size=34, byte_fallback=False, character_coverage=1.0)
    model_path = directory / "spm.model"
    train_sentencepiece([sentence(chance) for _ in range(2000)], model_path, 34, vocab)
    tokenizer = Tokenizer.from_file(model_path)

    def batches() -> Pairs:
        texts = [sentence(chance, LIMIT - 1, full_stops) for _ in range(64)]
        return tokenizer.encode(texts), tokenizer.encode([task(text) for text in texts])

    torch.manual_seed(0)
    model = fit(Seq2Seq(config.model, len(tokenizer), len(tokenizer)), batches, steps,
                clip_norm=1.0)
    checkpoint = directory / f"{task.__name__}.pt"
    save_model(LoadedModel(config, model, tokenizer, tokenizer, step=steps), checkpoint)
    return load_translator(directory, str(checkpoint), device="cpu")


def random_sentences(count: int, seed: int = 2, generator: torch.Generator | None = None
                     ) -> list[list[int]]:
    """``count`` sentences of 1 to 11 random pieces out of 4..29."""
    generator = generator or torch.Generator().manual_seed(seed)
    return [torch.randint(4, 30, (int(n),), generator=generator).tolist()
            for n in torch.randint(1, 12, (count,), generator=generator)]


def copy_model(cell: str, input_feeding: bool, steps: int) -> Seq2Seq:
    """A model of ``cell`` trained ``steps`` updates to copy ``random_sentences``."""
    torch.manual_seed(0)
    config = ModelConfig(cell=cell,  # type: ignore[arg-type]
                         embed_size=16, encoder_layers=1, encoder_hidden=16, decoder_layers=1,
                         decoder_hidden=32, dropout=0.0, embed_dropout=0.0,
                         input_feeding=input_feeding)
    generator = torch.Generator().manual_seed(1)

    def batches() -> tuple[list[list[int]], list[list[int]]]:
        sentences = random_sentences(32, generator=generator)
        return sentences, sentences

    return fit(Seq2Seq(config, 30, 30), batches, steps)
