"""A workspace at a glance: what ``curato info`` prints and the report's overview shows."""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.findings import Finding
from curato.workspace import Workspace


def class_split_counts(counts: Mapping[tuple[str, str, Any], int]) -> dict[str, Any]:
    """Counts per (class, split) from :meth:`Catalog.curated_label_counts` ``(label, origin, split) -> n``:
    ``{"splits": [...], "rows": {label: {split: n}}}``."""
    rows: dict[str, Counter[str | None]] = defaultdict(Counter)
    for (label, _, split), count in counts.items():
        rows[label][split] += count
    split_names = sorted({s for row in rows.values() for s in row}, key=lambda s: (s is None, str(s)))
    return {"splits": split_names,
            "rows": {label: {s: rows[label][s] for s in split_names if s in rows[label]} for label in sorted(rows)}}


def workspace_overview(workspace: Workspace) -> dict[str, Any]:
    """Counts per kind, split, source, format and class; unreadable files; feature sets and staleness.

    Read from the maintained counts, not by loading every sample; stale vectors are counted from the hash changes
    since the last count (:meth:`Workspace.feature_staleness`: every hash is read once per feature-set
    generation)."""
    catalog = workspace.catalog
    summary = catalog.sample_overview()
    label_counts = catalog.curated_label_counts("split")
    features = []
    content_hashes = functools.cache(catalog.content_hashes)  # every hash read at most once, for all feature sets
    for name in workspace.features.names():
        stored = workspace.features.load(name)
        stale, present = workspace.feature_staleness(stored, content_hashes)
        modality = stored.meta.get("modality", "image")
        expected = sum(count for kind, count in summary["readable"].items() if modality in (kind, "any"))
        features.append({"name": name, "count": len(stored), "dim": int(stored.vectors.shape[1]),
                         "dtype": str(stored.vectors.dtype), "stale": stale,
                         "missing": max(0, expected - present),
                         "settings": stored.meta.get("settings")})
    return {
        "root": str(workspace.root),
        "samples": summary["samples"],
        "kinds": summary["kinds"],
        "splits": summary["splits"],
        "sources": summary["sources"],
        "formats": summary["formats"],
        "class_split": class_split_counts(label_counts),
        "unlabeled": summary["samples"] - sum(label_counts.values()),
        "unreadable": catalog.unreadable(),
        "features": features,
        "annotations": catalog.annotation_count(),
    }


def _finding_from_json(entry: dict[str, Any]) -> Finding:
    """A finding of an audit document back as a Finding (its flagged samples only), for its check's renderer."""
    issues = entry.get("issues") or []
    return Finding(check=entry["check"], severity=entry["severity"], message=entry.get("message", ""),
                   sample_ids=np.array([issue["sample_id"] for issue in issues], dtype=object),
                   flagged=np.ones(len(issues), dtype=bool), scores=np.array([issue["score"] for issue in issues]),
                   summary=entry.get("summary") or {}, evidence=entry.get("evidence") or {},
                   produced_by=entry.get("produced_by") or "")


