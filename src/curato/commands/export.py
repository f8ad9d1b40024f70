"""Export a cleaned copy of the dataset description; source files are never modified.

The cleaning choices (drop duplicates, relabel suspected errors, drop unreadable files) are the
user's, applied to the latest audit's findings (``reports/audit-latest.json``).

Confinement (docs/reliability.md, "Ingest and export confinement"): an image-folder export writes only
inside its output folder, names every file and folder with :func:`path_part` (injective: two ids never
share a file), never overwrites a file, and lists what it wrote in :data:`EXPORT_INDEX`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from curato.errors import InputError, WorkspaceNotReadyError
from curato.workspace import Workspace

EXPORT_FORMATS = ("csv", "imagefolder")
EXPORT_INDEX = ".curato-export.csv"
"""The image-folder export's list of what it wrote (id, file, label, split, source); its leading '.' keeps it
apart from every exported name (those never start with '.') and out of a later ingest of the folder."""
REAL_COLUMNS = ("id", "path", "text", "label", "split", "source", "original_label")
"""Columns an export writes from the catalog; metadata with one of these names is written as ``meta.<name>``."""
UNLABELED = "unlabeled"
_SPLIT_PRIORITY = {"test": 0, "val": 1}
_DUPLICATE_CHECKS = ("exact_duplicates", "near_duplicates", "split_leakage")
_NAME_SAFE = frozenset("-_.+=,@() ")
_NAME_BYTES = 255


def latest_audit(workspace: Workspace) -> dict[str, Any]:
    """The JSON document of the last ``curato audit`` on this workspace."""
    document = workspace.read_latest("audit")
    if document is None:
        raise WorkspaceNotReadyError(f"{workspace.latest_path('audit')}: no audit yet; run `curato audit -w "
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
                 drop_unreadable: bool = True) -> list[dict[str, Any]]:
    """Manifest rows (id, path, label, split, source, metadata as JSON values) after the chosen cleaning steps."""
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
        rows.append(_with_meta(row, meta))
    return rows


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


def export(workspace: Workspace, out: str | Path, *, format: str = "csv", drop_duplicates: bool = False,
           relabel: bool = False, drop_unreadable: bool = True) -> tuple[Path, int]:
    """Write the cleaned dataset to ``out`` as a manifest CSV or an image-folder copy; returns (path, rows).

    An image-folder export also writes ``out/.curato-export.csv``: one row per file it wrote."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format {format!r} cannot be exported yet; use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if format == "csv":
        _check_csv_target(out)
    else:
        _check_folder_target(out)
    rows = cleaned_rows(workspace, drop_duplicates=drop_duplicates, relabel=relabel,
                        drop_unreadable=drop_unreadable)
    if format == "csv":
        _write_csv(out, rows)
        return out, len(rows)
    return out, _export_imagefolder(rows, out)


def _check_csv_target(out: Path) -> None:
    if out.suffix.lower() != ".csv":
        got = f"ends in {out.suffix!r}" if out.suffix else "has no suffix"
        raise InputError(f"{out}: --format csv writes CSV, but this name {got}; name the file *.csv "
                         f"(or use --format imagefolder for a folder)")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; name a .csv file")


def _write_csv(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write atomically: a reader never sees half a file; an existing file keeps its permissions."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(out.stat().st_mode) if out.exists() else 0o644
    descriptor, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
        os.chmod(tmp, mode)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_folder_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose a new folder for the image-folder export")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; choose a new folder for the image-folder export")


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
            written.append({"id": row["id"], "file": "/".join(parts), "label": row.get("label"),
                            "split": row.get("split"), "source": row.get("source")})
    except InputError as error:
        raise InputError(f"{error}; the {len(written)} file(s) written before are listed in "
                         f"{base / EXPORT_INDEX}") from error
    finally:  # also after a failure: the index lists exactly what is on disk
        with (base / EXPORT_INDEX).open("x", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "file", "label", "split", "source"])
            writer.writeheader()
            writer.writerows(written)
    return len(written)
