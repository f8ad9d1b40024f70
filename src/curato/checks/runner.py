"""Feed the checks from a workspace. Each check is a pure function over arrays; this is the thin shell.

``curato audit`` = ``run_audit``: load arrays, compute what is missing (embeddings, out-of-fold
probabilities — both cached in the feature store), run the chosen checks, return Findings.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curato import __version__
from curato.checks.balance import class_imbalance_finding, split_health_finding
from curato.checks.findings import Finding
from curato.checks.image_quality import image_quality_findings
from curato.checks.integrity import unreadable_files
from curato.errors import InputError
from curato.features.store import FeatureSet
from curato.ingest.pipeline import PROPERTIES, THUMBNAILS
from curato.progress import SILENT, Progress
from curato.workspace import Workspace

OOF_PREFIX = "oof-probs"
NEIGHBOURS = 10  # k of the shared k-NN graph (duplicates, outliers, diversity)


@dataclass
class AuditData:
    """Everything a check may read, aligned by row with ``sample_ids`` (all samples, sorted by id)."""

    sample_ids: np.ndarray
    uris: np.ndarray
    labels: np.ndarray  # object array; None where unlabeled
    splits: np.ndarray
    sources: np.ndarray
    readable: np.ndarray
    errors: np.ndarray
    content_hashes: np.ndarray
    phashes: np.ndarray  # uint64; 0 where unknown
    kinds: np.ndarray
    properties: np.ndarray | None = None  # (n, p), NaN rows where missing
    property_columns: list[str] = field(default_factory=list)
    thumbnails: np.ndarray | None = None  # (n, THUMBNAIL_COLUMNS) uint8, zero rows where missing
    formats: np.ndarray | None = None  # stored file format per sample ("" where unknown)
    sizes: np.ndarray | None = None  # (n, 2) width, height (0 where unknown)
    object_boxes: dict[str, dict[str, Any]] | None = None  # annotated objects (catalog.object_boxes)
    embeddings: np.ndarray | None = None  # (n, d) float32, zero rows where missing
    has_embedding: np.ndarray | None = None
    embedder: str | None = None
    pred_probs: np.ndarray | None = None  # (n, k) for labeled rows with embeddings, NaN elsewhere
    class_names: list[str] = field(default_factory=list)
    _neighbours: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_workspace(cls, workspace: Workspace, features: FeatureSet | None = None) -> AuditData:
        """Load the catalog columns, the image properties and (optionally) one embedding set."""
        table = workspace.catalog.samples(
            ("sample_id", "uri", "split", "source", "readable", "error", "content_hash", "phash", "kind", "format",
             "width", "height"))
        current = workspace.catalog.current_labels()
        ids = table["sample_id"]
        data = cls(
            sample_ids=ids, uris=table["uri"],
            labels=np.array([current.get(sid) for sid in ids.tolist()], dtype=object),
            splits=table["split"], sources=table["source"],
            readable=np.array([bool(v) for v in table["readable"]], dtype=bool), errors=table["error"],
            content_hashes=table["content_hash"],
            phashes=np.array([int(h, 16) if h else 0 for h in table["phash"].tolist()], dtype=np.uint64),
            kinds=table["kind"],
            formats=np.array([f or "" for f in table["format"].tolist()], dtype=object),
            sizes=np.array([(w or 0, h or 0) for w, h in zip(table["width"].tolist(), table["height"].tolist(),
                                                              strict=True)], dtype=np.int64).reshape(-1, 2),
            object_boxes=workspace.catalog.object_boxes(),
        )
        if workspace.features.has(PROPERTIES):
            stored = workspace.features.load(PROPERTIES)
            vectors, found = stored.align(ids.tolist())
            properties = np.asarray(vectors, dtype=np.float64)
            properties[~found] = np.nan
            data.properties, data.property_columns = properties, list(stored.meta["columns"])
        if workspace.features.has(THUMBNAILS):
            data.thumbnails, _ = workspace.features.load(THUMBNAILS).align(ids.tolist())
        if features is not None:
            vectors, found = features.align(ids.tolist())
            data.embeddings, data.has_embedding, data.embedder = np.asarray(vectors, np.float32), found, features.name
        return data

    def labeled_rows(self) -> np.ndarray:
        """Indices of rows with a label and an embedding (what label-aware checks use)."""
        mask = np.array([label is not None for label in self.labels], dtype=bool)
        if self.has_embedding is not None:
            mask &= self.has_embedding
        return np.flatnonzero(mask)


def _need_embeddings(data: AuditData, check: str) -> np.ndarray:
    if data.embeddings is None or data.has_embedding is None or not data.has_embedding.any():
        raise InputError(f"--checks {check}: needs embeddings; run `curato embed` first")
    return np.flatnonzero(data.has_embedding)


def _neighbour_graph(data: AuditData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k-NN graph over the embedded rows, built once and shared by the duplicate, outlier and diversity checks."""
    from curato.neighbors import knn, unit_rows

    if data._neighbours is None:
        data._neighbours = knn(unit_rows(data.embeddings[rows]), NEIGHBOURS)
    return data._neighbours


