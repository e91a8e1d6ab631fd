"""Translate with an ``s2s export`` folder using onnxruntime, sentencepiece and numpy only.

Copied into every export folder as ``translate.py``; it imports nothing from s2s or torch:

    python translate.py EXPORT_DIR < input.txt > output.txt      (--beam K, --greedy)

or from Python: ``ExportedTranslator(folder).translate(lines)``. Greedy and beam search
follow ``s2s translate`` step for step (the same length limit, length penalty and beam
bookkeeping), so they find the same translations. Not here: long-line splitting (a line
over the model's limit is translated whole), n-best lists, sampling, prefixes, constraints,
no-repeat n-grams and ensembles.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime
import sentencepiece

Rows = dict[str, np.ndarray]  # a decoder state: hidden, cell, feed
# what onnxruntime raises for a missing or malformed graph (not subclasses of one another)
_ONNXRUNTIME_ERRORS = tuple(
    getattr(onnxruntime.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "NoSuchFile", "InvalidArgument", "InvalidProtobuf", "InvalidGraph")
    if hasattr(onnxruntime.capi.onnxruntime_pybind11_state, name))


class ExportedTranslator:
    """An export folder loaded for translation."""

    def __init__(self, folder: str | Path, *, threads: int = 1) -> None:
        folder = Path(folder)
        self.settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), options,
                                                    providers=providers)
        self.step = onnxruntime.InferenceSession(str(folder / "step.onnx"), options,
                                                 providers=providers)
        self.source = sentencepiece.SentencePieceProcessor(model_file=str(folder / "source.model"))
        self.target = sentencepiece.SentencePieceProcessor(model_file=str(folder / "target.model"))
        ids = self.settings["ids"]
        self.pad, self.bos, self.eos = ids["pad"], ids["bos"], ids["eos"]
        self.decode = self.settings["decode"]

    def translate(self, lines: Sequence[str], beam_size: int | None = None
                  ) -> list[tuple[str, float]]:
        """(translation, score) per line; an empty line gives ("", 0.0)."""
        beam = self.decode["beam_size"] if beam_size is None else beam_size
        form = self.settings["source_normalization"]
        texts = [" ".join((unicodedata.normalize(form.upper(), line) if form != "none"
                           else line).split()) for line in lines]
        sentences = self.source.encode(texts, out_type=int)
        results: list[tuple[list[int], float]] = [([], 0.0)] * len(lines)
        order = sorted((i for i, s in enumerate(sentences) if texts[i]),
                       key=lambda i: len(sentences[i]))
        for batch in self._batches(order, sentences, beam):
            found = self._search([sentences[i] for i in batch], beam)
            for index, result in zip(batch, found):
                results[index] = result
        decoded = self.target.decode([tokens for tokens, _ in results])
        return [(" ".join(text.split()), score) for text, (_, score) in zip(decoded, results)]

    def _batches(self, order: list[int], sentences: list[list[int]], beam: int
                 ) -> list[list[int]]:
        """Length-sorted batches within ``batch_tokens`` (count x longest x beam)."""
        batches: list[list[int]] = []
        for index in order:
            longest = len(sentences[index]) + 1
            if batches and (len(batches[-1]) + 1) * longest * beam <= self.decode["batch_tokens"]:
                batches[-1].append(index)
            else:
                batches.append([index])
        return batches

    def _encode(self, sentences: list[list[int]]) -> tuple[dict[str, np.ndarray], Rows,
                                                          np.ndarray]:
        lengths = np.array([len(s) + 1 for s in sentences], dtype=np.int64)
        src = np.full((len(sentences), int(lengths.max())), self.pad, dtype=np.int64)
        for row, sentence in enumerate(sentences):
            src[row, :len(sentence) + 1] = [*sentence, self.eos]
        states, keys, mask, hidden, cell = self.encoder.run(
            None, {"src_ids": src, "src_lengths": lengths})
        feed = np.zeros((len(sentences), self.settings["feed_width"]), dtype=np.float32)
        limits = np.floor(self.decode["max_len_a"] * (lengths - 1).astype(np.float64)
                          + self.decode["max_len_b"]).astype(np.int64)
        return {"states": states, "keys": keys, "mask": mask}, {
            "hidden": hidden, "cell": cell, "feed": feed}, limits

    def _search(self, sentences: list[list[int]], beam: int) -> list[tuple[list[int], float]]:
        memory, rows, limits = self._encode(sentences)
        if beam == 1:
            return self._greedy(memory, rows, limits)
        return self._beam(memory, rows, limits, beam)

    def _restricted(self, tokens: np.ndarray, rows: Rows, memory: dict[str, np.ndarray],
                    at_limit: np.ndarray) -> tuple[np.ndarray, Rows]:
        log_probs, hidden, cell, feed, _ = self.step.run(None, {
            "prev_tokens": tokens, **rows, **memory})
        if at_limit.any():  # only EOS, with its probability under the model
            eos = log_probs[at_limit, self.eos].copy()
            log_probs[at_limit] = -np.inf
            log_probs[at_limit, self.eos] = eos
        log_probs[:, self.pad] = -np.inf
        log_probs[:, self.bos] = -np.inf
        return log_probs, {"hidden": hidden, "cell": cell, "feed": feed}

    def _greedy(self, memory: dict[str, np.ndarray], rows: Rows, limits: np.ndarray
                ) -> list[tuple[list[int], float]]:
        count = len(limits)
        tokens = np.full(count, self.bos, dtype=np.int64)
        scores = np.zeros(count, dtype=np.float32)
        ended = np.zeros(count, dtype=bool)
        outputs: list[list[int]] = [[] for _ in range(count)]
        for step in range(int(limits.max()) + 1):
            log_probs, rows = self._restricted(tokens, rows, memory, step >= limits)
            tokens = log_probs.argmax(axis=1)
            for row in np.flatnonzero(~ended):
                scores[row] += log_probs[row, tokens[row]]
                if tokens[row] != self.eos:
                    outputs[row].append(int(tokens[row]))
            ended |= tokens == self.eos
            if ended.all():
                break
        return list(zip(outputs, scores.tolist()))

    def _beam(self, memory: dict[str, np.ndarray], rows: Rows, limits: np.ndarray, beam: int
              ) -> list[tuple[list[int], float]]:
        """Beam search as s2s's: each step the 2K best continuations of a sentence's beams;
        those among the first K that end with EOS are finished (length-penalised), the K
        best others go on; a sentence is done with K finished or no live beam."""
        count = len(limits)
        rows = {name: np.repeat(value, beam, axis=1 if name != "feed" else 0)
                for name, value in rows.items()}
        scores = np.full((count, beam), -np.inf, dtype=np.float32)
        scores[:, 0] = 0.0
        history = np.zeros((count * beam, 0), dtype=np.int64)
        tokens = np.full(count * beam, self.bos, dtype=np.int64)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(count)]
        done = np.zeros(count, dtype=bool)
        width = 2 * beam
        for step in range(int(limits.max()) + 1):
            at_limit = np.repeat(step >= limits, beam)
            log_probs, rows = self._restricted(tokens, rows, memory, at_limit)
            row_tokens = _row_topk(log_probs, width)
            row_scores = np.take_along_axis(log_probs, row_tokens, axis=1)
            candidates = (scores.reshape(-1, 1) + row_scores).reshape(count, -1)
            best = np.argsort(-candidates, axis=1, kind="stable")[:, :width]
            top_scores = np.take_along_axis(candidates, best, axis=1)
            top_tokens = row_tokens.reshape(count, -1)[np.arange(count)[:, None], best]
            origins = np.arange(count)[:, None] * beam + best // width
            penalty = np.float32(self._penalty(step + 1))
            is_eos = top_tokens == self.eos
            for sentence in range(count):
                for rank in range(beam):
                    if is_eos[sentence, rank] and np.isfinite(top_scores[sentence, rank]):
                        finished[sentence].append((float(top_scores[sentence, rank] / penalty),
                                                   history[origins[sentence, rank]].tolist()))
                finished[sentence] = sorted(finished[sentence], key=lambda f: -f[0])[:beam]
            ended = is_eos | ~np.isfinite(top_scores)
            keep = np.argsort(np.arange(width) + ended * width, axis=1, kind="stable")[:, :beam]
            scores = np.take_along_axis(top_scores, keep, axis=1)
            beam_rows = np.take_along_axis(origins, keep, axis=1).reshape(-1)
            tokens = np.take_along_axis(top_tokens, keep, axis=1).reshape(-1)
            history = np.concatenate([history[beam_rows], tokens[:, None]], axis=1)
            rows = {name: value[:, beam_rows] if name != "feed" else value[beam_rows]
                    for name, value in rows.items()}
            done |= np.array([len(f) >= beam for f in finished]) | ~np.isfinite(scores).any(1)
            scores[done] = -np.inf
            if done.all():
                break
        return [(f[0][1], f[0][0]) if f else ([], 0.0) for f in finished]

    def _penalty(self, length: int) -> float:
        """The divisor of a hypothesis' log-probability; ``length`` counts the EOS."""
        kind = self.decode["length_penalty"]
        if kind == "gnmt":
            return ((5.0 + length) / 6.0) ** self.decode["alpha"]
        return float(length) if kind == "average" else 1.0


