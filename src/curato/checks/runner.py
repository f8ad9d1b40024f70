"""Feed the checks from a workspace. Each check is a pure function; this is the thin shell."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from curato.checks.findings import Finding
from curato.checks.integrity import unreadable_files
from curato.errors import InputError
from curato.workspace import Workspace


@dataclass
class AuditData:
    """Everything a check may read, aligned by row with ``sample_ids``."""

    sample_ids: np.ndarray
    uris: np.ndarray
    labels: np.ndarray  # object array; None where unlabeled
    splits: np.ndarray
    sources: np.ndarray
    readable: np.ndarray
    errors: np.ndarray

    @classmethod
    def from_workspace(cls, workspace: Workspace) -> AuditData:
        """Load the catalog columns the checks need."""
        table = workspace.catalog.samples(("sample_id", "uri", "split", "source", "readable", "error"))
        current = workspace.catalog.current_labels()
        return cls(
            sample_ids=table["sample_id"], uris=table["uri"],
            labels=np.array([current.get(sid) for sid in table["sample_id"].tolist()], dtype=object),
            splits=table["split"], sources=table["source"],
            readable=np.array([bool(v) for v in table["readable"]], dtype=bool), errors=table["error"],
        )


CheckFunction = Callable[[AuditData], list[Finding]]

CHECKS: dict[str, CheckFunction] = {
    "unreadable": lambda data: [unreadable_files(data.sample_ids, data.readable, data.errors.tolist())],
}


def run_checks(workspace: Workspace, names: Sequence[str] | None = None) -> list[Finding]:
    """Run the named checks (default: all) and return their findings, most severe first.

    A check that fails raises: an audit is never silently partial.
    """
    chosen = list(names) if names else list(CHECKS)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        raise InputError(f"--checks: unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}")
    data = AuditData.from_workspace(workspace)
    findings = [finding for name in chosen for finding in CHECKS[name](data)]
    return sorted(findings, key=lambda f: -f.rank)
