"""`s2s prepare`: clean the raw corpus, train sentencepiece, and write encoded splits.

The files and their manifest are described in s2s.data.store. Everything is written into
``RUN_DIR/data.partial`` and renamed to ``RUN_DIR/data`` only when complete, with the
manifest (hashes of the inputs and of the config that shaped the data) as the completion
marker: a prepare killed half-way leaves nothing a later run would trust.
"""

from __future__ import annotations

import collections
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from s2s.config import Config, dump_config
from s2s.data.chunks import (
    CONTROL_CHARACTERS,
    DUPLICATE,
    EMPTY,
    KEPT,
    TOO_LONG,
    WRONG_SCRIPT,
    Chunk,
    TextRules,
    TokenRules,
    encode_chunk,
    in_order,
    pair_text,
    read_chunks,
    scan_chunk,
    usable_cores,
)
from s2s.data.moses import plain_text
from s2s.data.store import (
    EncodedSide,
    EncodedSplit,
    SplitWriter,
    build_manifest,
    data_config_hash,
    inputs_hash,
    read_manifest,
    save_split,
    save_text,
    split_stats,
    spm_paths,
    write_manifest,
    write_text,
)
from s2s.data.text import (
    COMPRESSION,
    check_readable,
    parallel_paths,
    read_parallel,
    side_normalization,
)
from s2s.data.vocab import Tokenizer, sample_indices, train_sentencepiece
from s2s.errors import DataError
from s2s.report import Reporter, make_table
from s2s.rundir import RunDir

FILTER_RULES = ("empty side", "too many characters", "wrong script", "control characters",
                "duplicate pair", "too many tokens", "length ratio")


@dataclass(frozen=True)
class PrepareResult:
    data_dir: Path
    up_to_date: bool
    manifest: dict[str, Any]


def prepare(config: Config, *, force: bool = False, reporter: Reporter = Reporter()
            ) -> PrepareResult:
    """Build ``RUN_DIR/data`` from the config's corpus, unless it is already up to date."""
    run = RunDir(config.run_dir)
    target = run.data
    input_hash, config_hash = inputs_hash(config), data_config_hash(config)
    existing = read_manifest(target)
    if (not force and existing and existing.get("inputs_hash") == input_hash
            and existing.get("config_hash") == config_hash):
        reporter.info(f"prepared data in {target} is up to date")
        return PrepareResult(target, True, existing)
    if existing:
        reporter.info("inputs or data/vocab settings changed: rebuilding prepared data")
    partial = _fresh_directory(run.data_partial)
    started = time.perf_counter()
    try:
        manifest = _build(config, partial, reporter)
    except BaseException:  # bad input or Ctrl-C: the half-built files go, the old data stays
        shutil.rmtree(partial, ignore_errors=True)
        raise
    manifest.update(inputs_hash=input_hash, config_hash=config_hash,
                    seconds=round(time.perf_counter() - started, 2))
    write_manifest(partial, manifest)  # the completion marker, written last
    _swap_in(partial, target)
    write_text(run.config_file, dump_config(config))
    _report_summary(manifest, reporter)
    return PrepareResult(target, False, manifest)


def _build(config: Config, out: Path, reporter: Reporter) -> dict[str, Any]:
    """Filter the training pairs, train vocabularies, encode and save every split; return the
    manifest, with the seconds each pass took. The training corpora are streamed
    (s2s.data.chunks); valid and test are small and read whole."""
    clock = _PassClock()
    corpora = _TrainingCorpora.of(config)
    keep, status, sizes = _scan(corpora, reporter)
    corpora = corpora.with_sizes(sizes)
    clock.lap("filter")
    sample = _vocabulary_sample(corpora, keep, config.vocab.joint)
    clock.lap("vocabulary sample")
    tokenizers = _train_vocabularies(config, *sample, out)
    del sample
    clock.lap("vocabulary training")
    sizes = (len(tokenizers[0]), len(tokenizers[1]))
    stats, reports = _encode_training_pairs(corpora, keep, status, tokenizers, out, reporter)
    clock.lap("encode")
    dropped = {rule: sum(report["dropped"][rule] for report in reports) for rule in FILTER_RULES}
    if not stats["pairs"]:
        raise DataError(f"{corpora.name}: no training pairs left after filtering "
                        f"({_dropped_text(dropped)}); relax the data.* limits")
    splits = {"train": stats}
    for split in ("valid", "test"):  # their cleaned text is what evaluation translates
        src_lines, tgt_lines = _read_split(config, split, reporter)
        save_text(out, split, "src", src_lines)
        save_text(out, split, "tgt", tgt_lines)
        encoded = EncodedSplit(EncodedSide.from_lists(tokenizers[0].encode(src_lines), sizes[0]),
                               EncodedSide.from_lists(tokenizers[1].encode(tgt_lines), sizes[1]))
        save_split(out, split, encoded)
        splits[split] = split_stats(encoded)
    clock.lap("valid and test")
    manifest = build_manifest(config, sizes, splits, dropped, reports)
    manifest["pass_seconds"] = clock.laps
    return manifest


