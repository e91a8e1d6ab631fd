"""`s2s prepare`: clean the raw corpus, train sentencepiece, and write encoded splits.

Everything is written into ``RUN_DIR/data.partial`` and renamed to ``RUN_DIR/data`` only when
complete, with ``manifest.json`` (hashes of the inputs and of the config that shaped the data)
as the completion marker: a prepare killed half-way leaves nothing a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

import s2s

from s2s.config import Config, config_to_dict, dump_config
from s2s.encoded import EncodedSide, EncodedSplit, save_split
from s2s.errors import DataError
from s2s.report import Reporter, make_table
from s2s.textio import parallel_paths, read_bytes, read_parallel, side_normalization
from s2s.vocab import UNK_ID, Tokenizer, train_sentencepiece

SPLITS = ("train", "valid", "test")
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
FILTER_RULES = ("empty side", "too many characters", "duplicate pair", "too many tokens",
                "length ratio")


@dataclass(frozen=True)
class PrepareResult:
    data_dir: Path
    up_to_date: bool
    manifest: dict[str, Any]


def run_data_dir(run_dir: Path) -> Path:
    return run_dir / "data"


def data_dir(config: Config) -> Path:
    return run_data_dir(config.run_dir)


def spm_paths(directory: Path) -> tuple[Path, Path]:
    """The source and target sentencepiece models (the same content when joint)."""
    return directory / "spm.src.model", directory / "spm.tgt.model"


def data_config_hash(config: Config) -> str:
    """A hash of the settings that shape prepared data (not the input paths themselves)."""
    sections = {name: config_to_dict(getattr(config, name)) for name in ("data", "vocab")}
    for split in SPLITS:
        sections["data"].pop(split)
    sections["format"] = FORMAT_VERSION
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare(config: Config, *, force: bool = False, reporter: Reporter = Reporter()
            ) -> PrepareResult:
    """Build ``RUN_DIR/data`` from the config's corpus, unless it is already up to date."""
    target = data_dir(config)
    inputs_hash = _inputs_hash(config)
    config_hash = data_config_hash(config)
    existing = read_manifest(target)
    if (not force and existing and existing.get("inputs_hash") == inputs_hash
            and existing.get("config_hash") == config_hash):
        reporter.info(f"prepared data in {target} is up to date")
        return PrepareResult(target, True, existing)
    if existing:
        reporter.info("inputs or data/vocab settings changed: rebuilding prepared data")
    partial = _fresh_directory(config.run_dir / "data.partial")
    started = time.perf_counter()
    manifest = _build(config, partial, reporter)
    manifest.update(inputs_hash=inputs_hash, config_hash=config_hash,
                    seconds=round(time.perf_counter() - started, 2))
    _write_text(partial / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False))
    _swap_in(partial, target)
    _write_text(config.run_dir / "config.yaml", dump_config(config))
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
            else:
                _save_lines(out, split, src_lines, tgt_lines)
            encoded[split] = EncodedSplit(EncodedSide.from_lists(src_ids, len(src_tok)),
                                          EncodedSide.from_lists(tgt_ids, len(tgt_tok)))
            save_split(out, split, encoded[split])
        progress.advance(amount=2, status="encoded")
    return _manifest(config, tokenizers, encoded, dropped)


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


def _manifest(config: Config, tokenizers: tuple[Tokenizer, Tokenizer],
              encoded: dict[str, EncodedSplit], dropped: dict[str, int]) -> dict[str, Any]:
    splits = {}
    for split, data in encoded.items():
        splits[split] = {
            "pairs": len(data),
            "src_tokens": int(data.src.offsets[-1]),
            "tgt_tokens": int(data.tgt.offsets[-1]),
            "unknown_tokens": int(np.count_nonzero(data.src.ids == UNK_ID)
                                  + np.count_nonzero(data.tgt.ids == UNK_ID)),
        }
    data = config.data
    return {
        "format": FORMAT_VERSION,
        "src_lang": data.src_lang,
        "tgt_lang": data.tgt_lang,
        # what shaped these files, so that a difference between two machines can be traced
        "normalization": {"src": side_normalization(data.normalization, data.src_lang),
                          "tgt": side_normalization(data.normalization, data.tgt_lang)},
        "settings": {name: config_to_dict(getattr(config, name)) for name in ("data", "vocab")},
        "versions": {"s2s": s2s.__version__, "sentencepiece": spm.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "joint": config.vocab.joint,
        "src_vocab_size": len(tokenizers[0]),
        "tgt_vocab_size": len(tokenizers[1]),
        "splits": splits,
        "dropped": dropped,
    }


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


def _inputs_hash(config: Config) -> str:
    """Hash the six input files' contents; also checks that they exist and are files."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for path in parallel_paths(getattr(config.data, split), config.data.src_lang,
                                   config.data.tgt_lang):
            digest.update(hashlib.sha256(read_bytes(path)).digest())
    return digest.hexdigest()


def _save_lines(out: Path, split: str, src_lines: list[str], tgt_lines: list[str]) -> None:
    """Keep the cleaned text of valid/test: evaluation scores against these references."""
    for side, lines in (("src", src_lines), ("tgt", tgt_lines)):
        _write_text(out / f"{split}.{side}.txt", "".join(line + "\n" for line in lines))


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


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot write: {error.strerror}") from None
