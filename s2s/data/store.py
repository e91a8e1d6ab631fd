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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

import s2s
from s2s.config import Config, config_to_dict
from s2s.data.text import parallel_paths, raw_bytes, side_normalization
from s2s.data.vocab import UNK_ID
from s2s.errors import DataError
from s2s.run.directory import RunDir

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
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
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
    """A hash of the settings that shape prepared data (not the input paths themselves)."""
    sections = {name: config_to_dict(getattr(config, name)) for name in ("data", "vocab")}
    for split in SPLITS:
        sections["data"].pop(split)
    sections["format"] = FORMAT_VERSION
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def inputs_hash(config: Config) -> str:
    """Hash the six input files' contents; also checks that they exist and are files."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for path in parallel_paths(getattr(config.data, split), config.data.src_lang,
                                   config.data.tgt_lang):
            digest.update(hashlib.sha256(raw_bytes(path)).digest())
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False))


def build_manifest(config: Config, vocab_sizes: tuple[int, int],
                   encoded: dict[str, EncodedSplit], dropped: dict[str, int]
                   ) -> dict[str, Any]:
    """What the files hold and what shaped them, so that two machines' results can be traced."""
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