class _PassClock:
    """Seconds per pass of `s2s prepare`, for the manifest: where the time goes."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


@dataclass(frozen=True)
class _Corpus:
    """One training corpus: its path prefix and two files, its tag, and its first pair's
    position among all the training pairs."""

    prefix: Path
    paths: tuple[Path, Path]
    tag: str
    start: int
    pairs: int


@dataclass(frozen=True)
class _TrainingCorpora:
    """The training corpora's files (read one after another, as one sequence of pairs), the
    rules that clean them, and the processes that do it."""

    config: Config
    corpora: tuple[_Corpus, ...]
    rules: TextRules
    workers: int

    @classmethod
    def of(cls, config: Config) -> "_TrainingCorpora":
        data = config.data
        corpora = []
        for corpus in data.train:
            paths = parallel_paths(corpus.path, data.src_lang, data.tgt_lang)
            for path in paths:
                check_readable(path)
                if path.stat().st_size == 0:
                    raise DataError(f"{path}: data file is empty")
            # where its pairs start and how many there are: known after the first pass
            corpora.append(_Corpus(corpus.path, paths, corpus.tag, start=0, pairs=0))
        tags = tuple(dict.fromkeys((corpus.tag, f"{data.corpus_key(index)}.tag")
                                   for index, corpus in enumerate(data.train) if corpus.tag))
        rules = TextRules(side_normalization(data.normalization, data.src_lang),
                          side_normalization(data.normalization, data.tgt_lang),
                          data.invalid_utf8, data.max_chars, ("", ""), tags,
                          (data.src_lang, data.tgt_lang) if data.script_filter else None)
        return cls(config, tuple(corpora), rules, data.workers or usable_cores())

    @property
    def name(self) -> str:
        """The corpora, for messages."""
        return ", ".join(str(corpus.path) for corpus in self.config.data.train)

    def with_sizes(self, sizes: list[int]) -> "_TrainingCorpora":
        """These corpora once their pair counts are known (after the first pass)."""
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        return replace(self, corpora=tuple(
            replace(corpus, start=int(start), pairs=size)
            for corpus, start, size in zip(self.corpora, starts, sizes)))

    def chunks(self) -> Iterator[tuple[int, TextRules, Chunk]]:
        """Every corpus's chunks in turn: (corpus index, its rules, chunk)."""
        for index, corpus in enumerate(self.corpora):
            rules = replace(self.rules, paths=(str(corpus.paths[0]), str(corpus.paths[1])))
            for chunk in read_chunks(corpus.paths, corpus.start):
                yield index, rules, chunk


def _scan(corpora: _TrainingCorpora, reporter: Reporter
          ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Pass 1: which training pairs the text filters keep (a mask over all the pairs), with
    exact duplicates found by 64-bit hashes of their text; each pair's fate (a
    s2s.data.chunks status, or DUPLICATE); and each corpus's number of pairs."""
    statuses, hashes, replaced, sizes = [], [], 0, [0] * len(corpora.corpora)
    # how many pairs there are is known only at the end: the bar's total is estimated from
    # the share of the source files' bytes read so far (not for compressed files)
    source_bytes = sum(corpus.paths[0].stat().st_size for corpus in corpora.corpora)
    estimable = not any(corpus.paths[0].suffix in COMPRESSION for corpus in corpora.corpora)
    read = {"bytes": 0, "pairs": 0}

    def jobs() -> Iterator[tuple[int, tuple]]:
        for index, rules, chunk in corpora.chunks():
            read["bytes"] += sum(map(len, chunk.sources))
            read["pairs"] += len(chunk.sources)
            yield index, (rules, chunk)

    with reporter.progress("filter", total=None, unit="pairs") as bar:
        for index, (status, chunk_hashes, bad) in _on_workers(scan_chunk, jobs(),
                                                              corpora.workers):
            statuses.append(status)
            hashes.append(chunk_hashes)
            replaced += bad
            sizes[index] += len(status)
            if estimable and read["bytes"]:
                bar.set_total(read["pairs"] * max(source_bytes / read["bytes"], 1.0))
            bar.advance(len(status))
    if replaced:
        reporter.warn(f"train: {replaced} lines had invalid UTF-8, replaced with U+FFFD")
    status = np.concatenate(statuses)
    candidates = np.flatnonzero(status == KEPT)
    keep = np.zeros(len(status), dtype=bool)
    if corpora.config.data.dedupe:  # the first of equal pairs stays, whichever its corpus
        _, first = np.unique(np.concatenate(hashes)[candidates], return_index=True)
        keep[candidates[first]] = True
    else:
        keep[candidates] = True
    status[(status == KEPT) & ~keep] = DUPLICATE
    if not keep.any():
        raise DataError(f"{corpora.name}: no training pairs left after filtering "
                        f"({_dropped_text(_text_drops(status))})")
    return keep, status, sizes


