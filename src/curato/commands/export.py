"""Export a cleaned copy of the dataset description; source files are never modified.

Formats (docs/exports.md): ``csv`` and ``parquet`` manifests, an ``imagefolder`` copy, ``masks`` (indexed PNGs),
``coco`` (labels, boxes, masks), ``label-studio`` tasks and a ``fiftyone`` dataset; the format is ``--format`` or
the output's suffix (:func:`export_format`), and a mismatch is refused. ``issues`` writes the audit's flagged
samples (one row per sample per finding, with file paths) as CSV or Parquet. Every export names the audit run it
used (:func:`audit_used`) and warns when a finding it needs is missing from that audit or older than the labels.

The cleaning choices (drop duplicates, relabel suspected errors, drop unreadable files) are the
user's, applied to the latest audit's findings (``reports/audit-latest.json``). Labels are the catalog's curated
labels (:meth:`Catalog.curated_labels`); every row says its ``original_label``, ``origin`` and whether it
``changed``, and samples people took out in the app (excluded, ambiguous) are left out.

Confinement (docs/reliability.md, "Ingest and export confinement"): an image-folder export writes only
inside its output folder, names every file and folder with :func:`path_part` (injective: two ids never
share a file), never overwrites a file, and lists what it wrote in :data:`EXPORT_INDEX`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curato.errors import InputError, WorkspaceNotReadyError
from curato.workspace import Workspace

EXPORT_FORMATS = ("csv", "parquet", "imagefolder", "coco", "masks", "label-studio", "fiftyone")
FILE_SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq"), "coco": (".json",), "label-studio": (".json",)}
"""The suffixes each single-file format writes; the other formats write a folder."""
FOLDER_FORMATS = ("imagefolder", "masks", "fiftyone")
ISSUE_FORMATS = ("csv", "parquet")
"""Formats of ``export --issues`` (a table)."""
ISSUE_COLUMNS = ("check", "severity", "sample_id", "path", "label", "split", "score", "suggested_label", "rule",
                 "partner", "run_id")
"""Columns of ``export --issues``: one row per flagged sample per finding of the audit."""
_FILE_LIKE = frozenset({".csv", ".tsv", ".parquet", ".pq", ".json", ".jsonl", ".ndjson", ".txt", ".xml", ".xlsx",
                        ".html", ".zip"})
EXPORT_INDEX = ".curato-export.csv"
"""The image-folder export's list of what it wrote (id, file, label, split, source, original_label, origin,
changed); its leading '.' keeps it apart from every exported name (those never start with '.') and out of a later
ingest of the folder."""
_INDEX_COLUMNS = ("id", "file", "label", "split", "source", "original_label", "origin", "changed")
REAL_COLUMNS = ("id", "path", "text", "label", "split", "source", "original_label", "origin", "changed")
"""Columns an export writes from the catalog; metadata with one of these names is written as ``meta.<name>``."""
UNLABELED = "unlabeled"
EVALUATION_SPLITS = frozenset({"test", "val", "valid", "validation", "eval", "dev"})
"""Splits whose labels ``--relabel`` leaves alone unless ``--relabel-test`` is given (case-insensitive): a model's
suggestion written into the data a model is judged on would grade the model by its own answers."""
CHANGE_REASONS: dict[str, str] = {
    "relabelled_by_model": "relabelled with the audit's suggested label (--relabel)",
    "relabelled_by_people": "label set by people in the labelling app",
    "routed_model_labels": "model label accepted by a `curato route` rule",
    "reimported_labels": "label changed by a later import",
    "kept_test_labels": "kept: evaluation split, not relabelled from the model alone (--relabel-test to allow)",
    "kept_human_labels": "kept: label set by people, never overwritten by --relabel",
    "stale_suggestions": "kept: the audit judged an older label (run `curato audit` again)",
    "excluded": "left out: excluded in the labelling app",
    "ambiguous": "left out: marked ambiguous in the labelling app",
    "duplicates_dropped": "left out: duplicate (--drop-duplicates)",
    "unreadable_dropped": "left out: file cannot be read",
}
"""Every count an export reports (``ExportResult.changes``), with the line the CLI prints for it. The first four
count exported rows whose ``changed`` is true, by the row's ``origin``; they sum to the changed rows."""
_CHANGED_BY_ORIGIN = {"suggested": "relabelled_by_model", "human": "relabelled_by_people",
                      "model": "routed_model_labels", "imported": "reimported_labels"}
_SPLIT_PRIORITY = {"test": 0, "val": 1}
_NAME_SAFE = frozenset("-_.+=,@() ")
_NAME_BYTES = 255


