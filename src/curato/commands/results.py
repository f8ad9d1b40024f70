"""What the public API returns: typed results with the documented JSON form and pandas views.

``AuditResult`` wraps the findings of one audit (``.issues()``: one row per sample, ``is_<finding>_issue`` /
``<finding>_score`` columns, like cleanlab's ``Datalab.get_issues()``); the other commands' results wrap
their JSON document (``.to_json()``, ``result["key"]``) and add a DataFrame view of its main table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curato.checks.data import AuditData
from curato.checks.findings import SEVERITIES, Finding
from curato.errors import InputError
from curato.version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from curato.workspace import Workspace


def _pandas() -> Any:
    import pandas

    return pandas


@dataclass
class AuditResult:
    """Findings of one audit, what they were computed from, and views of them."""

    findings: list[Finding]
    embedder: str | None
    checks: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    workspace: Workspace | None = None
    data: AuditData | None = None
    run_id: int | None = None
    finished_at: str | None = None  # ISO time the checks finished (the run's own record ends after the outputs)

    def __getitem__(self, name: str) -> Finding:
        """The finding called ``name`` (``result["label_issues"]``)."""
        for finding in self.findings:
            if finding.check == name:
                return finding
        raise KeyError(f"no finding {name!r}; findings: {', '.join(f.check for f in self.findings)}")

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __repr__(self) -> str:
        found = ", ".join(f"{f.check}={f.count}" for f in self.findings if f.count)
        return f"AuditResult({len(self.findings)} findings; flagged: {found or 'none'})"

    def to_json(self) -> dict[str, Any]:
        """The documented ``audit --json`` document (schema: curato/schemas/audit.schema.json). Each finding says
        which check produced it in which run (``produced_by``, ``run_id``, ``finished_at``); each issue carries
        the sample's ``path`` where the catalog knows it, and a label issue the out-of-fold probabilities of the
        given and the suggested label."""
        return {"version": __version__, "workspace": None if self.workspace is None else str(self.workspace.root),
                "embedder": self.embedder, "checks_run": list(self.checks), "params": self.params,
                "seconds": {name: round(value, 3) for name, value in self.timings.items()},
                "checks": [self._finding_json(finding) for finding in self.findings]}

    def _finding_json(self, finding: Finding) -> dict[str, Any]:
        document = {**finding.to_json(), "produced_by": finding.produced_by or finding.check, "run_id": self.run_id,
                    "finished_at": self.finished_at}
        data = self.data
        if data is None or not document["issues"]:
            return document
        row_of = {str(sid): i for i, sid in enumerate(data.sample_ids.tolist())}
        probs = data.pred_probs if data.pred_probs is not None and data.class_names else None
        column = {name: j for j, name in enumerate(data.class_names)}
        for issue in document["issues"]:
            row = row_of.get(issue["sample_id"])
            if row is None:
                continue
            if data.uris is not None and data.uris[row]:
                issue["path"] = str(data.uris[row])
            if probs is not None and finding.check == "label_issues":
                for key, label in (("given_label_probability", data.labels[row]),
                                   ("suggested_label_probability", issue.get("suggested_label"))):
                    value = probs[row, column[label]] if label in column else np.nan
                    if np.isfinite(value):
                        issue[key] = round(float(value), 6)
        return document

    def summary(self) -> pd.DataFrame:
        """One row per finding: check, severity, flagged, total, message; most severe first."""
        rows = [{"check": f.check, "severity": f.severity, "flagged": f.count, "total": len(f.sample_ids),
                 "produced_by": f.produced_by, "message": f.message} for f in self.findings]
        return _pandas().DataFrame(rows, columns=["check", "severity", "flagged", "total", "produced_by", "message"])

    def issues(self) -> pd.DataFrame:
        """One row per sample (indexed by ``sample_id``): ``path``, ``label``, ``split``, ``suggested_label`` and,
        per finding, ``is_<finding>_issue`` and ``<finding>_score`` (0 where the finding did not look at the
        sample)."""
        pd = _pandas()
        if self.data is not None:
            ids = [str(s) for s in self.data.sample_ids.tolist()]
        else:
            ids = sorted({str(s) for f in self.findings for s in f.sample_ids.tolist()})
        frame = pd.DataFrame(index=pd.Index(ids, name="sample_id"))
        if self.data is not None:
            frame["path"] = None if self.data.uris is None else list(self.data.uris)
            frame["label"] = list(self.data.labels)
            frame["split"] = list(self.data.splits)
        position = {sid: i for i, sid in enumerate(ids)}
        suggested = np.full(len(ids), None, dtype=object)
        for finding in self.findings:
            rows = np.array([position[str(s)] for s in finding.sample_ids.tolist()], dtype=np.int64)
            flagged = np.zeros(len(ids), dtype=bool)
            scores = np.zeros(len(ids))
            flagged[rows] = finding.flagged
            scores[rows] = finding.scores
            frame[f"is_{finding.check}_issue"] = flagged
            frame[f"{finding.check}_score"] = scores
            for sample_id, detail in finding.details.items():
                if detail.get("suggested_label") is not None and sample_id in position:
                    suggested[position[sample_id]] = detail["suggested_label"]
        frame["suggested_label"] = suggested
        return frame

    def report(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write the workspace's self-contained HTML report to ``path`` with this result's checks (the other
        checks and commands as the workspace last recorded them); returns it. Needs a workspace-backed result."""
        from curato.commands.info import write_report

        if self.workspace is None:
            raise InputError("report: this result was computed from arrays (find_issues) and has no workspace for "
                             "thumbnails; ingest the data (Workspace.create(...).ingest(...)) to get an HTML report")
        audit = merge_audit_documents(self.workspace.read_latest("audit"), self.to_json())
        return write_report(self.workspace, (), path, title=title, audit_document=audit)


