"""Write an audit's outputs: the latest JSON (kept for ``curato export``), optional JSON copy, HTML."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curato.checks.runner import AuditResult, audit_json
from curato.export import LATEST_AUDIT
from curato.report.html import write_html_report
from curato.workspace import Workspace


def write_json(path: Path, document: dict) -> None:
    """Write a JSON document atomically (temporary file, then rename); NaN is refused, not written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False))
    os.replace(tmp, path)


def write_documents(workspace: Workspace, latest: str, document: dict[str, Any],
                    json_path: Path | str | None = None) -> None:
    """Write a command's JSON document as the workspace's latest of its kind (what the HTML report and later
    commands read) and, when the user asked for one, a copy at ``json_path``."""
    write_json(workspace.reports_dir / latest, document)
    if json_path is not None:
        write_json(Path(json_path), document)


def write_audit_outputs(workspace: Workspace, result: AuditResult, *, report: Path | None = None,
                        json_path: Path | None = None, title: str | None = None) -> dict[str, Path]:
    """Write the JSON document and the HTML report; returns what was written, by kind."""
    document = audit_json(workspace, result)
    write_documents(workspace, LATEST_AUDIT, document, json_path)
    written: dict[str, Path] = {} if json_path is None else {"json": Path(json_path)}
    html_path = Path(report) if report is not None else workspace.reports_dir / "report.html"
    written["report"] = write_html_report(workspace, result.findings, html_path, title=title)
    return written
