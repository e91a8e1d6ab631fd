"""Sentencepiece vocabularies and the special token ids the rest of s2s reads from here."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import sentencepiece as spm

from s2s.config import VocabConfig
from s2s.errors import DataError
from s2s.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID


class Tokenizer:
    """A loaded sentencepiece model: text to ids and back, without BOS/EOS."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        if (self._processor.pad_id(), self._processor.unk_id(), self._processor.bos_id(),
                self._processor.eos_id()) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise DataError("sentencepiece model has unexpected special token ids; "
                            "it was not trained by s2s prepare")

    @classmethod
    def from_file(cls, path: Path) -> "Tokenizer":
        return cls(Path(path).read_bytes())

    def __len__(self) -> int:
        return self._processor.get_piece_size()

    def piece_id(self, piece: str) -> int | None:
        """The id of ``piece`` when it is one piece of this vocabulary, else None."""
        token = self._processor.piece_to_id(piece)
        return None if token == UNK_ID and piece != self._processor.id_to_piece(UNK_ID) else token

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self._processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self._processor.decode([list(sentence) for sentence in ids])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self._processor.id_to_piece(int(token)) for token in ids]

    def encode_with_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of one line and, per piece, the UTF-8 byte span of ``text`` it covers."""
        proto = self._processor.encode(text, return_type="proto")
        return ([piece.id for piece in proto.pieces],
                [(piece.begin, piece.end) for piece in proto.pieces])

    def decode_with_spans(self, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
        """The text of one line and, per piece, the UTF-8 byte span of it that piece makes."""
        proto = self._processor.decode([int(token) for token in ids], return_type="proto")
        return proto.text, [(piece.begin, piece.end) for piece in proto.pieces]


SAMPLE_SEED = 20_240_601  # fixed: which sentences train a vocabulary is part of the recipe


def sample_sentences(lines: Sequence[str], limit: int) -> list[str]:
    """At most ``limit`` lines, a seeded random sample kept in corpus order.

    sentencepiece's own sampling draws its seed from the machine, so s2s samples instead.
    """
    if len(lines) <= limit:
        return list(lines)
    return [lines[index] for index in sample_indices(len(lines), limit)]


def sample_indices(count: int, limit: int) -> np.ndarray:
    """The sorted positions ``sample_sentences`` keeps of ``count`` lines (all when few)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(count, size=limit, replace=False))


def train_sentencepiece(lines: Sequence[str], model_path: Path, vocab_size: int,
                        config: VocabConfig, normalization: str = "nfkc",
                        reserved: Sequence[str] = ()) -> None:
    """Train a sentencepiece model on ``lines`` and write it to ``model_path``.

    The result depends only on the lines and ``config``: the sample and the thread count
    (which changes sentencepiece's scores) are fixed by them, never by the machine.
    ``normalization`` is how s2s normalised the lines: sentencepiece's own NFKC rule would
    undo an NFC choice (it folds ，？ into ASCII), so it applies only to NFKC text.
    ``reserved``: pieces the model must hold whole (corpus tags), given the ids after the
    special ones.
    """
    extra = {"user_defined_symbols": list(reserved)} if reserved else {}
    model = io.BytesIO()  # not model_prefix: the model would record the path it was written to
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample_sentences(lines, config.max_sentences)),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
            byte_fallback=config.byte_fallback,
            normalization_rule_name="nmt_nfkc" if normalization == "nfkc" else "identity",
            input_sentence_size=0,  # all of the sample
            shuffle_input_sentence=False,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            num_threads=config.threads,
            minloglevel=2,
            **extra,
        )
    except RuntimeError as error:
        raise DataError(_explain_training_error(str(error), vocab_size, model_path)) from None
    try:
        model_path.write_bytes(model.getvalue())
    except OSError as error:
        raise DataError(f"{model_path}: cannot write: {error.strerror}") from None


def _explain_training_error(message: str, vocab_size: int, model_path: Path) -> str:
    match = re.search(r"Vocabulary size (?:is )?too high \((\d+)\).*?<= (\d+)", message)
    if match:
        limit = int(match.group(2))
        return (f"vocabulary size {vocab_size} is larger than the training data allows for "
                f"{model_path.stem} (at most {limit}); set the vocab size to {limit} or less, "
                f"for example {_round_down(limit)}")
    match = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if match:
        needed = int(match.group(2))
        return (f"vocabulary size {vocab_size} is too small for {model_path.stem}: its characters "
                f"and special pieces alone need {needed}; set the vocab size to at least {needed} "
                "or lower vocab.character_coverage")
    return f"sentencepiece could not train {model_path.name}: {message.strip().splitlines()[-1]}"


def _round_down(limit: int) -> int:
    step = 1000 if limit >= 2000 else 100 if limit >= 200 else 1
    return max(step, (limit // step) * step)