@dataclass
class DocumentResult:
    """A command's result: its JSON document (``to_json()``, ``result["key"]``) plus DataFrame views."""

    document: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def __contains__(self, key: object) -> bool:
        return key in self.document

    def get(self, key: str, default: Any = None) -> Any:
        """``document.get(key, default)``."""
        return self.document.get(key, default)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON document (schemas in curato/schemas/)."""
        return self.document

    def _frame(self, rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
        return _pandas().DataFrame(rows, columns=columns)


class BiasResult(DocumentResult):
    """``curato bias``: can a classifier tell the groups apart, and does a model trained on one work on another?"""

    @property
    def verdict(self) -> str:
        """distinguishable | negligible | not distinguishable."""
        return self.document["verdict"]

    def pairs(self) -> pd.DataFrame:
        """One row per pair of groups: accuracy, interval, chance, verdict."""
        rows = [{"groups": " vs ".join(p["groups"]), "n": p["n"], "accuracy": p["accuracy"], "chance": p["chance"],
                 "low": p["interval"][0], "high": p["interval"][1], "verdict": p["verdict"]}
                for p in self.document["pairwise"]["pairs"]]
        return self._frame(rows, ["groups", "n", "accuracy", "chance", "low", "high", "verdict"])

    def cross_dataset(self) -> pd.DataFrame:
        """Label accuracy trained on the row's group, tested on the column's (diagonal: within the group)."""
        cross = self.document["cross_dataset"]
        frame = _pandas().DataFrame(cross["accuracy"], index=cross["groups"], columns=cross["groups"])
        frame.index.name = "train"
        return frame


class TransferResult(DocumentResult):
    """``curato transfer``: which backbone fits the task."""

    def ranking(self) -> pd.DataFrame:
        """One row per embedder, best LogME first."""
        keys = ["rank", "name", "dim", "logme", "knn_accuracy", "linear_probe_accuracy", "rank_linear_probe"]
        return self._frame([{k: e.get(k) for k in keys} for e in self.document["embedders"]], keys)


class SizeResult(DocumentResult):
    """``curato size``: labels needed for the target, with intervals."""

    @property
    def samples_needed(self) -> int | None:
        """Labelled samples to reach the target, only where the forecast states a number (``status`` "estimated");
        None otherwise: not reached, already reached, or "cannot be pinned down" (then read
        ``samples_needed_interval``)."""
        needed = self.document["samples_needed"]
        return needed["total"] if needed.get("status") == "estimated" else None

    @property
    def samples_needed_status(self) -> str:
        """"estimated" (a number is stated), "cannot be pinned down", "not reached" or "reached"."""
        return self.document["samples_needed"]["status"]

    @property
    def samples_needed_interval(self) -> list[int | None] | None:
        """The 90% interval of the labels needed (None at an end: beyond the horizon)."""
        return self.document["samples_needed"]["interval"]

    def curve(self) -> pd.DataFrame:
        """The measured learning curve: size, mean, std, min, max."""
        keys = ["size", "mean", "std", "min", "max"]
        return self._frame([{k: point[k] for k in keys} for point in self.document["curve"]], keys)


class SelectResult(DocumentResult):
    """``curato select``: the batch queued for labelling."""

    def batch(self) -> pd.DataFrame:
        """One row per picked sample: rank, sample_id, score, reason, predicted_label, confidence."""
        keys = ["rank", "sample_id", "score", "reason", "predicted_label", "confidence"]
        return self._frame(self.document["batch"], keys)


class RouteResult(DocumentResult):
    """``curato route``: model labels accepted at the requested precision."""

    def labels(self) -> pd.DataFrame:
        """One row per accepted model label: sample_id, label, confidence."""
        return self._frame(self.document["labels"], ["sample_id", "label", "confidence"])


class SimulateResult(DocumentResult):
    """``curato simulate``: accuracy-vs-labels curves per strategy."""

    def curves(self) -> pd.DataFrame:
        """Long form: one row per (strategy, labels) with mean accuracy and its band."""
        schedule = self.document["settings"]["schedule"]
        rows = [{"strategy": name, "labels": n, "accuracy": curve["accuracy"][i], "low": curve["low"][i],
                 "high": curve["high"][i]}
                for name, curve in self.document["strategies"].items() for i, n in enumerate(schedule)]
        return self._frame(rows, ["strategy", "labels", "accuracy", "low", "high"])


@dataclass
class ExportResult:
    """``curato export``: where the cleaned dataset went, how many samples it holds, and how many rows changed or
    were left out and why (``changes``: every key of ``curato.commands.export.CHANGE_REASONS``, zeros included)."""

    path: Path
    count: int
    format: str
    index: Path | None = None  # image-folder exports: the CSV listing every file written
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Exported rows whose label differs from the original (imported) label."""
        return sum(self.changes.get(key, 0) for key in ("relabelled_by_model", "relabelled_by_people",
                                                        "routed_model_labels", "reimported_labels"))


