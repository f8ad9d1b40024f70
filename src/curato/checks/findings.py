"""The one shape every check returns: a Finding per issue type.

A Finding carries a per-sample flag and a score in [0, 1] (higher = more clearly an issue), aligned
with ``sample_ids``, plus numbers for the summary and free-form evidence (groups, plots' data).
docs/findings.md documents the JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEVERITIES = ("none", "low", "medium", "high")


@dataclass
class Finding:
    """The result of one check for one issue type."""

    check: str
    severity: str
    message: str
    sample_ids: np.ndarray
    flagged: np.ndarray
    scores: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    produced_by: str = ""  # the registered check that returned it (one check may return several findings)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        self.sample_ids = np.asarray(self.sample_ids, dtype=object)
        self.flagged = np.asarray(self.flagged, dtype=bool)
        self.scores = np.clip(np.nan_to_num(np.asarray(self.scores, dtype=np.float64)), 0.0, 1.0)
        if not (len(self.sample_ids) == len(self.flagged) == len(self.scores)):
            raise ValueError(f"{self.check}: sample_ids, flagged and scores must have the same length")

    @property
    def count(self) -> int:
        """Number of flagged samples."""
        return int(self.flagged.sum())

    @property
    def rank(self) -> int:
        """Severity as a number (0 = none ... 3 = high)."""
        return SEVERITIES.index(self.severity)

    def flagged_order(self) -> np.ndarray:
        """Indices of flagged samples, most severe score first."""
        index = np.flatnonzero(self.flagged)
        return index[np.argsort(-self.scores[index], kind="stable")]

    def issues(self) -> list[dict[str, Any]]:
        """The flagged samples as JSON-ready rows, worst first."""
        rows = []
        for i in self.flagged_order():
            sample_id = str(self.sample_ids[i])
            rows.append({"sample_id": sample_id, "score": round(float(self.scores[i]), 6),
                         **_jsonable(self.details.get(sample_id, {}))})
        return rows

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (see docs/findings.md)."""
        return {"check": self.check, "severity": self.severity, "message": self.message,
                "summary": {**self.summary, "flagged": self.count, "total": len(self.sample_ids)},
                "evidence": _jsonable(self.evidence), "issues": self.issues()}


def severity_from_share(share: float, *, low: float, medium: float, high: float) -> str:
    """Map the share of affected samples to a severity with the check's own cut-offs."""
    if share >= high:
        return "high"
    if share >= medium:
        return "medium"
    if share >= low:
        return "low"
    return "none"


def _jsonable(value: Any) -> Any:
    """Evidence as plain JSON types (NumPy arrays and scalars converted)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
