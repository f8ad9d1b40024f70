"""The built-in checks, registered under their names: thin adapters from ``AuditData`` to the pure functions.

Each adapter picks the rows a check applies to (labelled, embedded, with properties), calls the check's
pure function with its parameters, and returns its findings. The order here is the order an audit runs
and reports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curato.checks.balance import BalanceParams, class_imbalance_finding, split_health_finding
from curato.checks.data import AuditData
from curato.checks.diversity import DiversityParams
from curato.checks.duplicates import DuplicateParams
from curato.checks.findings import Finding
from curato.checks.image_quality import ImageQualityParams, image_quality_findings
from curato.checks.integrity import unreadable_files
from curato.checks.label_issues import LabelIssueParams
from curato.checks.masks import MASK_FINDINGS, MaskParams
from curato.checks.outliers import OutlierParams
from curato.checks.registry import register_check
from curato.checks.shortcuts import ShortcutParams
from curato.errors import UnknownEmbedderError

CUES_SHOWN = 15


def _at(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """``values[rows]``, or None for data the audit does not have."""
    return None if values is None else values[rows]


def _unreadable(data: AuditData, params: None) -> list[Finding]:
    return [unreadable_files(data.sample_ids, data.readable, data.errors.tolist())]


def _image_quality(data: AuditData, params: Any) -> list[Finding]:
    if data.properties is None:
        return []
    rows = np.flatnonzero(np.isfinite(data.properties).any(axis=1))
    return image_quality_findings(data.sample_ids[rows], data.properties[rows], data.property_columns, params=params)


def _balance(data: AuditData, params: Any) -> list[Finding]:
    return [class_imbalance_finding(data.sample_ids, data.labels, params=params),
            split_health_finding(data.sample_ids, data.labels, data.splits.tolist(), params=params)]


def _label_issues(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.label_issues import label_issue_finding, label_issues_not_checked
    from curato.models.oof import varying_dimensions

    rows = data.labeled_rows()
    labels, names = data.class_codes(rows)
    if data.pred_probs is None:
        reason = ("no labelled samples with embeddings" if rows.size == 0 else "fewer than two classes"
                  if len(names) < 2 else f"only {rows.size} labelled samples with embeddings (10 or more needed)")
        return [label_issues_not_checked(data.sample_ids[rows], reason)]
    if data.embeddings is not None and not varying_dimensions(data.embeddings_at(rows)).any():
        # The out-of-fold head then only knows the class shares: every sample of the smaller classes would look
        # mislabelled. Say so instead of flagging them.
        return [label_issues_not_checked(
            data.sample_ids[rows], f"all {len(rows)} labelled samples have the same embedding (the same picture?), "
            "so nothing tells their classes apart")]
    return [label_issue_finding(data.sample_ids[rows], labels, data.pred_probs[rows], data.class_names, params=params)]


def _duplicates(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.duplicates import duplicate_findings, second_look_side

    rows = data.require_embeddings("duplicates")
    second_look = None
    side = None
    if data.sizes is not None and data.thumbnails is not None and data.load_image is not None:
        side = second_look_side(data.sizes[rows], params)
    if side is not None:
        from curato.features.properties import grey_squares

        def second_look(local: np.ndarray) -> np.ndarray:
            return grey_squares([data.load_image(row) for row in rows[local]], side)

    return duplicate_findings(
        data.sample_ids[rows], embeddings=data.embeddings_at(rows), content_hashes=_at(data.content_hashes, rows),
        phashes=_at(data.phashes, rows), phash_known=_at(data.has_phash, rows), texts=_at(data.texts, rows),
        splits=data.splits[rows],
        thumbnails=_at(data.thumbnails, rows), labels=data.labels[rows],
        k=data.neighbours, neighbours=data.neighbour_graph(rows), second_look=second_look, params=params)


def _outliers(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.outliers import outlier_findings

    rows = data.require_embeddings("outliers")
    return outlier_findings(data.sample_ids[rows], data.embeddings_at(rows), data.labels[rows],
                            neighbours=data.neighbour_graph(rows, params.k), params=params)


def _diversity(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.diversity import diversity_findings

    rows = data.require_embeddings("diversity")
    return diversity_findings(
        data.sample_ids[rows], data.embeddings_at(rows), data.labels[rows], splits=data.splits[rows],
        properties=_at(data.properties, rows),
        property_columns=data.property_columns, neighbours=data.neighbour_graph(rows), params=params)


def _shortcuts(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.shortcuts import shortcut_finding
    from curato.features.thumbnails import colour_thumbnails

    if data.properties is None:
        return []
    labeled = np.array([label is not None for label in data.labels], dtype=bool)
    rows = np.flatnonzero(labeled & np.isfinite(data.properties).any(axis=1))
    labels, names = data.class_codes(rows)
    cues, columns, categories = _cue_table(data, rows, params)
    reference = None
    if data.pred_probs is not None and data.class_names == names:
        reference = data.pred_probs[rows]
    pixels = None
    if data.thumbnails is not None:
        stored = data.thumbnails[rows]
        pixels = {f"{side}x{side}": colour_thumbnails(stored, side).reshape(len(rows), side * side * 3)
                  for side in (4, 8)}
    background = _background_views(data, rows, params)
    return [shortcut_finding(data.sample_ids[rows], labels, cues, columns, class_names=names,
                             reference_probs=reference, thumbnails=pixels, background=background,
                             categories=categories, params=params)]


def _cue_table(data: AuditData, rows: np.ndarray, params: ShortcutParams
               ) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
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
    formats = None if data.formats is None else data.formats[rows].tolist()
    return cue_table(data.properties[rows], data.property_columns, formats=formats,
                     thumbnails=_at(data.thumbnails, rows), object_size=object_size, params=params,
                     property_categories=data.property_categories)


def _background_views(data: AuditData, rows: np.ndarray, params: ShortcutParams
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Embeddings of up to ``params.background_samples`` images with their object(s) blanked out, for the
    background-only test.

    The object is the union of its annotated boxes, or else the foreground proxy's box.
    """
    from curato.checks.shortcuts import blank_box, foreground_boxes
    from curato.features.embedders import get_embedder
    from curato.features.thumbnails import grey_thumbnails
    if (data.embedder is None or data.embedder.startswith("precomputed:") or data.has_embedding is None
            or data.load_image is None):
        return None
    candidates = rows[data.has_embedding[rows]]
    if candidates.size < 20:
        return None
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(candidates, size=min(params.background_samples, candidates.size), replace=False))
    boxes = np.full((chosen.size, 4), np.nan)
    for position, row in enumerate(chosen):
        entry = (data.object_boxes or {}).get(str(data.sample_ids[row]))
        width, height = data.sizes[row] if data.sizes is not None else (0, 0)
        if entry and entry["box"] and width and height:
            x0, y0, x1, y1 = entry["box"]
            boxes[position] = (y0 / height, x0 / width, y1 / height, x1 / width)
    missing = ~np.isfinite(boxes).all(axis=1)
    if missing.any():
        if data.thumbnails is None:
            return None
        boxes[missing] = foreground_boxes(grey_thumbnails(data.thumbnails[chosen[missing]]), params=params)[1]
    blanked = [blank_box(data.load_image(row), box) for row, box in zip(chosen, boxes, strict=True)]
    try:
        embedder = get_embedder(data.embedder)
    except UnknownEmbedderError:  # an embedder instance passed to embed(), not registered by name
        return None
    vectors = embedder.embed(blanked)
    position_in_rows = np.searchsorted(rows, chosen)
    return position_in_rows, vectors, data.embeddings[chosen]