def _finding_owner(finding: dict[str, Any]) -> str:
    """The registered check that produced a finding of an audit document (older documents lack ``produced_by``)."""
    if finding.get("produced_by"):
        return str(finding["produced_by"])
    from curato.checks.registry import registered_checks

    return next((name for name, spec in registered_checks().items() if finding["check"] in spec.findings),
                finding["check"])


def merge_audit_documents(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The workspace's latest audit after ``new`` ran: its findings replace those of the checks it ran (and any
    finding of the same name); every other check's findings are kept with the run id and time they came from."""
    if not previous or not previous.get("checks"):
        return new
    ran = set(new.get("checks_run") or [])
    produced = {finding["check"] for finding in new.get("checks", [])}
    kept = [finding for finding in previous["checks"]
            if finding["check"] not in produced and _finding_owner(finding) not in ran]
    if not kept:
        return new
    merged = dict(new)
    merged["checks_run"] = list(new.get("checks_run") or []) + [
        name for name in previous.get("checks_run") or [] if name not in ran]
    merged["params"] = {**(previous.get("params") or {}), **(new.get("params") or {})}
    merged["seconds"] = {**(previous.get("seconds") or {}), **(new.get("seconds") or {})}
    merged["checks"] = sorted([*new.get("checks", []), *kept],
                              key=lambda f: -SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else 0)
    return merged


def record_document(workspace: Workspace, kind: str, document: dict[str, Any], json_path: str | Path | None = None,
                    *, report: str | Path | None = None, title: str | None = None) -> Path:
    """Keep a command's document as the workspace's latest of its ``kind`` and rebuild the workspace report
    (``reports/report.html``) from the latest documents; returns the latest document's path.

    An audit is merged into the previous one check by check (a partial audit replaces only its checks).
    ``json_path`` gets this run's own document; ``report`` a copy of the rebuilt report.
    """
    import shutil

    from curato.commands.info import write_report
    from curato.workspace import write_json

    latest = merge_audit_documents(workspace.read_latest("audit"), document) if kind == "audit" else document
    path = workspace.write_latest(kind, latest)
    if json_path is not None:
        write_json(json_path, document)
    written = write_report(workspace, (), workspace.reports_dir / "report.html", title=title)
    if report is not None and Path(report).resolve() != written.resolve():
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, report)
    return path
