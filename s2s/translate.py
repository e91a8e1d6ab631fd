"""`s2s translate`: stream text through a trained model, one output line per input line.

Input is read in chunks; each chunk is sorted by length for batching and written back in input
order, so memory stays bounded and the first lines come out before the input ends. When the
input pauses (an interactive pipe), the lines read so far are translated at once.
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

from s2s.checkpoint import LoadedModel, average_checkpoints, checkpoint_dir, load_model
from s2s.config import DecodeConfig
from s2s.device import resolve_device, set_threads
from s2s.errors import CheckpointError
from s2s.prepare import run_data_dir, spm_paths
from s2s.report import Reporter
from s2s.search import Hypothesis, decode_corpus, decode_dtype
from s2s.textio import normalize

CHUNK_LINES = 2000


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """``best``, ``last`` or ``avg`` inside a run directory, or a checkpoint file path."""
    if checkpoint not in ("best", "last", "avg"):
        return Path(checkpoint)
    path = checkpoint_dir(run_dir) / f"{checkpoint}.pt"
    if checkpoint == "avg" and not path.exists():
        return average_checkpoints(run_dir)
    if not path.exists():
        found = sorted(p.name for p in checkpoint_dir(run_dir).glob("*.pt"))
        listing = ", ".join(found) if found else "none; train first"
        raise CheckpointError(f"{path}: no {checkpoint} checkpoint in this run "
                              f"(checkpoints: {listing})")
    return path


def check_vocabulary(loaded: LoadedModel, run_dir: Path) -> None:
    """Refuse a checkpoint whose vocabulary is not the one ``run_dir`` was prepared with."""
    src_model, tgt_model = spm_paths(run_data_dir(run_dir))
    for name, path, tokenizer in (("source", src_model, loaded.src_tokenizer),
                                  ("target", tgt_model, loaded.tgt_tokenizer)):
        if path.exists() and path.read_bytes() != tokenizer.model_proto:
            raise CheckpointError(f"{loaded.path}: its {name} vocabulary is not the one of the "
                                  f"run in {run_dir} (another run's checkpoint?); use that "
                                  "run's --run directory or one of this run's checkpoints")


@dataclass(frozen=True)
class TranslationResult:
    text: str
    hypotheses: list[Hypothesis]


class Translator:
    """A loaded model with its tokenizers and decoding settings; translates lists of lines."""

    def __init__(self, loaded: LoadedModel, *, decode: DecodeConfig | None = None,
                 device: str = "auto", reporter: Reporter = Reporter()) -> None:
        """``decode`` replaces the decoding settings stored in the checkpoint."""
        self.loaded = loaded
        self.device = resolve_device(device)
        set_threads(loaded.config.train.threads)
        self.decode: DecodeConfig = decode if decode is not None else loaded.config.decode
        dtype = decode_dtype(self.decode, loaded.config.train.precision)
        self.model = loaded.model.to(self.device, dtype).eval()
        self.reporter = reporter
        self.max_tokens = loaded.config.data.max_tokens
        self.normalization = loaded.config.data.normalization

    @classmethod
    def from_checkpoint(cls, path: Path, *, overrides: tuple[str, ...] = (), **options
                        ) -> "Translator":
        return cls(load_model(path, overrides), **options)

    def translate(self, lines: list[str], first_line: int = 1) -> list[TranslationResult]:
        """Translate already-decoded lines; empty lines give empty translations."""
        texts = [normalize(line, self.normalization) for line in lines]
        wanted = [index for index, text in enumerate(texts) if text]
        ids = self.loaded.src_tokenizer.encode([texts[i] for i in wanted])
        for index, sentence in zip(wanted, ids):
            if len(sentence) > self.max_tokens:
                self.reporter.warn(f"line {first_line + index}: {len(sentence)} tokens, "
                                   f"truncated to the model's limit of {self.max_tokens}")
                del sentence[self.max_tokens:]
        hypotheses = decode_corpus(self.model, ids, self.decode, self.device)
        results = [TranslationResult("", []) for _ in lines]
        best = self.loaded.tgt_tokenizer.decode([h[0].tokens if h else [] for h in hypotheses])
        for index, text, found in zip(wanted, best, hypotheses):
            results[index] = TranslationResult(_one_line(text), found)
        return results

    def format(self, result: TranslationResult) -> str:
        """The output line: the best translation, or ``nbest`` tab-separated text/score pairs."""
        if self.decode.nbest == 1:
            return result.text
        texts = self.loaded.tgt_tokenizer.decode([h.tokens for h in result.hypotheses])
        return "\t".join(f"{_one_line(text)}\t{h.score:.4f}"
                         for text, h in zip(texts, result.hypotheses))


def translate_stream(translator: Translator, source: BinaryIO, target: TextIO, *,
                     chunk_lines: int = CHUNK_LINES, progress_total: int | None = None) -> int:
    """Translate every line of ``source`` to ``target`` in order; return the line count.

    A progress bar is shown only for input of known size (a file) on a terminal.
    """
    count = 0
    reporter = translator.reporter if progress_total is not None else Reporter()
    with reporter.progress("translate", total=progress_total) as bar:
        for chunk in _chunks(source, chunk_lines):
            lines = [_decode_line(raw, count + offset + 1, translator.reporter)
                     for offset, raw in enumerate(chunk)]
            for result in translator.translate(lines, first_line=count + 1):
                target.write(translator.format(result) + "\n")
            target.flush()
            count += len(chunk)
            bar.advance(len(chunk))
    return count


def _chunks(source: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """Groups of raw lines: full chunks, or what arrived before the input paused."""
    lines: list[bytes] = []
    while True:
        if lines and not _input_ready(source):
            yield lines
            lines = []
        raw = source.readline()
        if not raw:
            break
        lines.append(raw)
        if len(lines) >= size:
            yield lines
            lines = []
    if lines:
        yield lines


def _input_ready(source: BinaryIO, wait: float = 0.01) -> bool:
    try:
        ready, _, _ = select.select([source], [], [], wait)
    except (OSError, ValueError, TypeError, AttributeError):
        return True  # not a selectable stream (a file or an in-memory buffer): read on
    return bool(ready)


def _decode_line(raw: bytes, number: int, reporter: Reporter) -> str:
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        reporter.warn(f"line {number}: invalid UTF-8, replaced with U+FFFD")
        return raw.decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())