def latest_audit(workspace: Workspace) -> dict[str, Any]:
    """The JSON document of the last ``curato audit`` on this workspace."""
    document = workspace.read_latest("audit")
    if document is None:
        raise WorkspaceNotReadyError(f"{workspace.latest_path('audit')}: no audit yet; run `curato audit -w "
                             f"{workspace.root}` before a cleaned export")
    return document


def export_format(out: str | Path, format: str | None = None) -> str:
    """The format of an export to ``out``: ``format`` when given (refused when ``out``'s suffix says otherwise),
    else from the suffix: ``.csv``, ``.parquet``/``.pq``; ``.json`` is ambiguous (COCO or Label Studio) and
    refused; a name without a file suffix (or an existing folder) is an image-folder copy."""
    out = Path(out)
    if format is not None and format not in EXPORT_FORMATS:
        raise InputError(f"--format {format!r} is unknown; use one of {', '.join(EXPORT_FORMATS)}")
    suffix = "" if out.is_dir() else out.suffix.lower()
    got = f"ends in {out.suffix!r}" if suffix else "has no file suffix"
    if format is None:
        if suffix == ".json":
            raise InputError(f"{out}: a name ending in '.json' is a COCO or a Label Studio export; pass "
                             f"--format coco or --format label-studio")
        for name, suffixes in FILE_SUFFIXES.items():
            if suffix in suffixes:
                return name
        if suffix in _FILE_LIKE:
            raise InputError(f"{out}: curato does not write {suffix} files; name the output *.csv, *.parquet or "
                             f"*.json (with --format), or a folder")
        return "imagefolder"
    expected = FILE_SUFFIXES.get(format)
    if expected is not None and suffix not in expected:
        raise InputError(f"{out}: --format {format} writes a {expected[0]} file, but this name {got}; name the "
                         f"file *{expected[0]} (or leave --format out to take the format from the name)")
    if format in FOLDER_FORMATS and suffix in _FILE_LIKE:
        raise InputError(f"{out}: --format {format} writes a folder, but this name {got} like a file, not a "
                         f"folder; name a folder (or leave --format out to take the format from the name)")
    return format


# ---- which audit an export uses ----------------------------------------------------------------------------------

_DUPLICATE_CHECKS = ("exact_duplicates", "near_duplicates", "split_leakage")
NEEDED_FINDINGS = {"relabel": ("label_issues",), "drop_duplicates": _DUPLICATE_CHECKS}
"""The audit findings each cleaning option reads."""


