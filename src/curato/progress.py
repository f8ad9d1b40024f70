"""Progress reporting for long work. Library functions take a ``Progress``; the CLI passes a rich one."""

from __future__ import annotations

from typing import Protocol

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichBar,
)


class Progress(Protocol):
    """Receives stage starts and advances; implementations must be cheap to call."""

    def stage(self, description: str, total: int) -> None:
        """A new stage of ``total`` units begins."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units of the current stage are done."""


class SilentProgress:
    """Progress that shows nothing (library default, tests)."""

    def stage(self, description: str, total: int) -> None:
        """Ignore."""

    def advance(self, amount: int = 1) -> None:
        """Ignore."""


class RichProgress:
    """A rich progress bar per stage, for the terminal. A stage with nothing to do (``total`` 0, e.g. embeddings
    that are all cached) shows no bar, and a bar stops its clock when the next stage begins."""

    def __init__(self) -> None:
        self._bar = RichBar(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        self._bar.stop()

    def _finish(self) -> None:
        if self._task is not None:
            self._bar.stop_task(self._task)
            self._task = None

    def stage(self, description: str, total: int) -> None:
        """Start a new bar (none for a stage with nothing to do)."""
        self._finish()
        if total > 0:
            self._task = self._bar.add_task(escape(description), total=total)  # names may hold "[", never markup

    def advance(self, amount: int = 1) -> None:
        """Move the current bar."""
        if self._task is not None:
            self._bar.advance(self._task, amount)


SILENT = SilentProgress()
