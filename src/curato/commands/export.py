"""Export a cleaned copy of the dataset description; source files are never modified.

The cleaning choices (drop duplicates, relabel suspected errors, drop unreadable files) are the
user's, applied to the latest audit's findings (``reports/audit-latest.json``).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

from curato.errors import InputError, WorkspaceError
from curato.workspace import Workspace

EXPORT_FORMATS = ("csv", "imagefolder")
_SPLIT_PRIORITY = {"test": 0, "val": 1}
_DUPLICATE_CHECKS = ("exact_duplicates", "near_duplicates", "split_leakage")


def latest_audit(workspace: Workspace) -> dict[str, Any]:
    """The JSON document of the last ``curato audit`` on this workspace."""
    document = workspace.read_latest("audit")
    if document is None:
        raise WorkspaceError(f"{workspace.latest_path('audit')}: no audit yet; run `curato audit -w "
                             f"{workspace.root}` before a cleaned export")
    return document


def _duplicate_drops(audit: dict[str, Any], splits: dict[str, str | None]) -> set[str]:
    """From every duplicate group keep one member: the evaluation-split copy (test, then val), else the first id."""
    drops: set[str] = set()
    for finding in audit["checks"]:
        if finding["check"] not in _DUPLICATE_CHECKS:
            continue
        for group in finding.get("evidence", {}).get("groups", []):
            members = sorted(group, key=lambda sid: (_SPLIT_PRIORITY.get(splits.get(sid) or "", 2), sid))
            drops.update(members[1:])
    return drops


def cleaned_rows(workspace: Workspace, *, drop_duplicates: bool = False, relabel: bool = False,
                 drop_unreadable: bool = True) -> list[dict[str, Any]]:
    """Manifest rows (id, path, label, split, source, metadata) after the chosen cleaning steps."""
    table = workspace.catalog.samples(("sample_id", "uri", "text", "split", "source", "readable", "meta"))
    labels = workspace.catalog.current_labels()
    splits = dict(zip(table["sample_id"].tolist(), table["split"].tolist(), strict=True))
    drops: set[str] = set()
    new_labels: dict[str, str] = {}
    if drop_duplicates or relabel:
        audit = latest_audit(workspace)
        if drop_duplicates:
            drops = _duplicate_drops(audit, splits)
        if relabel:
            for finding in audit["checks"]:
                if finding["check"] == "label_issues":
                    new_labels = {row["sample_id"]: row["suggested_label"] for row in finding["issues"]
                                  if row.get("suggested_label") is not None}
    rows = []
    for sid, uri, text, split, source, readable, meta in zip(*table.values(), strict=True):
        if sid in drops or (drop_unreadable and not readable):
            continue
        row = {"id": sid, "path": uri, "label": new_labels.get(sid, labels.get(sid)), "split": split,
               "source": source}
        if text is not None:
            row = {"id": sid, "text": text, "label": row["label"], "split": split, "source": source}
        if sid in new_labels:
            row["original_label"] = labels.get(sid)
        rows.append({**row, **(meta or {})})
    return rows


def export(workspace: Workspace, out: str | Path, *, format: str = "csv", drop_duplicates: bool = False,
           relabel: bool = False, drop_unreadable: bool = True) -> tuple[Path, int]:
    """Write the cleaned dataset to ``out`` as a manifest CSV or an image-folder copy; returns (path, rows)."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format {format!r} cannot be exported yet; use one of {', '.join(EXPORT_FORMATS)}")
    rows = cleaned_rows(workspace, drop_duplicates=drop_duplicates, relabel=relabel,
                        drop_unreadable=drop_unreadable)
    out = Path(out)
    if format == "csv":
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
        return out, len(rows)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; choose a new folder for the image-folder export")
    for row in rows:
        if row.get("path") is None or str(row["path"]).startswith("idx:"):
            raise InputError(f"sample {row['id']!r} has no image file to copy; export --format csv instead")
        folder = out / (row["split"] or "") / (str(row["label"]).replace("/", "-") if row["label"] else "unlabeled")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(row["path"], folder / str(row["id"]).replace("/", "__"))
    return out, len(rows)
