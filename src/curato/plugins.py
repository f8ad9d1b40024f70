"""Plug-ins from other packages: the entry points of the ``curato.checks``, ``curato.embedders`` and
``curato.strategies`` groups, loaded once by the registry of each kind."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from curato.errors import CuratoError


def load_entry_points(group: str, add: Callable[[str, Any], bool]) -> None:
    """Load every entry point of ``group``. ``add(name, loaded)`` registers an object it recognises and returns
    True; anything else must be a function taking no arguments that registers by itself.

    A plug-in that fails to import is an error naming it and its package (a command must not run with part of
    its checks silently missing).
    """
    for entry in entry_points(group=group):
        package = entry.dist.name if entry.dist is not None else "an unknown package"
        try:
            loaded = entry.load()
            if add(entry.name, loaded):
                continue
            if not callable(loaded) or inspect.signature(loaded).parameters:
                raise TypeError(f"{entry.value} is neither what {group} expects nor a function without arguments")
            loaded()
        except Exception as error:
            raise CuratoError(f"plug-in {entry.name!r} ({group}, from {package}) failed to load: {error}; fix or "
                              f"uninstall {package}") from error
