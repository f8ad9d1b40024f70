"""Mask quality: empty or near-empty masks, speckle, holes, classes the image label names but the mask lacks,
and masks that disagree with a pre-label model over a large area.

Pure functions over label maps (2-D integer arrays, 0 = background, value i + 1 = ``class_names[i]``; see
:mod:`curato.masks`). Each issue type is one :class:`~curato.checks.findings.Finding`; every threshold is a field of
:class:`MaskParams`. Why these: a mask that is (almost) all background was usually saved by mistake; many tiny
connected pieces (speckle) and background enclosed inside a class (holes) are what threshold-, brush- and
model-made masks leave behind and what people rarely mean; a class the image is labelled with but that the mask
never paints is a missed object; and a mask that a model trained on the other masks contradicts over much of the
image is worth a second look (the model's label maps come from the pre-label model, passed as ``predicted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curato.arrays import check_field
from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError

MASK_FINDINGS = ("empty_masks", "mask_speckle", "mask_holes", "mask_missing_classes", "mask_disagreement")


@dataclass(frozen=True)
class MaskParams:
    """Thresholds of the ``masks`` check (defaults: chosen on real masks, see docs/workspace.md "Masks")."""

    min_area_fraction: float = 0.001  # share of the image painted with any class below which a mask is near-empty
    speck_pixels: int = 16  # a connected piece of one class smaller than this many pixels is a speck...
    speck_fraction: float = 0.0001  # ...or smaller than this share of the image, whichever is larger
    speckle_count: int = 10  # specks (over all classes) from which a mask is speckled
    hole_fraction: float = 0.01  # background enclosed by a class, as a share of that class's filled area...
    hole_pixels: int = 16  # ...and at least this many pixels, from which a mask has holes
    disagreement_fraction: float = 0.25  # share of the image where the mask and the pre-label model differ
    severity_medium: float = 0.02  # share of masks flagged from which a finding is medium (any flag is low)
    severity_high: float = 0.1  # share flagged from which a finding is high

    def __post_init__(self) -> None:
        for name in ("min_area_fraction", "speck_fraction", "hole_fraction", "disagreement_fraction",
                     "severity_medium", "severity_high"):
            check_field("masks", self, name, low=0.0, high=1.0)
        for name in ("speck_pixels", "hole_pixels"):
            check_field("masks", self, name, integer=True, low=0)
        check_field("masks", self, "speckle_count", integer=True, low=1)
        if self.severity_high < self.severity_medium:
            raise InputError(f"masks.severity_high: must be >= severity_medium ({self.severity_medium}), "
                             f"got {self.severity_high!r}")


@dataclass
class MaskMeasures:
    """What :func:`measure_mask` finds in one label map."""

    foreground: float  # share of the image painted with any class
    specks: int  # connected pieces below the speck size, over all classes
    speck_classes: dict[str, int]
    hole_pixels: int  # background pixels enclosed by a class
    hole_fraction: float  # the largest per-class share of enclosed background in the class's filled area
    hole_classes: dict[str, int]
    present: list[str]  # classes painted


def measure_mask(label_map: np.ndarray, class_names: Sequence[str], *, params: MaskParams = MaskParams()
                 ) -> MaskMeasures:
    """Foreground share, specks and holes of one label map (per class; see :class:`MaskParams`)."""
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import label as connected

    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise InputError(f"a label map must be 2-D, found shape {labels.shape}")
    pixels = max(labels.size, 1)
    speck_limit = max(params.speck_pixels, params.speck_fraction * pixels)
    background = labels == 0
    values = np.unique(labels)
    values = values[values != 0]
    specks: dict[str, int] = {}
    holes: dict[str, int] = {}
    worst_hole = 0.0
    for value in values.tolist():
        name = class_names[value - 1] if 0 < value <= len(class_names) else f"value_{value}"
        binary = labels == value
        components, count = connected(binary, connectivity=2, return_num=True)
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        tiny = int(np.count_nonzero(sizes < speck_limit))
        if tiny and count > 1:  # a lone small object is an object, not speckle
            specks[name] = tiny if tiny < count else tiny - 1
        enclosed = binary_fill_holes(binary) & background
        hole = int(np.count_nonzero(enclosed))
        if hole:
            holes[name] = hole
            worst_hole = max(worst_hole, hole / (hole + int(np.count_nonzero(binary))))
    present = [class_names[v - 1] if 0 < v <= len(class_names) else f"value_{v}" for v in values.tolist()]
    return MaskMeasures(foreground=float(1.0 - np.count_nonzero(background) / pixels),
                        specks=int(sum(specks.values())), speck_classes=specks, hole_pixels=int(sum(holes.values())),
                        hole_fraction=float(worst_hole), hole_classes=holes, present=present)


def mask_findings(sample_ids: Sequence[str] | np.ndarray, label_maps: Iterable[np.ndarray | None],
                  class_names: Sequence[str], *, image_labels: Sequence[str | None] | np.ndarray | None = None,
                  predicted: Mapping[str, np.ndarray] | None = None,
                  params: MaskParams = MaskParams()) -> list[Finding]:
    """Findings ``empty_masks``, ``mask_speckle``, ``mask_holes``, ``mask_missing_classes`` and, when
    ``predicted`` (sample id -> the pre-label model's label map, same class values) is given,
    ``mask_disagreement``, over the samples' label maps (None: no mask; such a sample is never flagged).

    ``image_labels``: each sample's image-level label; one that names a mask class the mask does not paint is
    flagged. ``label_maps`` is read once, in order, so it may be a lazy sequence."""
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    names = list(class_names)
    if image_labels is not None and len(image_labels) != n:
        raise InputError(f"image_labels has {len(image_labels)} entries but there are {n} samples")
    flags = {name: np.zeros(n, dtype=bool) for name in MASK_FINDINGS}
    scores = {name: np.zeros(n) for name in MASK_FINDINGS}
    details: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in MASK_FINDINGS}
    has_mask = np.zeros(n, dtype=bool)
    compared = 0
    count = 0
    for row, label_map in enumerate(label_maps):
        count += 1
        if row >= n:
            break
        if label_map is None:
            continue
        has_mask[row] = True
        sid = str(ids[row])
        measures = measure_mask(label_map, names, params=params)
        if measures.foreground < params.min_area_fraction:
            flags["empty_masks"][row] = True
            scores["empty_masks"][row] = 1.0 - measures.foreground / max(params.min_area_fraction, 1e-12)
            details["empty_masks"][sid] = {"foreground_fraction": round(measures.foreground, 6)}
        if measures.specks >= params.speckle_count:
            flags["mask_speckle"][row] = True
            scores["mask_speckle"][row] = min(1.0, measures.specks / (4.0 * params.speckle_count))
            details["mask_speckle"][sid] = {"specks": measures.specks, "by_class": measures.speck_classes}
        if measures.hole_fraction >= params.hole_fraction and measures.hole_pixels >= params.hole_pixels:
            flags["mask_holes"][row] = True
            scores["mask_holes"][row] = min(1.0, measures.hole_fraction / (4.0 * max(params.hole_fraction, 1e-12)))
            details["mask_holes"][sid] = {"hole_pixels": measures.hole_pixels,
                                          "hole_fraction": round(measures.hole_fraction, 6),
                                          "by_class": measures.hole_classes}
        label = None if image_labels is None else image_labels[row]
        if label is not None and str(label) in names and str(label) not in measures.present:
            flags["mask_missing_classes"][row] = True
            scores["mask_missing_classes"][row] = 1.0
            details["mask_missing_classes"][sid] = {"label": str(label), "mask_classes": measures.present}
        if predicted is not None and sid in predicted:
            compared += 1
            share, worst = _disagreement(np.asarray(label_map), np.asarray(predicted[sid]), names, sid)
            if share >= params.disagreement_fraction:
                flags["mask_disagreement"][row] = True
                scores["mask_disagreement"][row] = min(1.0, share / (2.0 * max(params.disagreement_fraction, 1e-12)))
                details["mask_disagreement"][sid] = {"disagreement_fraction": round(share, 6), "largest": worst}
    if count != n:
        raise InputError(f"label_maps has {count} entries but there are {n} samples")
    masked = int(has_mask.sum())
    messages = {
        "empty_masks": f"masks painting less than {params.min_area_fraction:.2%} of the image",
        "mask_speckle": f"masks with {params.speckle_count} or more specks (tiny disconnected pieces of a class)",
        "mask_holes": "masks with background enclosed inside a class (holes)",
        "mask_missing_classes": "masks that lack the class the image is labelled with",
        "mask_disagreement": f"masks the pre-label model contradicts over {params.disagreement_fraction:.0%} of "
                             "the image or more",
    }
    findings = []
    for name in MASK_FINDINGS:
        if name == "mask_disagreement" and predicted is None:
            continue
        total = compared if name == "mask_disagreement" else masked
        flagged = int(flags[name].sum())
        share = flagged / total if total else 0.0
        severity = severity_from_share(share, low=1e-12, medium=params.severity_medium, high=params.severity_high)
        findings.append(Finding(
            check=name, severity=severity, message=f"{flagged} of {total} {messages[name]}",
            sample_ids=ids, flagged=flags[name], scores=scores[name],
            summary={"masks": masked, "checked": total}, details=details[name]))
    return findings


def _disagreement(mask: np.ndarray, prediction: np.ndarray, names: Sequence[str], sid: str
                  ) -> tuple[float, dict[str, Any]]:
    """(share of pixels whose class differs, the largest (mask class, predicted class) confusion)."""
    if mask.shape != prediction.shape:
        raise InputError(f"{sid}: the predicted label map is {prediction.shape}, the mask {mask.shape}; "
                         f"predict at the mask's size")
    differ = mask != prediction
    share = float(np.count_nonzero(differ) / max(mask.size, 1))
    if not differ.any():
        return share, {}
    pairs = mask[differ].astype(np.int64) * (int(prediction.max()) + 1) + prediction[differ].astype(np.int64)
    values, counts = np.unique(pairs, return_counts=True)
    top = int(values[np.argmax(counts)])
    mask_value, predicted_value = divmod(top, int(prediction.max()) + 1)

    def name(value: int) -> str:
        return "background" if value == 0 else names[value - 1] if value <= len(names) else f"value_{value}"

    return share, {"mask": name(mask_value), "predicted": name(predicted_value), "pixels": int(counts.max())}
