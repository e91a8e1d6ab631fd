"""Stopping training cleanly: Ctrl-C, SIGTERM and SIGHUP are noted, not obeyed at once, so the
loop can finish its update and save a checkpoint."""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """Inside ``with``, SIGINT/SIGTERM/SIGHUP set ``received`` instead of stopping the process;
    a second signal acts at once. Outside the main thread, signals are left alone.

    SIGHUP (a closed terminal or a dropped ssh session) saves and stops like SIGTERM.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        try:
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._remember)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, *exception: object) -> None:
        self._restore()

    def _remember(self, number: int, frame: FrameType | None) -> None:
        self.received = number
        signal.signal(number, self._previous[number])  # type: ignore[arg-type]

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()
