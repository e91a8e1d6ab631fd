"""The prepared-data format: what `s2s prepare` writes into RUN_DIR/data, and its readers.

    data/
      manifest.json               written last: hashes of the inputs and settings, sizes, versions
      spm.src.model, spm.tgt.model   sentencepiece models (the same content when joint)
      <split>.<side>.ids.npy      a split's token ids, all sentences concatenated (uint16 when
      <split>.<side>.offsets.npy  the vocabulary fits, else int32), and N+1 int64 offsets
      valid.src.txt, test.src.txt the normalised source text that evaluation translates
      valid.tgt.txt, test.tgt.txt the normalised target text, to read (scores use the
                                  references as distributed: s2s.evaluation.validation)

Loading a split maps its files (no reading, no re-tokenising): training on millions of pairs
starts at once and keeps only the pages its batches touch. `s2s prepare` builds the
contents; this module alone knows their names, and checks that prepared data still matches a
config before anyone uses it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

import s2s
from s2s.config import Config, config_to_dict
from s2s.data.text import check_readable, parallel_paths, side_normalization
from s2s.data.vocab import UNK_ID
from s2s.errors import DataError
from s2s.rundir import RunDir

SPLITS = ("train", "valid", "test")
SIDES = ("src", "tgt")
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EncodedSide:
    ids: np.ndarray  # (total_tokens,)
    offsets: np.ndarray  # (N + 1,)

    @classmethod
    def from_lists(cls, sentences: list[list[int]], vocab_size: int) -> "EncodedSide":
        dtype = _ids_dtype(vocab_size)
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((token for s in sentences for token in s), dtype=dtype,
                          count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sentence(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index]:self.offsets[index + 1]]


@dataclass(frozen=True)
class EncodedSplit:
    src: EncodedSide
    tgt: EncodedSide

    def __len__(self) -> int:
        return len(self.src)


def spm_paths(directory: Path) -> tuple[Path, Path]:
    """The source and target sentencepiece models (the same content when joint)."""
    return directory / "spm.src.model", directory / "spm.tgt.model"


def save_split(directory: Path, split: str, encoded: EncodedSplit) -> None:
    for side in SIDES:
        part: EncodedSide = getattr(encoded, side)
        np.save(directory / f"{split}.{side}.ids.npy", part.ids)
        np.save(directory / f"{split}.{side}.offsets.npy", part.offsets)


def load_split(directory: Path, split: str) -> EncodedSplit:
    """A prepared split, memory-mapped: its pages are read when batches touch them, shared by
    every process that maps them (torchrun's too), and never count as a process's own memory."""
    sides = [EncodedSide(np.load(directory / f"{split}.{side}.ids.npy", mmap_mode="r"),
                         np.load(directory / f"{split}.{side}.offsets.npy", mmap_mode="r"))
             for side in SIDES]
    return EncodedSplit(*sides)


def text_path(directory: Path, split: str, side: str) -> Path:
    """The normalised text of a valid or test side."""
    return directory / f"{split}.{side}.txt"


def save_text(directory: Path, split: str, side: str, lines: list[str]) -> None:
    write_text(text_path(directory, split, side), "".join(line + "\n" for line in lines))


def data_config_hash(config: Config) -> str:
    """A hash of the settings that shape prepared data (not the input paths themselves, nor
    the worker count, which changes nothing in the files, nor subword sampling, which acts
    when training batches are made)."""
    sections = {name: config_to_dict(getattr(config, name)) for name in ("data", "vocab")}
    for key in (*SPLITS, "workers", "valid_references", "test_references"):
        sections["data"].pop(key)
    for key in ("sampling_alpha", "sampling_nbest"):  # act in training only
        sections["vocab"].pop(key)
    sections["format"] = FORMAT_VERSION
    corpora = config.data.train
    if len(corpora) > 1 or corpora[0].tag:  # one untagged corpus hashes as before corpora came
        # how many corpora there are and their tags shape the files; weights act in training
        sections["corpora"] = [corpus.tag for corpus in corpora]
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def inputs_hash(config: Config) -> str:
    """Hash the input files' contents; also checks that they exist and are files."""
    digest = hashlib.sha256()
    data = config.data
    for prefix in (*(corpus.path for corpus in data.train), data.valid, data.test):
        for path in parallel_paths(prefix, data.src_lang, data.tgt_lang):
            check_readable(path)
            file_digest = hashlib.sha256()
            with open(path, "rb") as stream:  # a block at a time: corpora can be gigabytes
                for block in iter(lambda: stream.read(1 << 20), b""):
                    file_digest.update(block)
            digest.update(file_digest.digest())
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False))


def split_stats(encoded: EncodedSplit) -> dict[str, int]:
    """A split's pairs, tokens per side and unknown tokens, as the manifest records them."""
    return {"pairs": len(encoded), "src_tokens": int(encoded.src.offsets[-1]),
            "tgt_tokens": int(encoded.tgt.offsets[-1]),
            "unknown_tokens": int(np.count_nonzero(encoded.src.ids == UNK_ID)
                                  + np.count_nonzero(encoded.tgt.ids == UNK_ID))}