def _masks(data: AuditData, params: Any) -> list[Finding]:
    from curato.checks.masks import mask_findings

    if not data.masks:
        return []  # no masks in this workspace: nothing to check
    rows = np.array([row for row, sid in enumerate(data.sample_ids.tolist()) if sid in data.masks], dtype=np.int64)
    if rows.size == 0:
        return []
    ids = data.sample_ids[rows]
    classes = getattr(data.masks, "classes", None)
    if classes is None:  # a plain mapping: its names of the first mask
        classes = data.masks[ids[0]][1]
    maps = (data.masks[sid][0] for sid in ids.tolist())  # decoded one at a time, never all at once
    return mask_findings(ids, maps, classes, image_labels=data.labels[rows],
                         predicted=data.mask_predictions, params=params)


PAIRS_SHOWN = 40


def _duplicate_tables(finding: Finding) -> list[dict[str, Any]]:
    """Which rule accepted each listed near-duplicate pair, and at what distances."""
    groups = finding.evidence.get("pairs") if isinstance(finding.evidence, dict) else None
    if not groups:
        return []
    rows = []
    for number, pairs in enumerate(groups):
        for pair in pairs:
            distances = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                                  for key, value in pair.items() if key not in ("a", "b", "rule", "similarity"))
            rows.append([number, pair["a"], pair["b"], pair["rule"], f"{pair['similarity']:.4f}", distances])
    counts = finding.evidence.get("pairs_by_rule") or {}
    notes = ["pairs accepted per rule (all groups): " + ", ".join(f"{rule} {n}" for rule, n in counts.items())]
    if len(rows) > PAIRS_SHOWN:
        notes.append(f"the first {PAIRS_SHOWN} of {len(rows)} listed pairs are shown; the JSON has them all")
    return [{"title": "accepted pairs: the rule that accepted each, and its distances (docs/findings.md names the "
                      "rules)", "columns": ["group", "sample", "duplicate of", "rule", "similarity", "distances"],
             "rows": rows[:PAIRS_SHOWN], "notes": notes}]


