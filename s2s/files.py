"""Files that appear whole or not at all: the one way s2s writes a checkpoint, a table, a
record or an export's pieces, so that Ctrl-C, a crash or a full disk at any moment leaves the
old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def written_whole(path: Path, *, binary: bool = True, durable: bool = False
                  ) -> Iterator[IO[Any]]:
    """A file to write that becomes ``path`` when the block ends without an error: written
    beside it under a temporary name, then renamed over it (the rename is atomic). On an
    error the temporary file is removed and ``path`` is left as it was. ``durable``: also
    flushed to the disk, with the directory entry, before and after the rename (what a
    checkpoint needs to survive a power cut)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                         dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide checkpoints from the group
            os.fchmod(handle, _new_file_mode())
        with os.fdopen(handle, "wb" if binary else "w",
                       **({} if binary else {"encoding": "utf-8"})) as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        sync_directory(path.parent)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process's umask, read from /proc
    where the system has it (``os.umask`` reads it only by changing it, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def write_text_whole(path: Path, text: str) -> None:
    """``text`` (UTF-8) into ``path`` whole or not at all."""
    with written_whole(path, binary=False) as stream:
        stream.write(text)


def sync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to the disk, where the system can."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