def _unreadable(data: AuditData) -> list[Finding]:
    return [unreadable_files(data.sample_ids, data.readable, data.errors.tolist())]


def _image_quality(data: AuditData) -> list[Finding]:
    if data.properties is None:
        return []
    rows = np.flatnonzero(np.isfinite(data.properties).any(axis=1))
    return image_quality_findings(data.sample_ids[rows], data.properties[rows], data.property_columns)


def _balance(data: AuditData) -> list[Finding]:
    return [class_imbalance_finding(data.sample_ids, data.labels),
            split_health_finding(data.sample_ids, data.labels, data.splits.tolist())]


def _label_issues(data: AuditData) -> list[Finding]:
    from curato.checks.label_issues import label_issue_finding

    if data.pred_probs is None:
        return []
    rows = data.labeled_rows()
    labels, _ = _class_codes(data, rows)
    return [label_issue_finding(data.sample_ids[rows], labels, data.pred_probs[rows], data.class_names)]


def _duplicates(data: AuditData) -> list[Finding]:
    from curato.checks.duplicates import duplicate_findings, second_look_side

    rows = _need_embeddings(data, "duplicates")
    second_look = None
    side = None if data.sizes is None or data.thumbnails is None else second_look_side(data.sizes[rows])
    if side is not None:
        from curato.features.properties import grey_squares
        from curato.imageio import load_rgb

        uris = data.uris[rows]

        def second_look(local: np.ndarray) -> np.ndarray:
            return grey_squares([load_rgb(str(uri)) for uri in uris[local]], side)

    return duplicate_findings(
        data.sample_ids[rows], embeddings=data.embeddings[rows], content_hashes=data.content_hashes[rows],
        phashes=data.phashes[rows], splits=data.splits[rows],
        thumbnails=None if data.thumbnails is None else data.thumbnails[rows], labels=data.labels[rows], k=NEIGHBOURS,
        neighbours=_neighbour_graph(data, rows), second_look=second_look)


def _outliers(data: AuditData) -> list[Finding]:
    from curato.checks.outliers import outlier_findings

    rows = _need_embeddings(data, "outliers")
    return outlier_findings(data.sample_ids[rows], data.embeddings[rows], data.labels[rows], k=NEIGHBOURS,
                            neighbours=_neighbour_graph(data, rows))


def _diversity(data: AuditData) -> list[Finding]:
    from curato.checks.diversity import diversity_findings

    rows = _need_embeddings(data, "diversity")
    return diversity_findings(
        data.sample_ids[rows], data.embeddings[rows], data.labels[rows], splits=data.splits[rows],
        properties=None if data.properties is None else data.properties[rows],
        property_columns=data.property_columns, neighbours=_neighbour_graph(data, rows))