def _on_workers(work: Callable[..., Any], jobs: Iterator[tuple[int, tuple]], workers: int
                ) -> Iterator[tuple[int, Any]]:
    """``in_order`` over (corpus index, arguments) pairs: each result with its corpus index."""
    pending: collections.deque[int] = collections.deque()

    def arguments() -> Iterator[tuple]:
        for index, item in jobs:
            pending.append(index)
            yield item

    for result in in_order(work, arguments(), workers):
        yield pending.popleft(), result


def _text_drops(status: np.ndarray) -> dict[str, int]:
    """How many pairs each text filter dropped, out of ``status``; the token filters' rows
    are filled in by the encoding pass."""
    dropped = dict.fromkeys(FILTER_RULES, 0)
    dropped.update({"empty side": int(np.count_nonzero(status == EMPTY)),
                    "too many characters": int(np.count_nonzero(status == TOO_LONG)),
                    "wrong script": int(np.count_nonzero(status == WRONG_SCRIPT)),
                    "control characters": int(np.count_nonzero(status == CONTROL_CHARACTERS)),
                    "duplicate pair": int(np.count_nonzero(status == DUPLICATE))})
    return dropped


def _vocabulary_sample(corpora: _TrainingCorpora, keep: np.ndarray, joint: bool
                       ) -> tuple[list[str], list[str]]:
    """Pass 2: the sentences each vocabulary trains on: ``vocab.max_sentences`` of the kept
    pairs' sides (of both sides together for a joint vocabulary), drawn by s2s.data.vocab's
    fixed-seed sample, so the vocabulary is the one the whole kept text in memory would give."""
    kept = int(keep.sum())
    limit = corpora.config.vocab.max_sentences
    wanted = sample_indices(2 * kept if joint else kept, limit)
    # a pair's rank among the kept ones, and whether each side of it is drawn
    src_drawn = np.zeros(kept, dtype=bool)
    tgt_drawn = np.zeros(kept, dtype=bool)
    if joint:
        src_drawn[wanted[wanted < kept]] = True
        tgt_drawn[wanted[wanted >= kept] - kept] = True
    else:
        src_drawn[wanted] = tgt_drawn[wanted] = True
    sources: list[str] = []
    targets: list[str] = []
    rank = 0
    for _, rules, chunk in corpora.chunks():
        for index in np.flatnonzero(chunk.part(keep)):
            if src_drawn[rank] or tgt_drawn[rank]:
                source, target, _ = pair_text(rules, chunk.first_line + int(index),
                                              chunk.sources[index], chunk.targets[index])
                if src_drawn[rank]:
                    sources.append(source)
                if tgt_drawn[rank]:
                    targets.append(target)
            rank += 1
    return sources, targets


