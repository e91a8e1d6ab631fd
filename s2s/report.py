"""Progress and messages on stderr, handed to library functions so they never print themselves.

``Reporter()`` is silent (for tests and library use); the CLI passes one holding a rich console
on stderr. stdout stays reserved for translations. When stderr goes away (a closed pipe, as in
``s2s train 2>&1 | head``, or a closed terminal) the reporter falls silent and the work goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


class _StderrConsole(Console):
    """rich exits the process on a broken pipe; here it is an error the reporter handles."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "stderr was closed")


class Reporter:
    """Where library code sends human-readable output; silent unless given a console."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    @classmethod
    def to_stderr(cls) -> "Reporter":
        return cls(_StderrConsole(stderr=True))

    def info(self, message: str) -> None:
        self._print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self._print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        """A problem that does not stop the work at hand (the exit code tells it later)."""
        self._print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)

    def table(self, table: Table) -> None:
        self._print(table)

    def _print(self, *objects: Any, **options: Any) -> None:
        if not self.console:
            return
        try:
            self.console.print(*objects, **options)
        except OSError:  # EPIPE from a closed pipe, EIO from a closed terminal
            self.fall_silent()

    def fall_silent(self) -> None:
        """Stop writing for good; a dead stderr is pointed at /dev/null so that nothing
        (the interpreter's last flush included) fails on it again."""
        if self.console is not None and self.console.file is sys.stderr:
            point_at_devnull(sys.stderr)
        self.console = None

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None, unit: str = ""
                 ) -> Iterator["ProgressTask"]:
        """A progress bar on a terminal; nothing when stderr is a file or there is no console.
        With a ``unit`` (what is counted, e.g. "pairs") it shows the rate: "1,234 pairs/s"."""
        if not self.console or not self.console.is_terminal:
            yield ProgressTask(None, None)
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), RateColumn(unit), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        progress = Progress(*columns, console=self.console, transient=False)
        try:
            progress.start()
        except OSError:
            self.fall_silent()
            yield ProgressTask(None, None)
            return
        try:
            yield ProgressTask(progress, progress.add_task(description, total=total, status=""))
        finally:
            try:
                progress.stop()
            except OSError:
                self.fall_silent()


class RateColumn(ProgressColumn):
    """How many ``unit`` per second a task is doing (blank without a unit or before a rate)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        if not self.unit or task.speed is None:
            return Text("")
        return Text(f"{task.speed:,.0f} {self.unit}/s")


class ProgressTask:
    """A handle to advance one progress bar; a no-op when progress is hidden."""

    def __init__(self, progress: Progress | None, task_id: Any) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1.0, status: str | None = None) -> None:
        if self._progress is not None:
            fields = {} if status is None else {"status": status}
            self._progress.update(self._task_id, advance=amount, **fields)

    def update(self, completed: float | None = None, status: str | None = None) -> None:
        if self._progress is not None:
            fields = {} if status is None else {"status": status}
            self._progress.update(self._task_id, completed=completed, **fields)

    def set_total(self, total: float) -> None:
        """A total found (or estimated) while the work runs: the bar then shows time left."""
        if self._progress is not None:
            self._progress.update(self._task_id, total=total)


def point_at_devnull(stream: Any) -> None:
    """Make a dead stream's file descriptor /dev/null, so later writes and flushes succeed."""
    try:
        descriptor = os.open(os.devnull, os.O_WRONLY)
        os.dup2(descriptor, stream.fileno())
        os.close(descriptor)
    except (OSError, ValueError):
        pass


def make_table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with right-aligned numbers."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*[_format_cell(cell) for cell in row])
    return table


def _format_cell(cell: Any) -> str:
    if isinstance(cell, float):
        return f"{cell:,.2f}"
    if isinstance(cell, int):
        return f"{cell:,}"
    return str(cell)