@dataclass
class AuditUsed:
    """The audit an export read: its run(s), when they finished, the findings it holds, and warnings about
    findings an option needs that are missing or older than the latest labels."""

    run_ids: list[int]
    finished_at: str | None
    findings: list[str]
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: ``audit run 7 (finished 2026-12-07 05:20:11 UTC; checks duplicates, label_issues; 5 findings)``."""
        runs = ", ".join(str(run) for run in self.run_ids) or "?"
        when = f"finished {self.finished_at}; " if self.finished_at else ""
        checks = f"checks {', '.join(self.checks)}; " if self.checks else ""
        return (f"audit run{'s' if len(self.run_ids) > 1 else ''} {runs} ({when}{checks}"
                f"{len(self.findings)} findings)")


def _as_utc(value: Any) -> dt.datetime | None:
    """A datetime (or ISO text) in UTC; naive values are taken as UTC (SQLite drops the zone)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _shown(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def latest_label_time(workspace: Workspace) -> dt.datetime | None:
    """When the newest label (any origin, not retracted) was written."""
    from sqlalchemy import func, select

    from curato.catalog.schema import labels

    with workspace.catalog.engine.connect() as conn:
        found = conn.execute(select(func.max(labels.c.created_at)).where(labels.c.retracted_at.is_(None))).scalar()
    return _as_utc(found)


def finding_runs(workspace: Workspace, audit: dict[str, Any]) -> dict[str, tuple[int | None, dt.datetime | None]]:
    """Finding name -> (run id, finished time) of the run that produced it: the finding's own ``run_id`` and
    ``finished_at`` (a merged partial audit carries them), else the document's, else the workspace's latest
    finished audit run."""
    fallback_id, fallback_time = audit.get("run_id"), audit.get("finished_at")
    if fallback_id is None:
        done = [run for run in workspace.catalog.runs("audit") if run["status"] == "done"]
        if done:
            fallback_id, fallback_time = done[-1]["id"], fallback_time or done[-1]["finished_at"]
    found: dict[str, tuple[int | None, dt.datetime | None]] = {}
    for finding in audit.get("checks", []):
        run = finding.get("run_id", fallback_id)
        found[finding["check"]] = (run if isinstance(run, int) else None,
                                   _as_utc(finding.get("finished_at", fallback_time)))
    return found


def audit_used(workspace: Workspace, audit: dict[str, Any], needs: Sequence[str] = ()) -> AuditUsed:
    """Which run(s) produced ``audit`` (:func:`finding_runs`) and a warning for each finding in ``needs`` that is
    missing from it or finished before the latest label was written."""
    per_finding = finding_runs(workspace, audit)
    fallback_id, fallback_time = audit.get("run_id"), audit.get("finished_at")
    run_ids = sorted({int(run) for run, _ in per_finding.values() if isinstance(run, int)})
    times = [moment for _, moment in per_finding.values() if moment is not None]
    used = AuditUsed(run_ids=run_ids or ([int(fallback_id)] if isinstance(fallback_id, int) else []),
                     finished_at=_shown(min(times) if times else _as_utc(fallback_time)), findings=list(per_finding),
                     checks=[str(name) for name in audit.get("checks_run") or []])
    labelled = latest_label_time(workspace) if needs else None
    from curato.checks.registry import finding_checks

    producers = finding_checks()
    for name in needs:
        check = producers.get(name, name)
        if name not in per_finding:
            used.warnings.append(f"the audit has no {name!r} finding; run `curato audit --checks {check}` first")
        elif labelled is not None and per_finding[name][1] is not None and per_finding[name][1] < labelled:
            used.warnings.append(f"{name!r} is from audit run {per_finding[name][0]} "
                                 f"({_shown(per_finding[name][1])}), older than the latest label "
                                 f"({_shown(labelled)}); run `curato audit --checks {check}` again")
    return used


def issue_rows(workspace: Workspace, audit: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per flagged sample per finding of ``audit`` (:data:`ISSUE_COLUMNS`): the finding's check and
    severity, the sample's id, file ``path``, current ``label`` and ``split``, its ``score``, the audit's
    ``suggested_label``, the duplicate ``rule`` and ``partner`` where the finding gives them, and the ``run_id``
    that flagged it. Worst first within a finding, findings in the audit's order."""
    table = workspace.catalog.samples(("sample_id", "uri", "split"))
    paths = dict(zip(table["sample_id"].tolist(), table["uri"].tolist(), strict=True))
    splits = dict(zip(table["sample_id"].tolist(), table["split"].tolist(), strict=True))
    labels = workspace.catalog.current_labels()
    runs = finding_runs(workspace, audit)
    rows = []
    for finding in audit.get("checks", []):
        for issue in finding.get("issues", []):
            sample_id = issue["sample_id"]
            rows.append({"check": finding["check"], "severity": finding["severity"], "sample_id": sample_id,
                         "path": paths.get(sample_id), "label": labels.get(sample_id, issue.get("label")),
                         "split": splits.get(sample_id), "score": issue.get("score"),
                         "suggested_label": issue.get("suggested_label"), "rule": issue.get("rule"),
                         "partner": issue.get("partner"), "run_id": runs[finding["check"]][0]})
    return rows


def _duplicate_drops(audit: dict[str, Any], splits: dict[str, str | None], left_out: set[str]) -> set[str]:
    """From every duplicate group keep one member: the evaluation-split copy (test, then val), else the first id.

    Members in ``left_out`` (taken out in the app) are not candidates, so a group never loses every copy."""
    drops: set[str] = set()
    for finding in audit["checks"]:
        if finding["check"] not in _DUPLICATE_CHECKS:
            continue
        for group in finding.get("evidence", {}).get("groups", []):
            members = sorted((sid for sid in group if sid not in left_out),
                             key=lambda sid: (_SPLIT_PRIORITY.get(splits.get(sid) or "", 2), sid))
            drops.update(members[1:])
    return drops


def is_evaluation_split(split: str | None) -> bool:
    """Whether ``split`` is one of :data:`EVALUATION_SPLITS`."""
    return split is not None and split.strip().lower() in EVALUATION_SPLITS


def _suggestions(audit: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
    """sample_id -> (the label the audit judged, its suggested label) from the audit's ``label_issues``."""
    return {row["sample_id"]: (row.get("label"), str(row["suggested_label"]))
            for finding in audit["checks"] if finding["check"] == "label_issues"
            for row in finding.get("issues", []) if row.get("suggested_label") is not None}


def _with_meta(row: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """``row`` plus the metadata fields; a field named like a real column (or an earlier renamed one) becomes
    ``meta.<name>``, so metadata never shadows the catalog's id, path, label, split or source."""
    merged = dict(row)
    taken = set(REAL_COLUMNS) | set(row)
    for key, value in (meta or {}).items():
        name = key
        while name in taken:
            name = f"meta.{name}"
        taken.add(name)
        merged[name] = value
    return merged


def cleaned_rows(workspace: Workspace, *, drop_duplicates: bool = False, relabel: bool = False,
                 drop_unreadable: bool = True, relabel_test: bool = False) -> list[dict[str, Any]]:
    """Manifest rows after the chosen cleaning steps (see :func:`clean`)."""
    return clean(workspace, drop_duplicates=drop_duplicates, relabel=relabel, drop_unreadable=drop_unreadable,
                 relabel_test=relabel_test)[0]


def clean(workspace: Workspace, *, drop_duplicates: bool = False, relabel: bool = False,
          drop_unreadable: bool = True, relabel_test: bool = False,
          audit: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(rows, changes): manifest rows after the chosen cleaning steps, and the count of each
    :data:`CHANGE_REASONS` (all keys, zeros included).

    Each row: id, path (or text), label (the curated label, or the audit's suggestion under ``relabel``), split,
    source, original_label (the first imported label), origin (human | model | imported | suggested), changed
    (label != original_label), then the metadata. Samples excluded or marked ambiguous in the app are left out.
    ``relabel`` never overwrites a label people set, nor, without ``relabel_test``, one in an evaluation split.
    ``audit``: the audit document to clean by (default: the workspace's latest, read when an option needs it).
    """
    if relabel_test and not relabel:
        raise InputError("--relabel-test only widens --relabel; pass both to relabel evaluation splits")
    catalog = workspace.catalog
    table = catalog.samples(("sample_id", "uri", "text", "split", "source", "readable", "meta"))
    curated = catalog.curated_labels()
    originals = catalog.original_labels()
    states = catalog.sample_states()
    splits = dict(zip(table["sample_id"].tolist(), table["split"].tolist(), strict=True))
    changes = dict.fromkeys(CHANGE_REASONS, 0)
    drops: set[str] = set()
    suggestions: dict[str, tuple[str | None, str]] = {}
    if drop_duplicates or relabel:
        audit = audit if audit is not None else latest_audit(workspace)
        if drop_duplicates:
            drops = _duplicate_drops(audit, splits, set(states))
        if relabel:
            suggestions = _suggestions(audit)
    rows = []
    for sid, uri, text, split, source, readable, meta in zip(*table.values(), strict=True):
        if sid in states:
            changes[states[sid]] += 1
            continue
        if sid in drops:
            changes["duplicates_dropped"] += 1
            continue
        if drop_unreadable and not readable:
            changes["unreadable_dropped"] += 1
            continue
        current = curated.get(sid)
        label, origin = (current.label, current.origin) if current is not None else (None, None)
        if sid in suggestions and suggestions[sid][1] != label:
            judged, suggested = suggestions[sid]
            if origin == "human":
                changes["kept_human_labels"] += 1
            elif judged is not None and judged != label:
                changes["stale_suggestions"] += 1
            elif is_evaluation_split(split) and not relabel_test:
                changes["kept_test_labels"] += 1
            else:
                label, origin = suggested, "suggested"
        original = originals.get(sid)
        changed = label != original
        if changed and origin is not None:
            changes[_CHANGED_BY_ORIGIN[origin]] += 1
        row: dict[str, Any] = {"id": sid, "path": uri} if text is None else {"id": sid, "text": text}
        row.update({"label": label, "split": split, "source": source, "original_label": original,
                    "origin": origin, "changed": changed})
        rows.append(_with_meta(row, meta))
    return rows, changes


def path_part(text: str) -> str:
    """A file or folder name for one id, label or split that cannot leave its folder or hide.

    Letters, digits and ``-_.+=,@()`` and inner spaces are kept; every other character (``/``, ``\\``, ``%``,
    control characters, ...) becomes ``%XX`` per UTF-8 byte, and so do a leading ``.`` and a leading or
    trailing space. ``%`` is always encoded, so the mapping is injective: two ids never share a name.
    """
    last = len(text) - 1
    out = []
    for position, char in enumerate(text):
        keep = (char.isalnum() or char in _NAME_SAFE) and not (position == 0 and char == ".") \
            and not (char == " " and position in (0, last))
        out.append(char if keep else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")))
    return "".join(out)


def _cell(value: Any) -> Any:
    """A CSV cell: strings as they are, other JSON values as JSON (true, [1, 2], {"k": 1}), None empty."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


@dataclass
class ExportOutcome:
    """What one export wrote: ``count`` items (``what``: samples, masks, images, tasks, issue rows) at ``path``
    in ``format``; ``changes`` per :data:`CHANGE_REASONS`; the image-folder ``index``; the ``audit`` it read
    (None when it needed none and none exists) and ``notes`` to show (e.g. a Label Studio setting)."""

    path: Path
    count: int
    format: str
    what: str
    changes: dict[str, int]
    index: Path | None = None
    audit: AuditUsed | None = None
    notes: list[str] = field(default_factory=list)


def export(workspace: Workspace, out: str | Path, *, format: str | None = "csv", drop_duplicates: bool = False,
           relabel: bool = False, drop_unreadable: bool = True, relabel_test: bool = False) -> tuple[Path, int]:
    """Write the cleaned dataset to ``out`` in ``format`` (None: from the name); returns (path, items written).

    An image-folder export also writes ``out/.curato-export.csv``: one row per file it wrote."""
    path, count, _ = export_with_changes(workspace, out, format=format, drop_duplicates=drop_duplicates,
                                         relabel=relabel, drop_unreadable=drop_unreadable, relabel_test=relabel_test)
    return path, count


def export_with_changes(workspace: Workspace, out: str | Path, *, format: str | None = "csv",
                        drop_duplicates: bool = False, relabel: bool = False, drop_unreadable: bool = True,
                        relabel_test: bool = False) -> tuple[Path, int, dict[str, int]]:
    """:func:`export`, also returning how many rows changed or were left out, per :data:`CHANGE_REASONS`."""
    outcome = run_export(workspace, out, format=format, drop_duplicates=drop_duplicates, relabel=relabel,
                         drop_unreadable=drop_unreadable, relabel_test=relabel_test)
    return outcome.path, outcome.count, outcome.changes


def run_export(workspace: Workspace, out: str | Path, *, format: str | None = None, issues: bool = False,
               drop_duplicates: bool = False, relabel: bool = False, drop_unreadable: bool = True,
               relabel_test: bool = False, files_root: str | Path | None = None) -> ExportOutcome:
    """Export the workspace to ``out`` (format: ``format``, else from the name; :func:`export_format`).

    ``issues``: write the audit's flagged samples (:func:`issue_rows`) as CSV or Parquet instead of the samples.
    The cleaning options apply to every sample format; ``files_root`` is the folder Label Studio serves the
    images from (default: the folder holding them all). The latest audit is read when an option needs it
    (missing: WorkspaceNotReadyError) or when the format carries findings (label-studio, fiftyone)."""
    out = Path(out)
    chosen = export_format(out, format)
    if issues and chosen not in ISSUE_FORMATS:
        raise InputError(f"{out}: --issues writes a table; name a .csv or .parquet file (not --format {chosen})")
    needs = [name for option, on in (("relabel", relabel), ("drop_duplicates", drop_duplicates)) if on
             for name in NEEDED_FINDINGS[option]]
    if needs or issues:
        document: dict[str, Any] | None = latest_audit(workspace)
    else:
        document = workspace.read_latest("audit") if chosen in ("label-studio", "fiftyone") else None
    used = None if document is None else audit_used(workspace, document, needs)
    _check_target(out, chosen)
    if issues:
        assert document is not None
        found = issue_rows(workspace, document)
        write_table(out, found, chosen, ISSUE_COLUMNS)
        return ExportOutcome(out, len(found), chosen, "issue rows", dict.fromkeys(CHANGE_REASONS, 0), audit=used)
    rows, changes = clean(workspace, drop_duplicates=drop_duplicates, relabel=relabel,
                          drop_unreadable=drop_unreadable, relabel_test=relabel_test, audit=document)
    outcome = ExportOutcome(out, len(rows), chosen, "samples", changes, audit=used)
    if chosen in ("csv", "parquet"):
        write_table(out, rows, chosen)
    elif chosen == "masks":
        outcome.count, outcome.what = export_mask_folder(workspace, rows, out), "masks"
    elif chosen == "coco":
        outcome.count, outcome.what = export_coco(workspace, rows, out), "images"
    elif chosen == "label-studio":
        from curato.commands.export_labelstudio import export_label_studio

        version = "curato " + (f"audit run {', '.join(map(str, used.run_ids))}" if used and used.run_ids
                               else "(no audit)")
        outcome.count, outcome.notes = export_label_studio(workspace, rows, out, document, files_root=files_root,
                                                           version=version)
        outcome.what = "tasks"
    elif chosen == "fiftyone":
        from curato.commands.export_fiftyone import export_fiftyone

        outcome.count = export_fiftyone(workspace, rows, out, document)
    else:
        outcome.count, outcome.index = _export_imagefolder(rows, out), out / EXPORT_INDEX
    return outcome


def _check_target(out: Path, format: str) -> None:
    """Refuse, before any work, an output that exists as the wrong kind (a folder for a file format, a file or a
    non-empty folder for a folder format)."""
    if format in FILE_SUFFIXES:
        if out.is_dir():
            raise InputError(f"{out}: is a folder; name a {FILE_SUFFIXES[format][0]} file")
        return
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose a new folder for the {format} export")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; choose a new folder for the {format} export")


def write_table(out: Path, rows: list[dict[str, Any]], format: str, columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` as CSV or Parquet (atomically); ``columns`` fixes the header (else every key, in order)."""
    if format == "parquet":
        _write_parquet(out, rows, columns)
    else:
        _write_csv(out, rows, columns)


def _parquet_column(values: list[Any]) -> list[Any]:
    """A column Parquet can type: values of one scalar kind as they are, anything else as JSON text (strings
    stay strings), so a metadata column mixing numbers and lists is still written."""
    kinds = {type(value) for value in values if value is not None}
    if (len(kinds) <= 1 and kinds <= {str, int, float, bool}) or kinds == {int, float}:
        return values
    return [value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            for value in values]


def _write_parquet(out: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise InputError(f"{out}: writing Parquet needs pyarrow; pip install 'curato[parquet]', or name a "
                         f".csv file") from error
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    table = pa.table({name: _parquet_column([row.get(name) for row in rows]) for name in names})
    write_atomic(out, lambda tmp: pq.write_table(table, tmp))


def write_atomic(out: Path, write: Callable[[str], None], mode: int | None = None) -> None:
    """Write ``out`` through a temporary file beside it, renamed into place: a reader never sees half a file;
    an existing file keeps its permissions."""
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = mode if mode is not None else stat.S_IMODE(out.stat().st_mode) if out.exists() else 0o644
    descriptor, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_csv(out: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)

    write_atomic(out, write)


def _plan(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """(row, relative path parts) for every row, all checked before anything is written."""
    with_split = [row for row in rows if row.get("split")]
    if with_split and len(with_split) < len(rows):
        raise InputError(f"{len(rows) - len(with_split)} sample(s) have no split and {len(with_split)} have one: "
                         f"the folders would mix splits and classes; give every sample a split (ingest with "
                         f"--split) or export --format csv")
    labels = {row.get("label") for row in rows}
    if None in labels and UNLABELED in labels:
        raise InputError(f"some samples have no label and some have the label {UNLABELED!r}: both would go to "
                         f"the folder {UNLABELED!r}; rename that label or export --format csv")
    plan = []
    seen: set[tuple[str, ...]] = set()
    for row in rows:
        sample, file = row["id"], row.get("path")
        if file is None or str(file).startswith("idx:"):
            raise InputError(f"sample {sample!r} has no image file to copy; export --format csv instead")
        try:
            mode = os.stat(file).st_mode
        except OSError as error:
            raise InputError(f"sample {sample!r}: {file} cannot be read ({error.strerror}); re-ingest, "
                             f"or export --format csv") from error
        if not stat.S_ISREG(mode):
            raise InputError(f"sample {sample!r}: {file} is not a regular file; re-ingest, or export --format csv")
        named = [("split", row["split"])] if row.get("split") else []
        named += [("label", row["label"] if row.get("label") else None), ("id", sample)]
        parts = []
        for what, value in named:
            part = UNLABELED if value is None else path_part(str(value))
            if len(part.encode("utf-8")) > _NAME_BYTES:
                raise InputError(f"sample {sample!r}: its {what} makes a name of {len(part.encode('utf-8'))} bytes, "
                                 f"over the {_NAME_BYTES} bytes a file name may have; shorten the {what} or "
                                 f"export --format csv")
            parts.append(part)
        if tuple(parts) in seen:  # cannot happen (path_part is injective); checked because a merge loses data
            raise InputError(f"sample {sample!r}: two samples map to {'/'.join(parts)}; export --format csv")
        seen.add(tuple(parts))
        plan.append((row, tuple(parts)))
    return plan


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target``: never overwrites, never follows a symlink at ``target``, never
    blocks on a FIFO swapped in for ``source``."""
    descriptor = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise InputError(f"{source}: is not a regular file; re-ingest, or export --format csv")
        with open(target, "xb") as writer:  # O_CREAT | O_EXCL
            shutil.copyfileobj(reader, writer, 1 << 20)
    shutil.copystat(source, target)


def _export_imagefolder(rows: list[dict[str, Any]], out: Path) -> int:
    plan = _plan(rows)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create this folder ({error.strerror}); choose another") from error
    base = out.resolve()
    written: list[dict[str, Any]] = []
    try:
        for row, parts in plan:
            target = base.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.parent.resolve() != target.parent or not target.is_relative_to(base):
                raise InputError(f"{target}: would be written outside {base} (a folder was replaced by a "
                                 f"symlink); export into a new folder")
            try:
                _copy_new(Path(row["path"]), target)
            except FileExistsError as error:
                raise InputError(f"{target}: already exists (on a filesystem that ignores case, two ids can "
                                 f"share a name); nothing was overwritten — export --format csv") from error
            except OSError as error:
                raise InputError(f"sample {row['id']!r}: cannot copy {row['path']} ({error.strerror})") from error
            written.append({"id": row["id"], "file": "/".join(parts),
                            **{column: row.get(column) for column in _INDEX_COLUMNS[2:]}})
    except InputError as error:
        raise InputError(f"{error}; the {len(written)} file(s) written before are listed in "
                         f"{base / EXPORT_INDEX}") from error
    finally:  # also after a failure: the index lists exactly what is on disk
        with (base / EXPORT_INDEX).open("x", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(_INDEX_COLUMNS))
            writer.writeheader()
            writer.writerows({key: _cell(value) for key, value in row.items()} for row in written)
    return len(written)


# ---- masks (curato.masks; docs/workspace.md "Masks") ----------------------------------------------------------


def _current_masks(workspace: Workspace, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, Any]]]:
    """(the workspace's mask classes, [(sample id, label map)]) of the exported rows that have a mask; label value
    i + 1 is class i in every map."""
    catalog = workspace.catalog
    with_masks = set(catalog.mask_sample_ids())
    classes = catalog.mask_classes()
    maps = []
    for row in rows:
        if row["id"] not in with_masks:
            continue
        found = catalog.semantic_mask(row["id"], classes)
        if found is not None:
            maps.append((row["id"], found[0]))
            classes = found[1]  # instance categories beyond the semantic classes are appended
    if len(classes) > 255:
        raise InputError(f"{len(classes)} mask classes do not fit an indexed PNG (at most 255); export --format coco")
    return classes, maps


def export_mask_folder(workspace: Workspace, rows: list[dict[str, Any]], out: Path) -> int:
    """Write each exported sample's current semantic mask as an indexed PNG at ``out/<its id without the
    suffix>.png`` (folders kept, names made safe by :func:`path_part`) and the class names to ``out/classes.txt``
    (line 0 ``background``, line i class i) -- the layout ``curato ingest --masks`` reads. Returns masks written."""
    from curato.masks import write_label_png

    classes, maps = _current_masks(workspace, rows)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create this folder ({error.strerror}); choose another") from error
    base = out.resolve()
    for sample_id, label_map in maps:
        parts = [path_part(part) for part in Path(sample_id).with_suffix("").parts]
        target = base.joinpath(*parts[:-1], parts[-1] + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() != target.parent or not target.is_relative_to(base) or target.exists():
            raise InputError(f"{target}: exists or would be written outside {base}; export into a new folder")
        write_label_png(target, label_map)
    (base / "classes.txt").write_text("".join(f"{name}\n" for name in ["background", *classes]), encoding="utf-8")
    return len(maps)


def _annotation_rows(workspace: Workspace, sample_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """sample_id -> its annotation rows (boxes, polygons, RLE), oldest first, superseded mask rows left out."""
    from sqlalchemy import select

    from curato.catalog.schema import annotations

    found: dict[str, list[dict[str, Any]]] = {}
    wanted = list(sample_ids)
    with workspace.catalog.engine.connect() as conn:
        for start in range(0, len(wanted), 900):
            query = select(annotations).where(annotations.c.sample_id.in_(wanted[start:start + 900]))
            for row in conn.execute(query.order_by(annotations.c.id)):
                entry = dict(row._mapping)
                if not (entry["data"] or {}).get("superseded_by"):
                    found.setdefault(entry["sample_id"], []).append(entry)
    return found


def _instances(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """(box row, segmentation row) per object of a sample's instance annotations (not semantic masks): a COCO
    ingest stores an object's box and its segmentation as two rows in a row, so a box followed by a segmentation
    of the same category and origin is one object; any other row is an object of its own."""
    objects: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for row in rows:
        if row["kind"] == "bbox":
            objects.append((row, None))
        elif row["kind"] in ("polygon", "rle") and not (row["data"] or {}).get("semantic"):
            previous = objects[-1] if objects else (None, None)
            box = previous[0]
            if box is not None and previous[1] is None and box["category"] == row["category"] \
                    and box["origin"] == row["origin"]:
                objects[-1] = (box, row)
            else:
                objects.append((None, row))
    return objects


def export_coco(workspace: Workspace, rows: list[dict[str, Any]], out: Path) -> int:
    """Write one COCO JSON of the exported samples (docs/exports.md, "COCO"): ``categories`` (the mask classes
    first, id i = class i, then every other label and annotation category by name); ``images`` (``file_name`` =
    the sample id, width, height, and ``curato_label`` and ``curato_split`` -- COCO has no image label, so
    curato's ingest reads these fields back); ``annotations``: each box (with its segmentation when it had one),
    and each sample's current semantic mask as one compressed-RLE annotation per class marked
    ``"curato_semantic": true`` (iscrowd 0, as COCO-Stuff writes semantic masks). Text samples are left out.
    Returns the images written."""
    from curato.masks import encode_rle, mask_bbox, segmentation_mask, split_label_map

    catalog = workspace.catalog
    files = [row for row in rows if row.get("path") is not None]
    table = catalog.samples(("sample_id", "width", "height"))
    sizes = {sid: (width, height) for sid, width, height in zip(*table.values(), strict=True)}
    found = _annotation_rows(workspace, [row["id"] for row in files])
    mask_classes = catalog.mask_classes()
    others = {row.get("label") for row in files} | {entry["category"] for entries in found.values()
                                                     for entry in entries}
    categories = mask_classes + sorted(name for name in others if name is not None and name not in mask_classes)
    category_id = {name: index for index, name in enumerate(categories, start=1)}
    images, annotations = [], []

    def add(number: int, category: str, segmentation: Any, box: list[float] | None, area: float | None,
            **extra: Any) -> None:
        entry: dict[str, Any] = {"id": len(annotations) + 1, "image_id": number, "category_id": category_id[category],
                                 "iscrowd": 0}
        if segmentation is not None:
            entry["segmentation"] = segmentation
        if box is not None:
            entry["bbox"] = box
        if area is not None:
            entry["area"] = area
        annotations.append({**entry, **extra})

    for number, row in enumerate(files, start=1):
        sample_id = row["id"]
        width, height = sizes.get(sample_id, (None, None))
        image: dict[str, Any] = {"id": number, "file_name": sample_id, "width": width, "height": height}
        image.update({"curato_label": row.get("label"), "curato_split": row.get("split")})
        entries = found.get(sample_id, [])
        if any(entry["kind"] == "rle" and (entry["data"] or {}).get("semantic") for entry in entries):
            current = catalog.semantic_mask(sample_id, categories)
            if current is not None:
                label_map = current[0]
                image["height"], image["width"] = (int(label_map.shape[0]), int(label_map.shape[1]))
                present, binaries = split_label_map(label_map)
                for value, binary in zip(present.tolist(), binaries, strict=True):
                    add(number, categories[int(value) - 1], encode_rle(binary), mask_bbox(binary),
                        int(binary.sum()), curato_semantic=True)
        shape = (image["height"], image["width"]) if image["height"] and image["width"] else None
        for box, segmentation in _instances(entries):
            category = (box or segmentation or {}).get("category")
            if category is None:
                continue
            polygon_or_rle = None if segmentation is None else (segmentation["data"] or {}).get("segmentation")
            bbox = None if box is None else (box["data"] or {}).get("bbox")
            if bbox is None and polygon_or_rle is not None and (shape or isinstance(polygon_or_rle, dict)):
                bbox = mask_bbox(segmentation_mask(polygon_or_rle, shape))
            area = (box or segmentation or {}).get("area")
            add(number, category, polygon_or_rle, bbox, area)
        images.append(image)
    document = {"info": {"description": "curato export --format coco (docs/exports.md): image labels as the "
                                        "images' 'curato_label' field, boxes, instance and semantic masks"},
                "categories": [{"id": index, "name": name} for index, name in enumerate(categories, start=1)],
                "images": images, "annotations": annotations}

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle)

    write_atomic(out, write)
    return len(images)