def _class_codes(data: AuditData, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of the labels of ``rows`` (classes in sorted order) and the class names."""
    names = sorted({str(label) for label in data.labels[rows]})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(label)] for label in data.labels[rows]], dtype=np.int64), names


def _shortcuts(data: AuditData) -> list[Finding]:
    from curato.checks.shortcuts import shortcut_finding
    from curato.features.thumbnails import colour_thumbnails

    if data.properties is None:
        return []
    labeled = np.array([label is not None for label in data.labels], dtype=bool)
    rows = np.flatnonzero(labeled & np.isfinite(data.properties).any(axis=1))
    labels, names = _class_codes(data, rows)
    cues, columns, categories = _cue_table(data, rows)
    reference = None
    if data.pred_probs is not None and data.class_names == names:
        reference = data.pred_probs[rows]
    pixels = None
    if data.thumbnails is not None:
        stored = data.thumbnails[rows]
        pixels = {f"{side}x{side}": colour_thumbnails(stored, side).reshape(len(rows), -1) for side in (4, 8)}
    return [shortcut_finding(data.sample_ids[rows], labels, cues, columns, class_names=names,
                             reference_probs=reference, thumbnails=pixels, background=_background_views(data, rows),
                             categories=categories)]


def _cue_table(data: AuditData, rows: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    from curato.checks.shortcuts import cue_table

    object_size = None
    if data.object_boxes:
        object_size = np.full((len(rows), 2), np.nan)
        for position, row in enumerate(rows):
            entry = data.object_boxes.get(str(data.sample_ids[row]))
            width, height = data.sizes[row]
            if entry and entry["box"] and width and height:
                x0, y0, x1, y1 = entry["box"]
                object_size[position] = (min(1.0, entry["area"] / (width * height)),
                                         max((x1 - x0) / width, (y1 - y0) / height))
    return cue_table(data.properties[rows], data.property_columns, formats=data.formats[rows].tolist(),
                     thumbnails=None if data.thumbnails is None else data.thumbnails[rows], object_size=object_size)


BACKGROUND_SAMPLES = 1_000


def _background_views(data: AuditData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Embeddings of up to BACKGROUND_SAMPLES images with their object(s) blanked out, for the background-only test.

    The object is the union of its annotated boxes, or else the foreground proxy's box.
    """
    from curato.checks.shortcuts import blank_box, foreground_boxes
    from curato.features.embedders import get_embedder
    from curato.features.thumbnails import grey_thumbnails
    from curato.imageio import load_rgb

    if data.embedder is None or data.embedder.startswith("precomputed:") or data.has_embedding is None:
        return None
    candidates = rows[data.has_embedding[rows]]
    if candidates.size < 20:
        return None
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(candidates, size=min(BACKGROUND_SAMPLES, candidates.size), replace=False))
    boxes = np.full((chosen.size, 4), np.nan)
    for position, row in enumerate(chosen):
        entry = (data.object_boxes or {}).get(str(data.sample_ids[row]))
        width, height = data.sizes[row]
        if entry and entry["box"] and width and height:
            x0, y0, x1, y1 = entry["box"]
            boxes[position] = (y0 / height, x0 / width, y1 / height, x1 / width)
    missing = ~np.isfinite(boxes).all(axis=1)
    if missing.any():
        if data.thumbnails is None:
            return None
        boxes[missing] = foreground_boxes(grey_thumbnails(data.thumbnails[chosen[missing]]))[1]
    blanked = [blank_box(load_rgb(str(data.uris[row])), box) for row, box in zip(chosen, boxes, strict=True)]
    vectors = get_embedder(data.embedder).embed(blanked)
    position_in_rows = np.searchsorted(rows, chosen)
    return position_in_rows, vectors, data.embeddings[chosen]


CheckFunction = Callable[[AuditData], list[Finding]]

CHECKS: dict[str, CheckFunction] = {
    "unreadable": _unreadable,
    "image_quality": _image_quality,
    "imbalance": _balance,
    "label_issues": _label_issues,
    "duplicates": _duplicates,
    "outliers": _outliers,
    "shortcuts": _shortcuts,
    "diversity": _diversity,
}
NEEDS_EMBEDDINGS = {"label_issues", "duplicates", "outliers", "diversity", "shortcuts"}
NEEDS_PRED_PROBS = {"label_issues", "shortcuts"}


def run_checks(data: AuditData, names: Sequence[str] | None = None,
               timings: dict[str, float] | None = None) -> list[Finding]:
    """Run the named checks (default: all) on loaded data; findings most severe first.

    A check that fails raises: an audit is never silently partial. Seconds per check go to ``timings``.
    """
    chosen = list(names) if names else list(CHECKS)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        raise InputError(f"--checks: unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}")
    findings = []
    for name in chosen:
        started = time.perf_counter()
        findings += CHECKS[name](data)
        if timings is not None:
            timings[name] = time.perf_counter() - started
    return sorted(findings, key=lambda f: -f.rank)


