"""A workspace at a glance: what ``curato info`` prints and the report's overview shows."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.findings import Finding
from curato.workspace import Workspace


def class_split_counts(sample_ids: np.ndarray, splits: np.ndarray, labels: dict[str, str]
                       ) -> dict[str, Any]:
    """Counts per (class, split): ``{"splits": [...], "rows": {label: {split: n}}}``."""
    rows: dict[str, Counter[str | None]] = defaultdict(Counter)
    for sample_id, split in zip(sample_ids.tolist(), splits.tolist(), strict=True):
        label = labels.get(sample_id)
        if label is not None:
            rows[label][split] += 1
    split_names = sorted({s for row in rows.values() for s in row}, key=lambda s: (s is None, str(s)))
    return {"splits": split_names, "rows": {label: dict(rows[label]) for label in sorted(rows)}}


def workspace_overview(workspace: Workspace) -> dict[str, Any]:
    """Counts per kind, split, source, format and class; unreadable files; feature sets and staleness."""
    catalog = workspace.catalog
    table = catalog.samples(("sample_id", "kind", "split", "content_hash", "readable"))
    labels = catalog.current_labels()
    current = dict(zip(table["sample_id"].tolist(), table["content_hash"].tolist(), strict=True))
    features = []
    for name in workspace.features.names():
        stored = workspace.features.load(name)
        stored_hashes = dict(zip(stored.ids.tolist(), stored.hashes.tolist(), strict=True))
        stale = sum(1 for sid, digest in stored_hashes.items() if sid in current and current[sid] != digest)
        modality = stored.meta.get("modality", "image")
        expected = sum(
            1 for kind, ok in zip(table["kind"].tolist(), table["readable"].tolist(), strict=True)
            if ok and modality in (kind, "any")
        )
        features.append({"name": name, "count": len(stored), "dim": int(stored.vectors.shape[1]),
                         "dtype": str(stored.vectors.dtype), "stale": stale,
                         "missing": max(0, expected - sum(1 for sid in stored_hashes if sid in current)),
                         "settings": stored.meta.get("settings")})
    return {
        "root": str(workspace.root),
        "samples": len(table["sample_id"]),
        "kinds": catalog.sample_kinds(),
        "splits": catalog.group_counts("split"),
        "sources": catalog.group_counts("source"),
        "formats": catalog.group_counts("format"),
        "class_split": class_split_counts(table["sample_id"], table["split"], labels),
        "unlabeled": int(sum(1 for sid in table["sample_id"].tolist() if sid not in labels)),
        "unreadable": catalog.unreadable(),
        "features": features,
        "annotations": catalog.annotation_count(),
    }


def write_report(workspace: Workspace, findings: Sequence[Finding], path: str | Path, *,
                 title: str | None = None) -> Path:
    """The workspace's HTML report: its overview, the given findings (rendered as their checks registered),
    and the latest bias, transfer, size, simulate and route documents."""
    from curato.checks.registry import renderers_for
    from curato.report.html import write_html_report

    return write_html_report(workspace, findings, path, overview=workspace_overview(workspace),
                             renderers=renderers_for(findings), title=title)
