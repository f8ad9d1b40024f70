"""curato: is your training data good enough? Diverse, clean, unbiased, big enough.

The public API (docs/api.md)::

    import curato
    ws = curato.Workspace.create("ws")
    ws.ingest("path/to/images")
    result = ws.audit()
    result.issues()            # one row per sample: is_<finding>_issue, <finding>_score, label, ...
    curato.find_issues(labels=labels, features=embeddings)   # the same checks on arrays, no workspace

Names load on first use, so ``import curato`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from curato.version import __version__

_EXPORTS = {
    "Workspace": "curato.api",
    "find_issues": "curato.api",
    "demo": "curato.api",
    "AuditResult": "curato.commands.results",
    "BiasResult": "curato.commands.results",
    "ExportResult": "curato.commands.results",
    "RouteResult": "curato.commands.results",
    "SelectResult": "curato.commands.results",
    "SimulateResult": "curato.commands.results",
    "SizeResult": "curato.commands.results",
    "TransferResult": "curato.commands.results",
    "Finding": "curato.checks.findings",
    "AuditData": "curato.checks.data",
    "CheckSpec": "curato.checks.registry",
    "register_check": "curato.checks.registry",
    "registered_checks": "curato.checks.registry",
    "unregister_check": "curato.checks.registry",
    "Embedder": "curato.features.embedders",
    "register_embedder": "curato.features.embedders",
    "available_embedders": "curato.features.embedders",
    "unregister_embedder": "curato.features.embedders",
    "StrategyInputs": "curato.active.strategies",
    "register_strategy": "curato.active.strategies",
    "available_strategies": "curato.active.strategies",
    "unregister_strategy": "curato.active.strategies",
    "CuratoError": "curato.errors",
    "InputError": "curato.errors",
    "WorkspaceError": "curato.errors",
}
__all__ = [  # noqa: RUF022 - grouped as in _EXPORTS
    "__version__",
    "Workspace",
    "find_issues",
    "demo",
    "AuditResult",
    "BiasResult",
    "ExportResult",
    "RouteResult",
    "SelectResult",
    "SimulateResult",
    "SizeResult",
    "TransferResult",
    "Finding",
    "AuditData",
    "CheckSpec",
    "register_check",
    "registered_checks",
    "unregister_check",
    "Embedder",
    "register_embedder",
    "available_embedders",
    "unregister_embedder",
    "StrategyInputs",
    "register_strategy",
    "available_strategies",
    "unregister_strategy",
    "CuratoError",
    "InputError",
    "WorkspaceError",
]

if TYPE_CHECKING:
    from curato.active.strategies import (
        StrategyInputs,
        available_strategies,
        register_strategy,
        unregister_strategy,
    )
    from curato.api import Workspace, demo, find_issues
    from curato.checks.data import AuditData
    from curato.checks.findings import Finding
    from curato.checks.registry import CheckSpec, register_check, registered_checks, unregister_check
    from curato.commands.results import (
        AuditResult,
        BiasResult,
        ExportResult,
        RouteResult,
        SelectResult,
        SimulateResult,
        SizeResult,
        TransferResult,
    )
    from curato.errors import CuratoError, InputError, WorkspaceError
    from curato.features.embedders import Embedder, available_embedders, register_embedder, unregister_embedder


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curato' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
