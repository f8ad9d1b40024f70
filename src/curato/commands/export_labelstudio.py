"""Label Studio both ways: export tasks with curato's suggestions and findings as pre-annotations, and bring the
annotated tasks back as human labels (docs/exports.md, "Label Studio").

Export: one task per image sample, ``data.image`` a Label Studio local-files URL (``/data/local-files/?d=<path
relative to the files root>``) beside ``data.sample_id`` and ``data.path``; one prediction per task whose
``result`` holds a ``choices`` region for the class (the audit's suggested label for a suspected label error,
else the latest ``select`` batch's predicted label, else the current label) and one for the audit findings that
flagged the sample, and a sample's current semantic mask as ``polygonlabels`` regions (one outline per piece,
holes filled: Label Studio polygons have none; its brush RLE is a format of its own, so brushes are not used).
A labelling config (``<out stem>.label_config.xml``) that matches the regions is written beside the tasks.

Import: Label Studio's JSON export (tasks with ``annotations``); each annotation's choice of the ``label``
control becomes a human label (annotator = ``completed_by``) of the task's sample, found by ``data.sample_id``,
else by the image's path; its ``mask`` polygons, when it has any, become the sample's human semantic mask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from curato.errors import InputError
from curato.workspace import Workspace

LABEL_CONTROL = "label"
FINDINGS_CONTROL = "findings"
MASK_CONTROL = "mask"
POLYGON_TOLERANCE = 1.0
"""Largest distance (pixels) a simplified mask outline may stray from the traced one."""
IMAGE_OBJECT = "image"
LOCAL_FILES_PREFIX = "/data/local-files/?d="
SKIP_NO_FILE = "sample without an image file (text or IDX)"
SKIP_UNKNOWN_TASK = "task names no sample of this workspace"
SKIP_NO_CHOICE = "annotation without a choice in the 'label' control (or cancelled)"


def local_files_url(file: str, files_root: Path) -> str:
    """The URL Label Studio serves ``file`` at when its local-files document root is ``files_root``."""
    return LOCAL_FILES_PREFIX + quote(Path(file).relative_to(files_root).as_posix(), safe="/")


def label_config(classes: Sequence[str], findings: Sequence[str], mask_classes: Sequence[str] = ()) -> str:
    """A Label Studio labelling config: the image, one single choice of class, multiple choices of finding, and
    polygon labels for the mask classes (when there are masks)."""
    def choices(name: str, values: Sequence[str], kind: str) -> str:
        body = "".join(f'\n    <Choice value="{_xml(value)}"/>' for value in values)
        return (f'  <Choices name="{name}" toName="{IMAGE_OBJECT}" choice="{kind}" showInline="true">{body}\n'
                '  </Choices>')

    parts = [f'<View>\n  <Image name="{IMAGE_OBJECT}" value="${IMAGE_OBJECT}"/>',
             '  <Header value="Class"/>', choices(LABEL_CONTROL, classes, "single")]
    if findings:
        parts += ['  <Header value="curato findings (pre-annotated)"/>',
                  choices(FINDINGS_CONTROL, findings, "multiple")]
    if mask_classes:
        body = "".join(f'\n    <Label value="{_xml(value)}"/>' for value in mask_classes)
        parts.append(f'  <PolygonLabels name="{MASK_CONTROL}" toName="{IMAGE_OBJECT}" strokeWidth="2" '
                     f'opacity="0.4">{body}\n  </PolygonLabels>')
    return "\n".join(parts) + "\n</View>\n"


def mask_polygons(binary: np.ndarray, *, tolerance: float = POLYGON_TOLERANCE) -> list[np.ndarray]:
    """The outlines of a binary mask's pieces as (n, 2) arrays of x, y in pixel-index coordinates (a pixel's
    centre is an integer), traced at the 0.5 level and simplified to ``tolerance``. Label Studio polygons have
    no holes, so holes are filled; pieces too thin to outline (fewer than 3 points) are left out."""
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    filled = ndimage.binary_fill_holes(np.asarray(binary, dtype=bool))
    padded = np.pad(filled, 1).astype(np.float32)
    outlines = []
    for contour in find_contours(padded, 0.5):
        simplified = approximate_polygon(contour - 1.0, tolerance=tolerance)
        if len(simplified) >= 4:  # closed: the first point repeats
            outlines.append(simplified[:-1, ::-1])
    return outlines


def polygon_region(points: np.ndarray, label: str, shape: tuple[int, int], number: str) -> dict[str, Any]:
    """A Label Studio ``polygonlabels`` region: points in percent of the image (a pixel spans [i, i + 1))."""
    height, width = shape
    percent = [[round((x + 0.5) * 100.0 / width, 4), round((y + 0.5) * 100.0 / height, 4)] for x, y in points]
    return {"id": number, "from_name": MASK_CONTROL, "to_name": IMAGE_OBJECT, "type": "polygonlabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"points": percent, "closed": True, "polygonlabels": [label]}}


def region_pixels(points: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """The binary mask of a Label Studio polygon (points in percent of the image) at ``shape`` (h, w)."""
    from curato.masks import polygon_mask

    height, width = shape
    flat = [value for x, y in points for value in (x * width / 100.0 - 0.5, y * height / 100.0 - 0.5)]
    return polygon_mask([flat], shape)


def _xml(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def _flagged(audit: dict[str, Any] | None) -> tuple[dict[str, list[tuple[str, float]]], dict[str, tuple[str, float]]]:
    """(sample_id -> [(finding, score)], sample_id -> (suggested label, score)) from an audit document."""
    flagged: dict[str, list[tuple[str, float]]] = {}
    suggested: dict[str, tuple[str, float]] = {}
    for finding in (audit or {}).get("checks", []):
        for issue in finding.get("issues", []):
            score = float(issue.get("score") or 0.0)
            flagged.setdefault(issue["sample_id"], []).append((finding["check"], score))
            if finding["check"] == "label_issues" and issue.get("suggested_label") is not None:
                suggested[issue["sample_id"]] = (str(issue["suggested_label"]), score)
    return flagged, suggested


def export_label_studio(workspace: Workspace, rows: list[dict[str, Any]], out: Path, audit: dict[str, Any] | None,
                        *, files_root: str | Path | None = None, version: str = "curato") -> tuple[int, list[str]]:
    """Write the Label Studio tasks of ``rows`` (image samples) to ``out`` and the matching labelling config
    beside it; ``version`` names the predictions' source (the audit run). Returns (tasks written, notes for the
    user: the files root to serve, what was left out)."""
    from curato.commands.export import write_atomic

    images = [row for row in rows if row.get("path") and not str(row["path"]).startswith("idx:")]
    if not images:
        raise InputError(f"{out}: no sample has an image file Label Studio could show; export --format csv")
    if files_root is None:
        root = Path(os.path.commonpath([str(Path(row["path"]).parent) for row in images]))
    else:
        root = Path(files_root).resolve()
    outside = [row["path"] for row in images if not Path(row["path"]).is_relative_to(root)]
    if outside:
        raise InputError(f"--files-root {root}: does not hold {outside[0]} ({len(outside)} file(s)); name a folder "
                         f"above every exported image")
    flagged, suggested = _flagged(audit)
    proposals = {entry["sample_id"]: entry.get("predicted_label")
                 for entry in (workspace.read_latest("select") or {}).get("batch", [])}
    classes = sorted({str(row["label"]) for row in images if row.get("label") is not None}
                     | {label for label, _ in suggested.values()}
                     | {str(label) for label in proposals.values() if label is not None})
    findings = list(dict.fromkeys(name for entries in flagged.values() for name, _ in entries))
    catalog = workspace.catalog
    with_masks = set(catalog.mask_sample_ids())
    mask_classes = catalog.mask_classes()
    tasks = []
    for row in images:
        sample_id = row["id"]
        data = {IMAGE_OBJECT: local_files_url(row["path"], root), "sample_id": sample_id, "path": row["path"],
                "label": row.get("label"), "split": row.get("split"),
                "findings": ", ".join(name for name, _ in flagged.get(sample_id, []))}
        result: list[dict[str, Any]] = []
        score = None
        choice = suggested.get(sample_id, (None, 0.0))[0] or proposals.get(sample_id) or row.get("label")
        if choice is not None:
            result.append({"id": f"{len(tasks) + 1}-label", "from_name": LABEL_CONTROL, "to_name": IMAGE_OBJECT,
                           "type": "choices", "value": {"choices": [str(choice)]}})
        current = catalog.semantic_mask(sample_id, mask_classes) if sample_id in with_masks else None
        if current is not None:
            from curato.masks import split_label_map

            label_map, mask_classes = current
            for value, binary in zip(*split_label_map(label_map), strict=True):
                for outline in mask_polygons(binary):
                    result.append(polygon_region(outline, mask_classes[int(value) - 1], label_map.shape,
                                                 f"{len(tasks) + 1}-mask-{len(result)}"))
        if flagged.get(sample_id):
            names = [name for name, _ in flagged[sample_id]]
            score = max(value for _, value in flagged[sample_id])
            result.append({"id": f"{len(tasks) + 1}-findings", "from_name": FINDINGS_CONTROL,
                           "to_name": IMAGE_OBJECT, "type": "choices", "value": {"choices": names}})
        task: dict[str, Any] = {"data": data}
        if result:
            task["predictions"] = [{"model_version": version, "result": result,
                                    **({} if score is None else {"score": round(min(max(score, 0.0), 1.0), 6)})}]
        tasks.append(task)
    config_path = out.with_name(out.stem + ".label_config.xml")

    def write_tasks(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(tasks, handle, ensure_ascii=False)

    def write_config(tmp: str) -> None:
        Path(tmp).write_text(label_config(classes, findings, mask_classes), encoding="utf-8")

    write_atomic(out, write_tasks)
    write_atomic(config_path, write_config)
    notes = [f"labelling config: {config_path}",
             f"serve the images: LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
             f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}"]
    if len(images) < len(rows):
        notes.append(f"{len(rows) - len(images)} {SKIP_NO_FILE} left out")
    return len(tasks), notes


def ingest_label_studio(workspace: Workspace, path: str | Path) -> Any:
    """Record the annotations of a Label Studio JSON export (:func:`curato.ingest.readers.read_label_studio`) as
    human labels (annotator = ``completed_by``); returns an ``IngestSummary``. A task's sample is its
    ``data.sample_id``, else the sample whose file is the task's image (a local-files ``d`` path matched against
    the end of the sample's path). An answer equal to that annotator's latest label of the sample is not
    written again, so importing the same file twice adds nothing."""
    from sqlalchemy import select

    from curato.catalog.schema import labels
    from curato.commands.ingest import IngestSummary
    from curato.ingest.readers import read_label_studio

    path = Path(path)
    answers, tasks = read_label_studio(path)
    catalog = workspace.catalog
    table = catalog.samples(("sample_id", "uri"))
    known = set(table["sample_id"].tolist())
    by_name: dict[str, list[tuple[str, str]]] = {}
    for sid, uri in zip(table["sample_id"].tolist(), table["uri"].tolist(), strict=True):
        if uri is not None:
            by_name.setdefault(Path(str(uri)).name, []).append((str(uri), sid))
    summary = IngestSummary(source=str(path), format="label-studio", rows=tasks)
    skipped: dict[str, list[str]] = {}
    matched: set[str] = set()
    per_annotator: dict[str, dict[str, str]] = {}
    drawn: dict[tuple[str, str], list[tuple[str, list[list[float]], int, int]]] = {}
    for answer in answers:
        sample_id = answer.sample_id if answer.sample_id in known else _match_file(answer.file, by_name)
        if sample_id is None:
            skipped.setdefault(SKIP_UNKNOWN_TASK, []).append(answer.where)
            continue
        matched.add(sample_id)
        if answer.polygons:
            drawn[sample_id, answer.annotator] = answer.polygons
        if answer.label is None:
            if not answer.polygons:
                skipped.setdefault(SKIP_NO_CHOICE, []).append(answer.where)
            continue
        per_annotator.setdefault(answer.annotator, {})[sample_id] = answer.label
    with catalog.recorded_run("ingest", str(path.resolve()), {"format": "label-studio"}) as run:
        with catalog.transaction() as conn:
            latest: dict[tuple[str, str], str] = {}
            query = select(labels.c.sample_id, labels.c.annotator, labels.c.label).where(
                labels.c.origin == "human", labels.c.retracted_at.is_(None)).order_by(labels.c.id)
            for sample_id, annotator, label in conn.execute(query):
                latest[sample_id, annotator or ""] = label
            for annotator, answered in per_annotator.items():
                new = {sid: label for sid, label in answered.items() if latest.get((sid, annotator)) != label}
                summary.labels_added += catalog.add_labels(conn, new, origin="human", annotator=annotator)
            summary.masks, summary.mask_classes = _save_polygon_masks(catalog, conn, drawn)
            summary.annotations = sum(len(polygons) for polygons in drawn.values())
        summary.samples = len(matched)
        summary.unchanged = len(matched)
        summary.skipped = {reason: len(items) for reason, items in skipped.items()}
        summary.skipped_examples = {reason: items[:3] for reason, items in skipped.items()}
        summary.label_counts = {}
        for answered in per_annotator.values():
            for label in answered.values():
                summary.label_counts[label] = summary.label_counts.get(label, 0) + 1
        run.summary = {"tasks": tasks, "samples": summary.samples, "labels_added": summary.labels_added,
                       "skipped": summary.skipped}
    return summary


def _save_polygon_masks(catalog: Any, conn: Any,
                        drawn: dict[tuple[str, str], list[tuple[str, list[list[float]], int, int]]]
                        ) -> tuple[int, list[str]]:
    """Save each annotator's polygons of a sample as its human semantic mask (later polygons over earlier ones;
    classes after the workspace's mask classes); a mask equal to the sample's current one is not saved again.
    Returns (masks saved, the class names)."""
    from curato.masks import merge_masks

    classes = catalog.mask_classes()
    saved = 0
    for (sample_id, annotator), polygons in drawn.items():
        shape = (polygons[0][3], polygons[0][2])
        for label, _, _, _ in polygons:
            if label not in classes:
                classes.append(label)
        label_map = merge_masks([region_pixels(points, shape) for _, points, _, _ in polygons],
                                [classes.index(label) + 1 for label, _, _, _ in polygons], shape)
        current = catalog.semantic_mask(sample_id, classes)
        if current is not None and current[0].shape == label_map.shape and (current[0] == label_map).all():
            continue
        catalog.save_semantic_mask(conn, sample_id, label_map, classes, "human", annotator)
        saved += 1
    return saved, classes


def _match_file(file: str | None, by_name: dict[str, list[tuple[str, str]]]) -> str | None:
    """The one sample whose stored path is ``file`` or ends with ``/file`` (a path relative to the files root);
    ``by_name``: file name -> [(stored path, sample id)]."""
    if not file:
        return None
    tail = "/" + file.lstrip("/")
    found = [sid for uri, sid in by_name.get(Path(file).name, []) if uri == file or uri.endswith(tail)]
    return found[0] if len(found) == 1 else None
