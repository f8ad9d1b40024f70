"""Export a cleaned copy of the dataset description; source files are never modified.

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
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from curato.errors import InputError, WorkspaceNotReadyError
from curato.workspace import Workspace

EXPORT_FORMATS = ("csv", "imagefolder", "masks", "coco")
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
          drop_unreadable: bool = True, relabel_test: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(rows, changes): manifest rows after the chosen cleaning steps, and the count of each
    :data:`CHANGE_REASONS` (all keys, zeros included).

    Each row: id, path (or text), label (the curated label, or the audit's suggestion under ``relabel``), split,
    source, original_label (the first imported label), origin (human | model | imported | suggested), changed
    (label != original_label), then the metadata. Samples excluded or marked ambiguous in the app are left out.
    ``relabel`` never overwrites a label people set, nor, without ``relabel_test``, one in an evaluation split.
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
        audit = latest_audit(workspace)
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


def export(workspace: Workspace, out: str | Path, *, format: str = "csv", drop_duplicates: bool = False,
           relabel: bool = False, drop_unreadable: bool = True, relabel_test: bool = False) -> tuple[Path, int]:
    """Write the cleaned dataset to ``out`` as a manifest CSV or an image-folder copy; returns (path, rows).

    An image-folder export also writes ``out/.curato-export.csv``: one row per file it wrote."""
    path, count, _ = export_with_changes(workspace, out, format=format, drop_duplicates=drop_duplicates,
                                         relabel=relabel, drop_unreadable=drop_unreadable, relabel_test=relabel_test)
    return path, count


def export_with_changes(workspace: Workspace, out: str | Path, *, format: str = "csv", drop_duplicates: bool = False,
                        relabel: bool = False, drop_unreadable: bool = True,
                        relabel_test: bool = False) -> tuple[Path, int, dict[str, int]]:
    """:func:`export`, also returning how many rows changed or were left out, per :data:`CHANGE_REASONS`."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format {format!r} cannot be exported yet; use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if format == "csv":
        _check_csv_target(out)
    elif format == "coco":
        _check_json_target(out)
    else:
        _check_folder_target(out)
    rows, changes = clean(workspace, drop_duplicates=drop_duplicates, relabel=relabel,
                          drop_unreadable=drop_unreadable, relabel_test=relabel_test)
    if format == "csv":
        _write_csv(out, rows)
        return out, len(rows), changes
    if format == "masks":
        return out, export_mask_folder(workspace, rows, out), changes
    if format == "coco":
        return out, export_coco(workspace, rows, out), changes
    return out, _export_imagefolder(rows, out), changes


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


def export_coco(workspace: Workspace, rows: list[dict[str, Any]], out: Path) -> int:
    """Write a COCO JSON of the exported samples' current masks: ``categories`` (id i = class i), ``images``
    (``file_name`` = the sample id, width, height), and one ``annotations`` entry per (image, class) with a
    compressed RLE ``segmentation``, its ``area`` and ``bbox`` (iscrowd 0, as COCO-Stuff writes semantic
    masks). Returns the number of images written."""
    from curato.masks import encode_rle, mask_bbox, split_label_map

    classes, maps = _current_masks(workspace, rows)
    images, annotations = [], []
    for number, (sample_id, label_map) in enumerate(maps, start=1):
        images.append({"id": number, "file_name": sample_id, "height": int(label_map.shape[0]),
                       "width": int(label_map.shape[1])})
        present, binaries = split_label_map(label_map)
        for value, binary in zip(present.tolist(), binaries, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": int(value),
                                "segmentation": encode_rle(binary), "area": int(binary.sum()),
                                "bbox": mask_bbox(binary), "iscrowd": 0})
    document = {"info": {"description": "curato export --format coco: semantic masks, one RLE per image and class"},
                "categories": [{"id": index, "name": name} for index, name in enumerate(classes, start=1)],
                "images": images, "annotations": annotations}
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(images)


def _check_json_target(out: Path) -> None:
    if out.suffix.lower() != ".json":
        raise InputError(f"{out}: --format coco writes one COCO JSON file; name it *.json")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; name a .json file")
