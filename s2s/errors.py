"""The exceptions s2s raises for problems a user can fix, and their exit codes.

Every error that reaches the command line is one of these; the CLI prints its message on one
line and exits with its ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class S2SError(Exception):
    """Base class: a problem with the user's input or environment, not with s2s."""

    exit_code = 1


class ConfigError(S2SError):
    """The config file or an override is missing, malformed or inconsistent."""

    exit_code = 2


class UsageError(S2SError):
    """Command-line arguments that cannot work together."""

    exit_code = 2


class DataError(S2SError):
    """A corpus file is missing, unreadable, misaligned or not valid UTF-8: bad input, as a
    bad config is."""

    exit_code = 2


class CheckpointError(S2SError):
    """A checkpoint is missing, corrupted, or does not belong to this run."""


class DeviceError(S2SError):
    """The requested device (for example CUDA) is not available."""


class SharedStorageError(S2SError):
    """Training processes on several machines do not see the same run directory."""


class RunLockedError(S2SError):
    """Another process is already training in this run directory."""


class Interrupted(S2SError):
    """Training stopped by SIGINT, SIGTERM or SIGHUP after saving a checkpoint (exit 128+N)."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
