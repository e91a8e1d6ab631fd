"""Reading and cleaning raw text: UTF-8 checks with line numbers, Unicode and space normalisation,
gzip and xz corpora decompressed as they are read.

Lines are split on "\\n" only (never on Unicode line separators), so line N of a source file
always stays aligned with line N of its target file.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import re
import unicodedata
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal

from s2s.errors import DataError

Normalization = Literal["nfkc", "nfc", "none"]

# NFKC turns the full-width punctuation of these languages (，。？！：) into ASCII, which their
# references do not use; NFC keeps it
_KEEPS_FULL_WIDTH = {"zh", "ja"}
# written without spaces between words: translated pieces of a long line join with ""
_NO_SPACES = {"zh", "ja", "th", "lo", "km", "my"}
# written in Han characters or kana: a line of theirs without one is in the wrong script, and a
# line of another language with one is too (Korean is left alone: it may mix in Hanja)
_CJK = {"zh", "ja"}
_NO_SCRIPT_RULE = {"ko"}
_CJK_CHARACTER = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# C0 and C1 control characters (tabs and line ends are gone after normalize)
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
# corpora read as they are downloaded: the suffix says how to decompress
COMPRESSION: dict[str, Any] = {".gz": gzip, ".xz": lzma}
# what a decompressor raises on data that is damaged or cut short
DAMAGED = (EOFError, OSError, lzma.LZMAError, zlib.error)


def base_language(code: str) -> str:
    """``zh`` for zh, zh-Hans, zh_TW, ZH."""
    return code.replace("_", "-").split("-")[0].lower()


def side_normalization(setting: str, language: str) -> Normalization:
    """The normalisation of one side: ``auto`` is NFC for Chinese and Japanese, else NFKC."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    return "nfc" if base_language(language) in _KEEPS_FULL_WIDTH else "nfkc"


def joiner(language: str) -> str:
    """What goes between the translations of a long line's pieces in ``language``."""
    return "" if base_language(language) in _NO_SPACES else " "


def in_wrong_script(text: str, language: str) -> bool:
    """Whether a line cannot be ``language`` by its script: Chinese or Japanese without a
    Han character or kana, any other language (but Korean) with one."""
    base = base_language(language)
    if base in _NO_SCRIPT_RULE:
        return False
    return (_CJK_CHARACTER.search(text) is None) == (base in _CJK)


def has_control_characters(text: str) -> bool:
    return _CONTROL_CHARACTER.search(text) is not None


def normalize(text: str, normalization: Normalization) -> str:
    """Apply Unicode normalisation, then collapse all whitespace runs to one space."""
    if normalization != "none":
        text = unicodedata.normalize(normalization.upper(), text)
    return " ".join(text.split())


def read_lines(path: Path, *, invalid_utf8: Literal["error", "replace"] = "error",
               normalization: Normalization = "nfkc") -> tuple[list[str], int]:
    """Read a corpus file as normalised lines; return them and how many had invalid UTF-8.

    Raises DataError naming the file (and line) when it is missing, a directory, unreadable,
    empty, or holds invalid UTF-8 while ``invalid_utf8`` is "error".
    """
    data = read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: data file is empty")
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[str] = []
    replaced = 0
    for number, raw in enumerate(raw_lines, start=1):
        text, bad = decode_line(raw, path, number, invalid_utf8)
        replaced += bad
        lines.append(normalize(text, normalization))
    return lines, replaced