def _row_topk(scores: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    """The columns of each row's k largest scores (in no order), looking closely only at the
    k chunks with the largest maxima: they hold the k largest entries."""
    rows, width = scores.shape
    if width <= k * chunk:
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    whole = width // chunk * chunk
    maxima = scores[:, :whole].reshape(rows, -1, chunk).max(axis=2)
    if whole < width:
        maxima = np.concatenate([maxima, scores[:, whole:].max(axis=1, keepdims=True)], axis=1)
    best = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
    columns = (best[:, :, None] * chunk + np.arange(chunk)).reshape(rows, -1)
    candidates = np.take_along_axis(scores, np.minimum(columns, width - 1), axis=1)
    candidates[columns >= width] = -np.inf
    picked = np.argpartition(-candidates, k - 1, axis=1)[:, :k]
    return np.take_along_axis(columns, picked, axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Translate standard input with an s2s "
                                                 "export folder (onnxruntime, no PyTorch).")
    parser.add_argument("folder", nargs="?", default=str(Path(__file__).parent),
                        help="the export folder (default: this script's)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1: greedy)")
    parser.add_argument("--scores", action="store_true", help="print TEXT<TAB>SCORE")
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args(argv)
    if options.beam is not None and options.beam < 1:
        parser.error("--beam must be at least 1")
    try:
        translator = ExportedTranslator(options.folder, threads=options.threads)
    except (OSError, ValueError, KeyError, *_ONNXRUNTIME_ERRORS) as error:
        print(f"error: {options.folder}: not a readable s2s export folder ({error})",
              file=sys.stderr)
        return 2
    # undecodable bytes become U+FFFD: one bad line must not stop the others
    lines = sys.stdin.buffer.read().decode("utf-8", errors="replace").splitlines()
    for text, score in translator.translate(lines, options.beam):
        print(f"{text}\t{score:.4f}" if options.scores else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
