"""Progress reporting for long work. Library functions take a ``Progress``; the CLI passes a rich one."""

from __future__ import annotations

from collections.abc import Callable
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

    def side_bar(self, description: str, total: int) -> Callable[[int], None]:
        """A bar of its own beside the current one, for work running at the same time (checks side by side);
        returns its advance function; its clock stops when it is full."""
        if total <= 0:
            return _ignore
        task = self._bar.add_task(escape(description), total=total)
        done = [0]

        def advance(amount: int = 1) -> None:
            self._bar.advance(task, amount)
            done[0] += amount
            if done[0] >= total:
                self._bar.stop_task(task)

        return advance


def _ignore(amount: int = 1) -> None:
    """Advance nothing."""


class LaneProgress:
    """The ``Progress`` of one piece of work running beside others: each stage gets a bar of its own where the
    parent can show several (``RichProgress.side_bar``); elsewhere stages show nothing."""

    def __init__(self, parent: Progress) -> None:
        self._parent = parent
        self._advance: Callable[[int], None] = _ignore

    def stage(self, description: str, total: int) -> None:
        """Start this lane's next bar."""
        side_bar = getattr(self._parent, "side_bar", None)
        self._advance = side_bar(description, total) if side_bar is not None else _ignore

    def advance(self, amount: int = 1) -> None:
        """Move this lane's bar."""
        self._advance(amount)


SILENT = SilentProgress()