class SplitWriter:
    """Writes a split a batch of pairs at a time, for splits too large to hold: ids go to
    disk as they come, and ``close`` turns them into the split's .npy files."""

    def __init__(self, directory: Path, split: str, vocab_sizes: tuple[int, int]) -> None:
        self.directory, self.split = directory, split
        self.dtypes = [_ids_dtype(size) for size in vocab_sizes]
        self.raw = [open(directory / f"{split}.{side}.ids.raw", "wb") for side in SIDES]
        self.lengths: list[list[np.ndarray]] = [[], []]
        self.unknown = 0

    def add(self, ids: tuple[np.ndarray, np.ndarray], lengths: tuple[np.ndarray, np.ndarray]
            ) -> None:
        """Append pairs: each side's ids, concatenated, and each sentence's length."""
        for side in range(2):
            self.raw[side].write(ids[side].astype(self.dtypes[side], copy=False).tobytes())
            self.lengths[side].append(lengths[side])
            self.unknown += int(np.count_nonzero(ids[side] == UNK_ID))

    def close(self) -> dict[str, int]:
        """Write the .npy files; return the split's stats (``split_stats``)."""
        stats = {"pairs": 0, "src_tokens": 0, "tgt_tokens": 0, "unknown_tokens": self.unknown}
        for side, name in enumerate(SIDES):
            self.raw[side].close()
            lengths = np.concatenate(self.lengths[side]) if self.lengths[side] else (
                np.zeros(0, dtype=np.int64))
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            np.save(self.directory / f"{self.split}.{name}.offsets.npy", offsets)
            raw = self.directory / f"{self.split}.{name}.ids.raw"
            _raw_to_npy(raw, self.directory / f"{self.split}.{name}.ids.npy",
                        self.dtypes[side], int(offsets[-1]))
            raw.unlink()
            stats["pairs"], stats[f"{name}_tokens"] = len(lengths), int(offsets[-1])
        return stats


def _ids_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def _raw_to_npy(raw: Path, target: Path, dtype: type, count: int) -> None:
    """The ids in ``raw`` as an .npy file: a header, then the raw bytes copied a block at a
    time. Plain writes, not a memory map: pages of a mapped file count in the resident size,
    and at 20 million pairs a mapped output made `s2s prepare` look 1.4 GB larger."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (count,)}
    with open(target, "wb") as output, open(raw, "rb") as stream:
        np.lib.format.write_array_header_1_0(output, header)
        shutil.copyfileobj(stream, output, 1 << 24)


def build_manifest(config: Config, vocab_sizes: tuple[int, int],
                   splits: dict[str, dict[str, int]], dropped: dict[str, int],
                   corpora: list[dict[str, Any]]) -> dict[str, Any]:
    """What the files hold and what shaped them, so that two machines' results can be traced.
    ``corpora``: per training corpus, in order, its path, tag, kept pairs and dropped pairs
    (the train split holds their pairs one corpus after another)."""
    data = config.data
    return {
        "format": FORMAT_VERSION,
        "src_lang": data.src_lang,
        "tgt_lang": data.tgt_lang,
        "normalization": {"src": side_normalization(data.normalization, data.src_lang),
                          "tgt": side_normalization(data.normalization, data.tgt_lang)},
        "settings": {name: config_to_dict(getattr(config, name)) for name in ("data", "vocab")},
        "versions": {"s2s": s2s.__version__, "sentencepiece": spm.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "joint": config.vocab.joint,
        "src_vocab_size": vocab_sizes[0],
        "tgt_vocab_size": vocab_sizes[1],
        "splits": splits,
        "dropped": dropped,
        "corpora": corpora,
    }


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot write: {error.strerror}") from None


@dataclass(frozen=True)
class PreparedData:
    """The prepared data of a run, checked against the config that will use it."""

    directory: Path
    manifest: dict[str, Any]

    @classmethod
    def of(cls, config: Config) -> "PreparedData":
        directory = RunDir(config.run_dir).data
        manifest = read_manifest(directory)
        if manifest is None:
            raise DataError(f"{directory}: no prepared data; run `s2s prepare` with this config "
                            "(and the same --set options) first")
        if manifest.get("config_hash") != data_config_hash(config):
            raise DataError(f"{directory}: prepared data no longer matches the config's "
                            "data/vocab settings; run `s2s prepare` again (with the same --set "
                            "options)")
        return cls(directory, manifest)

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def vocab_sizes(self) -> tuple[int, int]:
        return self.manifest["src_vocab_size"], self.manifest["tgt_vocab_size"]

    @property
    def joint(self) -> bool:
        return self.manifest["joint"]

    def split(self, name: str) -> EncodedSplit:
        return load_split(self.directory, name)

    @property
    def corpus_sizes(self) -> list[int]:
        """Training pairs per corpus, in the order the train split holds them (data prepared
        before several corpora existed has one)."""
        corpora = self.manifest.get("corpora")
        if corpora is None:
            return [self.manifest["splits"]["train"]["pairs"]]
        return [corpus["pairs"] for corpus in corpora]

    def vocabularies(self) -> dict[str, bytes]:
        """The source and target sentencepiece models' bytes."""
        src_model, tgt_model = spm_paths(self.directory)
        return {"src": src_model.read_bytes(), "tgt": tgt_model.read_bytes()}


def prepared_sources(run_dir: Path, split: str) -> list[str]:
    """The normalised source lines of a prepared valid or test split."""
    directory = RunDir(run_dir).data
    path = text_path(directory, split, "src")
    if not path.exists():
        raise DataError(f"{directory}: no prepared {split} split; run `s2s prepare` first")
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def prepared_vocabularies(run_dir: Path) -> dict[str, bytes] | None:
    """The sentencepiece models a run was prepared with, or None before `s2s prepare`."""
    paths = spm_paths(RunDir(run_dir).data)
    if not all(path.exists() for path in paths):
        return None
    return {"src": paths[0].read_bytes(), "tgt": paths[1].read_bytes()}
