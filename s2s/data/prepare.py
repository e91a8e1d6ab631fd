"""`s2s prepare`: clean the raw corpus, train sentencepiece, and write encoded splits.

The files and their manifest are described in s2s.data.store. Everything is written into
``RUN_DIR/data.partial`` and renamed to ``RUN_DIR/data`` only when complete, with the
manifest (hashes of the inputs and of the config that shaped the data) as the completion
marker: a prepare killed half-way leaves nothing a later run would trust.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2s.config import Config, dump_config
from s2s.data.store import (
    SPLITS,
    EncodedSide,
    EncodedSplit,
    build_manifest,
    data_config_hash,
    inputs_hash,
    read_manifest,
    save_split,
    save_text,
    spm_paths,
    write_manifest,
    write_text,
)
from s2s.data.text import read_parallel, side_normalization
from s2s.data.vocab import Tokenizer, train_sentencepiece
from s2s.errors import DataError
from s2s.report import Reporter, make_table
from s2s.run.directory import RunDir

FILTER_RULES = ("empty side", "too many characters", "duplicate pair", "too many tokens",
                "length ratio")


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
    manifest = _build(config, partial, reporter)
    manifest.update(inputs_hash=input_hash, config_hash=config_hash,
                    seconds=round(time.perf_counter() - started, 2))
    write_manifest(partial, manifest)  # the completion marker, written last
    _swap_in(partial, target)
    write_text(run.config_file, dump_config(config))
    _report_summary(manifest, reporter)
    return PrepareResult(target, False, manifest)


def _build(config: Config, out: Path, reporter: Reporter) -> dict[str, Any]:
    """Read, filter, train vocabularies, encode and save; return the manifest."""
    with reporter.progress("prepare", total=5) as progress:
        texts = {}
        for split in SPLITS:
            texts[split] = _read_split(config, split, reporter)
            progress.advance(status=f"read {split}")
        train_src, train_tgt, dropped = _filter_text(config, *texts["train"])
        tokenizers = _train_vocabularies(config, train_src, train_tgt, out)
        progress.advance(status="trained vocabularies")
        src_tok, tgt_tok = tokenizers
        encoded = {}
        for split in SPLITS:
            src_lines, tgt_lines = (train_src, train_tgt) if split == "train" else texts[split]
            src_ids, tgt_ids = src_tok.encode(src_lines), tgt_tok.encode(tgt_lines)
            if split == "train":
                src_ids, tgt_ids = _filter_tokens(config, src_ids, tgt_ids, dropped)
                if not src_ids:
                    raise DataError(f"{config.data.train}: no training pairs left after filtering "
                                    f"({_dropped_text(dropped)}); relax the data.* limits")
            else:  # the cleaned text of valid/test: evaluation translates these sources
                save_text(out, split, "src", src_lines)
                save_text(out, split, "tgt", tgt_lines)
            encoded[split] = EncodedSplit(EncodedSide.from_lists(src_ids, len(src_tok)),
                                          EncodedSide.from_lists(tgt_ids, len(tgt_tok)))
            save_split(out, split, encoded[split])
        progress.advance(amount=2, status="encoded")
    return build_manifest(config, (len(src_tok), len(tgt_tok)), encoded, dropped)


def _read_split(config: Config, split: str, reporter: Reporter) -> tuple[list[str], list[str]]:
    data = config.data
    src, tgt, replaced = read_parallel(getattr(data, split), data.src_lang, data.tgt_lang,
                                       invalid_utf8=data.invalid_utf8,
                                       normalization=data.normalization)
    if replaced:
        reporter.warn(f"{split}: {replaced} lines had invalid UTF-8, replaced with U+FFFD")
    return src, tgt


def _filter_text(config: Config, src: list[str], tgt: list[str]
                 ) -> tuple[list[str], list[str], dict[str, int]]:
    """Drop empty, over-long and duplicate training pairs; count each rule."""
    dropped = dict.fromkeys(FILTER_RULES, 0)
    seen: set[tuple[str, str]] = set()
    kept_src, kept_tgt = [], []
    for source, target in zip(src, tgt):
        if not source or not target:
            dropped["empty side"] += 1
        elif max(len(source), len(target)) > config.data.max_chars:
            dropped["too many characters"] += 1
        elif config.data.dedupe and (source, target) in seen:
            dropped["duplicate pair"] += 1
        else:
            seen.add((source, target))
            kept_src.append(source)
            kept_tgt.append(target)
    if not kept_src:
        raise DataError(f"{config.data.train}: no training pairs left after filtering "
                        f"({_dropped_text(dropped)})")
    return kept_src, kept_tgt, dropped


def _filter_tokens(config: Config, src_ids: list[list[int]], tgt_ids: list[list[int]],
                   dropped: dict[str, int]) -> tuple[list[list[int]], list[list[int]]]:
    """Drop training pairs that are too long in tokens or too unbalanced."""
    kept_src, kept_tgt = [], []
    for source, target in zip(src_ids, tgt_ids):
        shorter, longer = sorted((len(source), len(target)))
        if longer > config.data.max_tokens:
            dropped["too many tokens"] += 1
        elif longer > config.data.max_length_ratio * max(shorter, 1):
            dropped["length ratio"] += 1
        else:
            kept_src.append(source)
            kept_tgt.append(target)
    return kept_src, kept_tgt


def _train_vocabularies(config: Config, src: list[str], tgt: list[str], out: Path
                        ) -> tuple[Tokenizer, Tokenizer]:
    src_path, tgt_path = spm_paths(out)
    vocab, data = config.vocab, config.data
    src_rule = side_normalization(data.normalization, data.src_lang)
    tgt_rule = side_normalization(data.normalization, data.tgt_lang)
    if vocab.joint:
        rule = src_rule if src_rule == tgt_rule else "nfc"  # never fold the NFC side's text
        train_sentencepiece(src + tgt, src_path, vocab.src_size, vocab, rule)
        shutil.copyfile(src_path, tgt_path)
    else:
        train_sentencepiece(src, src_path, vocab.src_size, vocab, src_rule)
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
    reporter.table(make_table("training pairs dropped", ["rule", "pairs"],
                              [[rule, count] for rule, count in manifest["dropped"].items()]))
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

