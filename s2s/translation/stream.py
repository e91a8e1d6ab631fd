"""`s2s translate`: stream text through a translator, one output line per input line.

Input is read in chunks; each chunk is sorted by length for batching and written back in input
order, so memory stays bounded and the first lines come out before the input ends. When the
input pauses (an interactive pipe), the lines read so far are translated at once.

With a terms format (``--prefix``, ``--constraints``: ``s2s.translation.terms``) a line whose
terms cannot be kept is reported by number and gets an empty output line, so N lines in are
still N lines out; the stream then ends with a ``TermsError`` (a non-zero exit).
"""

from __future__ import annotations

import select
from typing import BinaryIO, Iterator, TextIO

from s2s.report import Reporter
from s2s.translation.output import OutputFormat
from s2s.translation.terms import NO_LINE_TERMS, TermsError, parse_terms_line
from s2s.translation.translator import Translator

CHUNK_LINES = 2000


def translate_stream(translator: Translator, source: BinaryIO, target: TextIO,
                     output: OutputFormat = OutputFormat(), *, chunk_lines: int = CHUNK_LINES,
                     progress_total: int | None = None, prefix: bool = False,
                     constraints: bool = False) -> int:
    """Translate every line of ``source`` to ``target`` in order, written as ``output``
    says; return the line count. ``prefix``, ``constraints``: the lines carry those terms
    after tabs (module docstring).

    A progress bar is shown only for input of known size (a file) on a terminal.
    """
    count, refused = 0, 0
    reporter = translator.reporter if progress_total is not None else Reporter()
    with reporter.progress("translate", total=progress_total, unit="lines") as bar:
        for chunk in _chunks(source, chunk_lines):
            lines, terms = [], []
            for number, raw in enumerate(chunk, count + 1):
                line = _decode_line(raw, number, translator.reporter)
                try:
                    text, line_terms = parse_terms_line(line, prefix=prefix,
                                                        constraints=constraints, number=number)
                    translator.check_terms(text, line_terms, number)
                except TermsError as error:
                    translator.reporter.error(str(error))
                    text, line_terms = "", NO_LINE_TERMS
                    refused += 1
                lines.append(text)
                terms.append(line_terms)
            for result in translator.translate(lines, first_line=count + 1, terms=terms,
                                               with_attention=output.with_attention):
                target.write(output.line(result) + "\n")
            target.flush()
            count += len(chunk)
            bar.advance(len(chunk))
    if refused:
        raise TermsError(f"{refused} of {count} lines not translated (their empty output lines "
                         "keep the others in place): their prefix or constraints cannot be "
                         "kept, see above")
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
