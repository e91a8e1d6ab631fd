"""One training process per run directory, enforced with an advisory file lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from s2s.errors import RunLockedError, S2SError
from s2s.rundir import RunDir


class RunLock:
    """``with RunLock(run_dir):`` holds the run's lock file; a second holder is refused."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir(run_dir).lock
        self._handle = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise S2SError(f"{self.path.parent}: run directory is not writable: "
                           f"{error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(f"{self.path.parent}: another s2s train (PID {holder}) is "
                                 "already using this run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