def decode_line(raw: bytes, path: Path | str, number: int, invalid_utf8: str
                ) -> tuple[str, bool]:
    """A corpus line as text, and whether it had invalid UTF-8 (replaced with U+FFFD when
    ``invalid_utf8`` is "replace", else a DataError naming the file and line)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as error:
        if invalid_utf8 == "error":
            raise DataError(f"{path}:{number}: invalid UTF-8 (byte {error.start + 1} of the "
                            "line); fix the file or set data.invalid_utf8: replace") from None
        return raw.decode("utf-8", errors="replace"), True


def damaged_error(path: Path, lines_before: int, error: Exception) -> DataError:
    """The error for compressed data that breaks off after ``lines_before`` whole lines."""
    return DataError(f"{path}:{lines_before + 1}: the compressed data is damaged or cut short "
                     f"after line {lines_before} "
                     f"({str(error).rstrip('.') or type(error).__name__})")


def read_references(path: Path) -> list[str]:
    """Reference translations exactly as distributed (no normalisation): scores compare
    against these. Invalid UTF-8 is replaced rather than refused."""
    data = read_bytes(path)
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_parallel(prefix: Path, src_lang: str, tgt_lang: str, *, normalization: str,
                  invalid_utf8: Literal["error", "replace"] = "error") -> tuple[
        list[str], list[str], int]:
    """Read ``prefix.src_lang`` and ``prefix.tgt_lang``; check that they align line by line.

    Each side is normalised as ``side_normalization(normalization, its language)``.
    """
    src_path, tgt_path = parallel_paths(prefix, src_lang, tgt_lang)
    src_lines, src_replaced = read_lines(
        src_path, invalid_utf8=invalid_utf8,
        normalization=side_normalization(normalization, src_lang))
    tgt_lines, tgt_replaced = read_lines(
        tgt_path, invalid_utf8=invalid_utf8,
        normalization=side_normalization(normalization, tgt_lang))
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"{src_path} has {len(src_lines)} lines but {tgt_path} has "
                        f"{len(tgt_lines)}; parallel files must align line by line")
    return src_lines, tgt_lines, src_replaced + tgt_replaced


def parallel_paths(prefix: Path, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """The two files of a parallel corpus: ``prefix.src_lang`` and ``prefix.tgt_lang``, each
    found compressed (``.gz``, ``.xz``) where only the compressed file exists."""
    return (corpus_file(Path(f"{prefix}.{src_lang}")),
            corpus_file(Path(f"{prefix}.{tgt_lang}")))


def corpus_file(path: Path) -> Path:
    """``path``, or ``path.gz`` or ``path.xz`` when only that exists."""
    if path.exists():
        return path
    for suffix in COMPRESSION:
        compressed = path.with_name(path.name + suffix)
        if compressed.exists():
            return compressed
    return path


def read_bytes(path: Path) -> bytes:
    """A data file's bytes, decompressed when its name ends in .gz or .xz; a missing,
    directory, unreadable or damaged file is a DataError naming it."""
    data = raw_bytes(path)
    opener = COMPRESSION.get(path.suffix)
    if opener is None:
        return data
    try:
        return opener.decompress(data)
    except DAMAGED as error:
        raise damaged_error(path, _lines_before_damage(path), error) from None


@contextlib.contextmanager
def open_stream(path: Path) -> Iterator[BinaryIO]:
    """A data file opened for reading bytes, decompressed as it is read when its name ends in
    .gz or .xz; an unreadable one is a DataError naming it."""
    opener = COMPRESSION.get(path.suffix)
    try:
        stream = opener.open(path, "rb") if opener is not None else open(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    with stream:
        yield stream


def count_lines(path: Path) -> int:
    """How many lines a data file has, decompressed, read a megabyte at a time."""
    with open_stream(path) as stream:
        return sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 20), b""))


def check_readable(path: Path) -> None:
    """A missing path, or a directory, is a DataError naming it."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    if not path.exists():
        raise DataError(f"{path}: data file not found")


def raw_bytes(path: Path) -> bytes:
    """A file's bytes as stored; a missing, directory or unreadable path is a DataError."""
    check_readable(path)
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {os.strerror(error.errno or 0) or error}") from None


def _lines_before_damage(path: Path) -> int:
    """How many whole lines a damaged compressed file yields before it breaks off (to within
    the decompressor's buffer of a few kilobytes)."""
    lines = 0
    try:
        with COMPRESSION[path.suffix].open(path, "rb") as stream:
            for _ in stream:
                lines += 1
    except DAMAGED:
        pass
    return lines