def latest_runs(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Per command with a latest document, the run that wrote it (the newest done one, or the one running now):
    ``{"run_id", "time"}``, for the report's section headers."""
    from curato.workspace import LATEST_DOCUMENTS

    found: dict[str, dict[str, Any]] = {}
    for run in workspace.catalog.runs():
        if run["kind"] in LATEST_DOCUMENTS and run["status"] in ("done", "running"):
            when = run["finished_at"] or run["started_at"]
            found[run["kind"]] = {"run_id": run["id"], "time": f"{when:%Y-%m-%d %H:%M} UTC" if when else "?"}
    return found


REPORT_TITLE_KEY = "report_title"


def write_report(workspace: Workspace, findings: Sequence[Finding], path: str | Path, *, title: str | None = None,
                 audit_document: dict[str, Any] | None = None) -> Path:
    """The workspace's HTML report at ``path``: its overview, the latest audit (``audit_document`` or the one
    recorded; ``findings`` replace its findings of the same name) and the latest bias, transfer, size, select,
    simulate and route documents, each with the run it came from. A ``title`` is kept for the workspace: later
    rebuilds without one use it."""
    if title is not None:
        with workspace.catalog.transaction() as conn:
            workspace.catalog.set_setting(conn, REPORT_TITLE_KEY, title)
    else:
        title = workspace.catalog.setting(REPORT_TITLE_KEY)
    from curato.checks.registry import renderers_for
    from curato.report.html import write_html_report

    audit = workspace.read_latest("audit") if audit_document is None else audit_document
    if findings:
        replaced = {finding.check for finding in findings}
        kept = [entry for entry in (audit or {}).get("checks", []) if entry["check"] not in replaced]
        audit = {**(audit or {}), "checks": [finding.to_json() for finding in findings] + kept}
    entries = (audit or {}).get("checks") or []
    as_findings = [_finding_from_json(entry) for entry in entries]
    tables = {finding.check: render(finding) for finding in as_findings
              for name, render in renderers_for([finding]).items() if name == finding.check}
    return write_html_report(workspace, path, overview=workspace_overview(workspace), audit=audit, tables=tables,
                             runs=latest_runs(workspace), title=title)


# ---- curato check: do the catalog, the feature store and the reports agree? ------------------------------------
_ID_KEYS = ("sample_id", "partner")  # keys whose string value names a sample in the latest documents
_ID_LIST_KEYS = ("sample_ids", "groups")  # keys whose (nested) list of strings names samples
_SHOWN = 3  # example ids per problem


@dataclass
class CheckResult:
    """What ``curato check`` found: ``problems`` (damage: exit 3) and ``notes`` (out of date or in progress),
    each ``{"what": one line, "fix": what to run}``."""

    root: str
    problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    busy: str | None = None  # "PID ... (command) since ..." while another process writes: findings may be transient

    @property
    def consistent(self) -> bool:
        """True when nothing is damaged (notes may remain) and no writer was at work."""
        return not self.problems and self.busy is None

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready document."""
        return {"root": self.root, "consistent": self.consistent, "busy": self.busy, "problems": self.problems,
                "notes": self.notes}

    def problem(self, what: str, fix: str) -> None:
        self.problems.append({"what": what, "fix": fix})

    def note(self, what: str, fix: str) -> None:
        self.notes.append({"what": what, "fix": fix})


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(sid) for sid in sorted(ids)[:_SHOWN])
    return f"e.g. {shown}" + (", ..." if len(ids) > _SHOWN else "")


def check_workspace(workspace: Workspace) -> CheckResult:
    """Verify the catalog, the feature store and the latest reports against each other, and the sample files
    on disk; say what to re-run for each disagreement. Reads only: safe beside a running writer, whose
    unfinished work may show up as problems (``busy`` then names it and the verdict waits for it)."""
    from curato.errors import WorkspaceError
    from curato.featurestore import PROPERTIES, THUMBNAILS, store_key
    from curato.lock import pid_alive, this_host
    from curato.workspace import LATEST_DOCUMENTS

    result = CheckResult(root=str(workspace.root))
    ws = workspace.root
    holder = workspace.lock.active_holder()
    if holder is not None:
        result.busy = f"PID {holder.get('pid')} ({holder.get('command')}) since {holder.get('since')}"
    for line in workspace.catalog.integrity_problems():
        result.problem(f"catalog {workspace.catalog.where}: {line}", "restore the catalog from a backup, or "
                       "re-create the workspace with `curato ingest SOURCE -w NEW_DIR`")
    disagreeing = [entry["sample_id"] for entry in workspace.catalog.curated_label_problems()]
    if disagreeing:
        result.problem(f"catalog {workspace.catalog.where}: the stored curated labels of {len(disagreeing)} "
                       f"sample(s) disagree with the label rule ({_examples(disagreeing)}): something wrote labels "
                       "around curato's catalog", "rebuild them from the label history: `python -c \"from curato.api "
                       f"import Workspace; Workspace.open('{ws}').catalog.rebuild_curated_labels()\"`")
    for line in workspace.catalog.count_problems():
        result.problem(f"catalog {workspace.catalog.where}: {line}: something wrote around curato's catalog",
                       "recount them: `python -c \"from curato.api import Workspace; "
                       f"Workspace.open('{ws}').catalog.rebuild_counts()\"`")
    table = workspace.catalog.samples(("sample_id", "kind", "uri", "source", "content_hash", "readable"))
    known = set(table["sample_id"].tolist())
    readable = {sid: digest for sid, digest, ok in zip(table["sample_id"].tolist(), table["content_hash"].tolist(),
                                                        table["readable"].tolist(), strict=True) if ok}
    kinds = dict(zip(table["sample_id"].tolist(), table["kind"].tolist(), strict=True))
    sources = dict(zip(table["sample_id"].tolist(), table["source"].tolist(), strict=True))
    runs = workspace.catalog.runs()
    ingested_from = {(run.get("params") or {}).get("source"): run["name"] for run in runs if run["kind"] == "ingest"}

    def reingest(ids: Sequence[str], *, moved: bool = False) -> str:
        commands = []
        for source in sorted({str(sources.get(sid)) for sid in ids})[:3]:
            path = ingested_from.get(source) or "SOURCE"
            where = f"NEW_PATH (was {path})" if moved else path
            commands.append(f"`curato ingest {where} --source {source} -w {ws}`")
        return "; ".join(commands)

    # runs left `running` by a process that is gone
    for run in runs:
        if run["status"] != "running":
            continue
        summary = run["summary"] if isinstance(run["summary"], dict) else {}
        pid, host = summary.get("pid"), summary.get("host")
        label = f"run {run['id']} ({run['kind']} {run['name'] or ''}".rstrip() + f", started {run['started_at']})"
        if isinstance(pid, int) and (host != this_host() or pid_alive(pid)):
            result.note(f"{label} is running in PID {pid}" + (f" on {host}" if host != this_host() else ""),
                        "wait for it to finish")
        else:
            result.problem(f"{label} was left `running` by a process that is gone (crash, kill or full disk); its "
                           "work may be partial", f"run `curato {run['kind']}` again to finish it (the next writing "
                           "command marks the run interrupted)")
    # the feature store's own files
    damaged = workspace.features.problems()
    for folder, lines in damaged.items():
        for line in lines:
            result.problem(line, f"delete {workspace.features.root / folder} and re-run the command that made it")
    for name in workspace.features.names():
        if store_key(name) in damaged:
            continue
        try:
            stored = workspace.features.load(name)
        except WorkspaceError:
            continue
        rows = dict(zip(stored.ids.tolist(), stored.hashes.tolist(), strict=True))
        unknown = [sid for sid in rows if sid not in known]
        modality = stored.meta.get("modality", "image")
        expected = [sid for sid in readable if modality in (kinds[sid], "any")]
        missing = [sid for sid in expected if sid not in rows]
        stale = [sid for sid in expected if sid in rows and rows[sid] != readable[sid]]
        if unknown:
            result.problem(f"feature set {name!r} holds {len(unknown)} sample(s) the catalog does not know "
                           f"({_examples(unknown)}): the catalog was replaced or lost samples",
                           "restore the catalog that belongs to these features, or re-create the workspace "
                           "(ingest, then embed)")
        if name in (PROPERTIES, THUMBNAILS):  # ingest writes these with the catalog rows: they must agree
            lacking = missing + stale
            if lacking:
                counts = ", ".join(part for part in (f"{len(missing)} lack {name}" if missing else "",
                                                     f"{len(stale)} have stale {name}" if stale else "") if part)
                result.problem(f"readable image samples: {counts} ({_examples(lacking)})",
                               f"re-run {reingest(lacking)}")
        elif missing or stale:
            result.note(f"feature set {name!r}: {len(missing)} sample(s) not embedded yet, {len(stale)} stale "
                        "(their files changed since)", f"`curato embed -w {ws} --embedder {name}`")
        if workspace.features.pending_parts(name):
            result.note(f"feature set {name!r} has an unfinished computation", "run the command that makes it "
                        "again to finish it")
    image_ids = [sid for sid in readable if kinds[sid] == "image"]
    if image_ids and not workspace.features.has(PROPERTIES):
        result.problem(f"{len(image_ids)} readable image sample(s) but no {PROPERTIES} feature set",
                       f"re-run {reingest(image_ids)}")
    # the latest documents: every sample they name must be in the catalog
    for kind in LATEST_DOCUMENTS:
        path = workspace.latest_path(kind)
        if not path.exists():
            continue
        document = workspace.read_latest(kind)
        if document is None:
            result.problem(f"{path} cannot be read", f"re-run `curato {kind} -w {ws}`")
            continue
        named = _named_samples(document)
        unknown = sorted(named - known)
        if unknown:
            result.problem(f"{path} names {len(unknown)} sample(s) the catalog does not know ({_examples(unknown)})",
                           f"re-run `curato {kind} -w {ws}` (export and the report read it)")
    # the files behind the samples
    gone = [sid for sid, uri, ok in zip(table["sample_id"].tolist(), table["uri"].tolist(), table["readable"].tolist(),
                                         strict=True) if ok and uri and not _file_exists(uri)]
    if gone:
        uris = dict(zip(table["sample_id"].tolist(), table["uri"].tolist(), strict=True))
        result.problem(f"{len(gone)} sample file(s) are missing ({_examples(gone)}; first: {uris[sorted(gone)[0]]}):"
                       " the data moved or was deleted",
                       f"re-ingest it from where it is now: {reingest(gone, moved=True)} (sample ids stay the same "
                       "when the folder layout does)")
    return result


def _named_samples(document: Any) -> set[str]:
    """Sample ids named in a JSON document under the keys of ``_ID_KEYS`` and ``_ID_LIST_KEYS``."""
    found: set[str] = set()
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_KEYS and isinstance(value, str):
                    found.add(value)
                elif key in _ID_LIST_KEYS and isinstance(value, list):
                    flat = [v for entry in value for v in (entry if isinstance(entry, list) else [entry])]
                    found.update(v for v in flat if isinstance(v, str))
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _file_exists(uri: str) -> bool:
    """Whether the file behind a sample uri is there (``idx:<file>#<index>``: the IDX file); other schemes: True."""
    if uri.startswith("idx:"):
        uri = uri[4:].rsplit("#", 1)[0]
    elif "://" in uri:
        return True
    return Path(uri).exists()
