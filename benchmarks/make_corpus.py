"""Write a large synthetic parallel corpus, to measure `s2s prepare` and `s2s train` at scale.

Usage: python benchmarks/make_corpus.py PREFIX --pairs 1000000 [--zh] [--seed 1] [--gzip]

Writes PREFIX.en and PREFIX.de (PREFIX.zh with --zh, written without spaces between words).
Word types follow a Zipf law over a vocabulary of 300,000 made-up words a side (syllables;
CJK characters for Chinese); sentence
lengths a log-normal law with a long tail (mean about 20 words, a few over 100); each source
word has its own target word, with local reordering, so the pairs are translations of a sort.
About 3% of the pairs repeat an earlier pair, and about 1% are junk for the filters: an empty
side, a side of thousands of characters, or a one-word side against a long one. Every line
is distinct otherwise. The same seed writes the same files.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

VOCABULARY = 300_000
BLOCK = 50_000  # pairs generated at a time
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(rng: np.random.Generator, size: int, chinese: bool) -> np.ndarray:
    """``size`` distinct made-up words, the frequent ones short: word i spells i in a
    shuffled alphabet of syllables (or, for Chinese, of 3,000 CJK characters)."""
    letters = [chr(code) for code in range(0x4E00, 0x4E00 + 3000)] if chinese else SYLLABLES
    alphabet = np.array(letters, dtype=object)[rng.permutation(len(letters))]
    base, words = len(alphabet), []
    for index in range(size):
        digits = [alphabet[index % base]]
        index //= base
        while index or len(digits) < (1 if chinese else 2):
            digits.append(alphabet[index % base])
            index //= base
        words.append("".join(digits))
    return np.array(words, dtype=object)


def sentence_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    """Log-normal: median 16 words, mean about 20, a long tail cut at 250."""
    return np.clip(rng.lognormal(mean=np.log(16), sigma=0.65, size=count), 1, 250).astype(int)


def write_block(rng: np.random.Generator, count: int, words: tuple[np.ndarray, np.ndarray],
                joiner: str, streams: tuple[TextIO, TextIO], earlier: list[tuple[str, str]]
                ) -> None:
    """``count`` pairs: mostly fresh, some repeats of ``earlier`` ones, a little junk."""
    lengths = sentence_lengths(rng, count)
    ids = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % VOCABULARY  # the tail wraps round
    start = 0
    for length, kind in zip(lengths, rng.random(count)):
        chosen = ids[start:start + length]
        start += length
        if kind < 0.03 and earlier:
            source, target = earlier[rng.integers(len(earlier))]
        else:
            source = " ".join(words[0][chosen])
            order = np.arange(length)
            swaps = rng.random(length // 2) < 0.3  # local reordering of neighbours
            pairs = order[: 2 * (length // 2)].reshape(-1, 2)
            pairs[swaps] = pairs[swaps][:, ::-1]
            target = joiner.join(words[1][chosen[order]])
            if kind > 0.99:
                source, target = junk(rng, source, target)
            elif len(earlier) < 10_000:
                earlier.append((source, target))
        streams[0].write(source + "\n")
        streams[1].write(target + "\n")


def junk(rng: np.random.Generator, source: str, target: str) -> tuple[str, str]:
    kind = rng.integers(3)
    if kind == 0:
        return source, ""
    if kind == 1:
        return (source + " ") * 200, target
    return source.split()[0] + " " + " ".join([source] * 6), target[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--zh", action="store_true", help="a Chinese target side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gzip", action="store_true", help="write PREFIX.LANG.gz")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    words = (vocabulary(rng, VOCABULARY, False), vocabulary(rng, VOCABULARY, args.zh))
    target_lang, joiner = ("zh", "") if args.zh else ("de", " ")
    suffix = ".gz" if args.gzip else ""
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(f"{args.prefix}.{lang}{suffix}") for lang in ("en", target_lang)]
    opener = (lambda path: gzip.open(path, "wt", encoding="utf-8", compresslevel=3)) if (
        args.gzip) else (lambda path: open(path, "w", encoding="utf-8"))
    earlier: list[tuple[str, str]] = []
    with opener(paths[0]) as source, opener(paths[1]) as target:
        for start in range(0, args.pairs, BLOCK):
            write_block(rng, min(BLOCK, args.pairs - start), words, joiner, (source, target),
                        earlier)
            print(f"\r{start + BLOCK:,} pairs", end="", file=sys.stderr, flush=True)
    print(f"\nwrote {paths[0]} and {paths[1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