def _labels_digest(ids: np.ndarray, labels: np.ndarray) -> str:
    payload = "\n".join(f"{sid}\t{label}" for sid, label in zip(ids.tolist(), labels.tolist(), strict=True))
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def attach_pred_probs(workspace: Workspace, data: AuditData, *, n_folds: int = 5, seed: int = 0,
                      progress: Progress = SILENT) -> None:
    """Out-of-fold probabilities for labeled rows, from the feature store or computed and cached there."""
    from curato.models.oof import oof_settings, out_of_fold_probabilities

    rows = data.labeled_rows()
    labels, class_names = _class_codes(data, rows)
    if len(class_names) < 2 or len(rows) < 2 * n_folds:
        return
    settings = {**oof_settings(n_folds=n_folds, seed=seed), "embedder": data.embedder,
                "labels": _labels_digest(data.sample_ids[rows], labels), "classes": class_names}
    name = f"{OOF_PREFIX}-{data.embedder}"
    meta = {"settings": settings, "columns": class_names, "modality": "any"}
    store = workspace.features
    probs: np.ndarray | None = None
    if store.has(name):
        cached = store.load(name)
        if cached.meta.get("settings") == settings:
            vectors, found = cached.align(data.sample_ids[rows].tolist())
            probs = np.asarray(vectors, dtype=np.float64) if found.all() else None
    if probs is None:
        progress.stage("out-of-fold probabilities", n_folds)
        probs = out_of_fold_probabilities(data.embeddings[rows], labels, n_folds=n_folds, seed=seed,
                                          progress=progress.advance)
        store.discard_parts(name)
        store.save(name, data.sample_ids[rows].tolist(), data.content_hashes[rows].tolist(), probs, meta)
    full = np.full((len(data.sample_ids), len(class_names)), np.nan)
    full[rows] = probs
    data.pred_probs, data.class_names = full, class_names


@dataclass
class AuditResult:
    """Findings of one audit and what they were computed from."""

    findings: list[Finding]
    embedder: str | None
    checks: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def run_audit(workspace: Workspace, checks: Sequence[str] | None = None, *, embedder: str | None = None,
              progress: Progress = SILENT, on_result: Callable[[AuditResult], Any] | None = None) -> AuditResult:
    """Run an audit over the workspace, computing embeddings and out-of-fold probabilities if missing.

    ``on_result(result)`` runs inside the recorded run, e.g. to write the reports: when it fails, the run is
    recorded as failed, not done.
    """
    from curato.features.embedding import choose_embedder_name, compute_embeddings

    chosen = list(checks) if checks else list(CHECKS)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        raise InputError(f"--checks: unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}")
    timings: dict[str, float] = {}
    with workspace.catalog.recorded_run("audit", ",".join(chosen), {"embedder": embedder}) as run:
        features = None
        started = time.perf_counter()
        if NEEDS_EMBEDDINGS & set(chosen):
            name = embedder or choose_embedder_name(workspace)
            features, _ = compute_embeddings(workspace, name, progress=progress)
        timings["embeddings"] = time.perf_counter() - started
        started = time.perf_counter()
        data = AuditData.from_workspace(workspace, features)
        timings["load"] = time.perf_counter() - started
        if NEEDS_PRED_PROBS & set(chosen) and features is not None:
            started = time.perf_counter()
            attach_pred_probs(workspace, data, progress=progress)
            timings["out_of_fold"] = time.perf_counter() - started
        findings = run_checks(data, chosen, timings)
        result = AuditResult(findings=findings, embedder=features.name if features is not None else None,
                             checks=chosen, timings=timings)
        if on_result is not None:
            on_result(result)
        run.summary = {f.check: f.count for f in findings}
    return result


def audit_json(workspace: Workspace, result: AuditResult) -> dict[str, Any]:
    """The documented ``audit --json`` document (schema: curato/schemas/audit.schema.json)."""
    return {"version": __version__, "workspace": str(workspace.root), "embedder": result.embedder,
            "seconds": {name: round(value, 3) for name, value in result.timings.items()},
            "checks": [finding.to_json() for finding in result.findings]}