def _encode_training_pairs(corpora: _TrainingCorpora, keep: np.ndarray, status: np.ndarray,
                           tokenizers: tuple[Tokenizer, Tokenizer], out: Path,
                           reporter: Reporter) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Pass 3: encode the kept pairs chunk by chunk (on the workers, written in chunk order),
    drop those too long or too unbalanced in tokens, and write the train split; return its
    stats and, per corpus, its path, tag, pairs kept and pairs dropped by each rule."""
    protos = (tokenizers[0].model_proto, tokenizers[1].model_proto)
    writer = SplitWriter(out, "train", (len(tokenizers[0]), len(tokenizers[1])))
    data = corpora.config.data
    token_rules = TokenRules(data.max_tokens, data.max_length_ratio, writer.dtypes)
    reports = [{"path": str(corpus.prefix), "tag": corpus.tag, "pairs": 0,
                "dropped": _text_drops(status[corpus.start:corpus.start + corpus.pairs])}
               for corpus in corpora.corpora]
    tag_ids = [tokenizers[0].piece_id(corpus.tag) if corpus.tag else None
               for corpus in corpora.corpora]
    jobs = ((index, (rules, token_rules, protos, chunk, chunk.part(keep), tag_ids[index]))
            for index, rules, chunk in corpora.chunks())
    with reporter.progress("encode", total=int(keep.sum()), unit="pairs") as bar:
        for index, encoded in _on_workers(encode_chunk, jobs, corpora.workers):
            writer.add(encoded.ids, encoded.lengths)
            report = reports[index]
            report["pairs"] += len(encoded.lengths[0])
            report["dropped"]["too many tokens"] += encoded.too_many_tokens
            report["dropped"]["length ratio"] += encoded.length_ratio
            bar.advance(len(encoded.lengths[0]) + encoded.too_many_tokens + encoded.length_ratio)
    return writer.close(), reports


def _read_split(config: Config, split: str, reporter: Reporter) -> tuple[list[str], list[str]]:
    data = config.data
    src, tgt, replaced = read_parallel(getattr(data, split), data.src_lang, data.tgt_lang,
                                       invalid_utf8=data.invalid_utf8,
                                       normalization=data.normalization)
    if replaced:
        reporter.warn(f"{split}: {replaced} lines had invalid UTF-8, replaced with U+FFFD")
    if data.src_lang in data.moses_tokenized:
        src = [plain_text(line, data.src_lang) for line in src]
    if data.tgt_lang in data.moses_tokenized:
        tgt = [plain_text(line, data.tgt_lang) for line in tgt]
    return src, tgt


def _train_vocabularies(config: Config, src: list[str], tgt: list[str], out: Path
                        ) -> tuple[Tokenizer, Tokenizer]:
    src_path, tgt_path = spm_paths(out)
    vocab, data = config.vocab, config.data
    src_rule = side_normalization(data.normalization, data.src_lang)
    tgt_rule = side_normalization(data.normalization, data.tgt_lang)
    tags = data.tags  # each one piece of the source vocabulary
    if vocab.joint:
        rule = src_rule if src_rule == tgt_rule else "nfc"  # never fold the NFC side's text
        train_sentencepiece(src + tgt, src_path, vocab.src_size, vocab, rule, tags)
        shutil.copyfile(src_path, tgt_path)
    else:
        train_sentencepiece(src, src_path, vocab.src_size, vocab, src_rule, tags)
        train_sentencepiece(tgt, tgt_path, vocab.tgt_size, vocab, tgt_rule)
    return Tokenizer.from_file(src_path), Tokenizer.from_file(tgt_path)


def _report_summary(manifest: dict[str, Any], reporter: Reporter) -> None:
    rows = []
    for split, stats in manifest["splits"].items():
        pairs = max(stats["pairs"], 1)
        rows.append([split, stats["pairs"], stats["src_tokens"] / pairs,
                     stats["tgt_tokens"] / pairs, stats["unknown_tokens"]])
    reporter.table(make_table("prepared data", ["split", "pairs", "src tokens/sent",
                                                "tgt tokens/sent", "unknown tokens"], rows))
    corpora = manifest["corpora"]
    if len(corpora) == 1:
        reporter.table(make_table("training pairs dropped", ["rule", "pairs"],
                                  [[rule, count] for rule, count in manifest["dropped"].items()]))
    else:
        names = [f"{index}: {Path(corpus['path']).name}" + (f" {corpus['tag']}" if corpus["tag"]
                                                             else "")
                 for index, corpus in enumerate(corpora)]
        rows = [[rule, *(corpus["dropped"][rule] for corpus in corpora), total]
                for rule, total in manifest["dropped"].items()]
        rows.append(["kept", *(corpus["pairs"] for corpus in corpora),
                     manifest["splits"]["train"]["pairs"]])
        reporter.table(make_table("training pairs per corpus (data.train)",
                                  ["rule", *names, "all"], rows))
    reporter.info("seconds per pass: " + ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in manifest.get("pass_seconds", {}).items()))
    vocab = "joint" if manifest["joint"] else "separate"
    reporter.info(f"vocabularies ({vocab}): {manifest['src_lang']} {manifest['src_vocab_size']}, "
                  f"{manifest['tgt_lang']} {manifest['tgt_vocab_size']} pieces")


def _dropped_text(dropped: dict[str, int]) -> str:
    return ", ".join(f"{rule}: {count}" for rule, count in dropped.items() if count) or "none"


def _fresh_directory(path: Path) -> Path:
    try:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    except OSError as error:
        raise DataError(f"{path}: cannot create the run directory: {error.strerror}") from None
    return path


def _swap_in(partial: Path, target: Path) -> None:
    """Replace ``target`` by ``partial`` so that a complete directory is always in place."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)

