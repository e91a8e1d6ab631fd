"""Progress and messages on stderr, handed to library functions so they never print themselves.

``Reporter()`` is silent (for tests and library use); the CLI passes one holding a rich console
on stderr. stdout stays reserved for translations.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


class Reporter:
    """Where library code sends human-readable output; silent unless given a console."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    def info(self, message: str) -> None:
        if self.console:
            self.console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if self.console:
            self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False,
                               soft_wrap=True)

    def table(self, table: Table) -> None:
        if self.console:
            self.console.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None) -> Iterator["ProgressTask"]:
        """A progress bar on a terminal; nothing when stderr is a file or there is no console."""
        if not self.console or not self.console.is_terminal:
            yield ProgressTask(None, None)
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, status="")
            yield ProgressTask(progress, task_id)


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