def _shortcut_tables(finding: Finding) -> list[dict[str, Any]]:
    return [_cue_table_view(finding.evidence)] if finding.evidence.get("cues") else []


def _cue_table_view(evidence: dict[str, Any]) -> dict[str, Any]:
    """The shortcut cues as a table: strongest first, flagged ones marked."""
    rows = []
    for cue in evidence["cues"][:CUES_SHOWN]:
        share = cue.get("share_of_signal")
        classes = ", ".join(f"{c['class']} ({c['gain']:.2f})" for c in cue.get("classes", []))
        rows.append([cue["cue"].replace("group:", "group: "), cue["group"], f"{cue['balanced_accuracy']:.3f}",
                     "–" if share is None else f"{share:.2f}", f"{cue['p_value']:.3f}", classes,
                     "yes" if cue["flagged"] else ""])
    tests = evidence.get("tests", {})
    notes = []
    thumbnails = tests.get("thumbnails", {})
    if thumbnails.get("ran"):
        notes.append(f"thumbnail test: a 4x4 colour picture predicts the label with balanced accuracy "
                     f"{thumbnails.get('4x4', 0):.2f}, an 8x8 one with {thumbnails.get('8x8', 0):.2f} "
                     f"(chance {thumbnails['chance']:.2f})")
    background = tests.get("background_only", {})
    if background.get("ran"):
        notes.append(f"background-only test ({background['samples']} images, objects blanked out): balanced accuracy "
                     f"{background['background_only']:.2f} vs {background['full_image']:.2f} on the full images "
                     f"(chance {background['chance']:.2f})")
    return {"title": "cues, strongest first (balanced accuracy of a model that sees only this cue)",
            "columns": ["cue", "group", "balanced acc.", "share of signal", "p (permutation)",
                        "classes singled out", "flagged"], "rows": rows, "notes": notes}


register_check("unreadable", _unreadable, description="files that cannot be decoded", findings=("unreadable",),
               cost=0.1)
register_check("image_quality", _image_quality, params=ImageQualityParams, needs=("properties",),
               description="dark, bright, blurry, low-information, odd-sized, grayscale images; empty, damaged, "
                           "odd texts",
               findings=("dark", "overexposed", "blurry", "low_information", "grayscale", "odd_size",
                         "empty_text", "encoding_damage", "odd_length", "mostly_markup", "other_language"),
               cost=0.6)
register_check("imbalance", _balance, params=BalanceParams,
               description="class imbalance and classes missing from a split",
               findings=("class_imbalance", "split_health"), cost=0.9)
register_check("label_issues", _label_issues, params=LabelIssueParams,
               needs=("embeddings", "pred_probs", "labels"),
               description="samples whose label disagrees with out-of-fold predictions", cost=4)
register_check("duplicates", _duplicates, params=DuplicateParams, needs=("embeddings",),
               description="exact and near duplicates, train/test leaks, copies with conflicting labels",
               findings=("exact_duplicates", "near_duplicates", "split_leakage", "conflicting_duplicates"),
               render=_duplicate_tables, cost=45)
register_check("outliers", _outliers, params=OutlierParams, needs=("embeddings",),
               description="samples far from everything else, or from the rest of their class",
               findings=("outliers", "class_outliers"), cost=13)
register_check("shortcuts", _shortcuts, params=ShortcutParams,
               needs=("embeddings", "pred_probs", "properties", "labels"),
               description="cues other than the object that predict the label", render=_shortcut_tables, cost=20)
register_check("masks", _masks, params=MaskParams, needs=("masks",),
               description="empty, speckled or holed masks; classes the image label names but the mask lacks",
               findings=MASK_FINDINGS, cost=0.1)
register_check("diversity", _diversity, params=DiversityParams, needs=("embeddings",),
               description="classes seen in few contexts; test samples train does not cover",
               findings=("diversity", "coverage"), cost=2.5)
