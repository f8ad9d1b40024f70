"""Unusable or odd images: dark, overexposed, blurry, low information, stray grayscale, odd size.

Thresholds are relative to the dataset's own distribution (robust z-scores: median and MAD), so
a dataset of dark X-rays is not "all dark", with a few absolute limits for images that are unusable
anywhere (an all-black frame). Corrupt and truncated files are the ``unreadable`` check's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curato.checks.findings import Finding, severity_from_share

# |robust z| beyond which a value is flagged as far outside the dataset's own range
Z_LIMIT = 3.0
# Size and aspect are compared on a log scale; a wider limit because sizes vary legitimately.
SIZE_Z_LIMIT = 4.0
ABSOLUTE_DARK = 0.02  # mean grey below 2% of full scale: a black frame
ABSOLUTE_LIGHT = 0.97
ABSOLUTE_LOW_ENTROPY = 1.0  # bits: at most ~2 effective grey levels
MIN_DYNAMIC_RANGE = 0.05


def robust_z(values: np.ndarray, *, floor: float) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the spread floored so a constant column does not explode."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    median = np.median(finite)
    spread = max(1.4826 * float(np.median(np.abs(finite - median))), floor)
    return np.nan_to_num((values - median) / spread)


def _grouped_robust_z(values: np.ndarray, groups: np.ndarray, *, floor: float, min_group: int = 30) -> np.ndarray:
    """Robust z within each group (e.g. image-size class); small groups use the whole dataset."""
    z = robust_z(values, floor=floor)
    names, counts = np.unique(groups, return_counts=True)
    for name, count in zip(names, counts, strict=True):
        if count >= min_group:
            members = groups == name
            z[members] = robust_z(values[members], floor=floor)
    return z


def _score(z: np.ndarray, limit: float) -> np.ndarray:
    return np.clip(np.abs(z) / (2 * limit), 0.0, 1.0)


def _finding(check: str, sample_ids: np.ndarray, flagged: np.ndarray, scores: np.ndarray, what: str,
             notes: np.ndarray | None = None, summary: dict | None = None) -> Finding:
    count = int(flagged.sum())
    share = count / max(1, len(flagged))
    message = (f"{count} image(s) ({share:.1%}) {what}" if count else f"no image {what}")
    details = {}
    if notes is not None:
        details = {str(sid): {"note": str(note)} for sid, note, bad in zip(sample_ids, notes, flagged, strict=True)
                   if bad}
    return Finding(check=check, severity=severity_from_share(share, low=1e-9, medium=0.01, high=0.05),
                   message=message, sample_ids=sample_ids, flagged=flagged, scores=np.where(flagged, scores, 0.0),
                   summary=summary or {}, details=details)


def image_quality_findings(sample_ids: Sequence[str], properties: np.ndarray, columns: Sequence[str]) -> list[Finding]:
    """Findings ``dark``, ``overexposed``, ``blurry``, ``low_information``, ``grayscale``, ``odd_size``.

    ``properties`` is the (n, p) property table of readable images (see docs/properties.md).
    """
    ids = np.asarray(sample_ids, dtype=object)
    column = {name: np.asarray(properties[:, list(columns).index(name)], dtype=np.float64) for name in columns}
    brightness = column["brightness_mean"]
    findings = []

    z = robust_z(brightness, floor=0.02)
    dark = ((z < -Z_LIMIT) & (brightness < 0.3)) | (brightness < ABSOLUTE_DARK)
    notes = np.array([f"mean brightness {b:.2f}" for b in brightness], dtype=object)
    findings.append(_finding("dark", ids, dark, np.where(brightness < ABSOLUTE_DARK, 1.0, _score(z, Z_LIMIT)),
                             "are far darker than the rest of the dataset", notes,
                             {"median_brightness": float(np.nanmedian(brightness))}))

    light = ((z > Z_LIMIT) & (brightness > 0.7)) | (brightness > ABSOLUTE_LIGHT) | (column["bright_fraction"] > 0.95)
    findings.append(_finding("overexposed", ids, light,
                             np.where(brightness > ABSOLUTE_LIGHT, 1.0, _score(z, Z_LIMIT)),
                             "are overexposed (far brighter than the rest, or mostly pure white)", notes))

    # Sharpness depends on resolution: compare an image with others of about its size.
    side = np.minimum(column["width"], column["height"])
    size_class = np.round(np.log2(np.maximum(side, 1)))
    log_sharpness = np.log10(np.maximum(column["sharpness"], 1e-3))
    z = _grouped_robust_z(log_sharpness, size_class, floor=0.05)
    blurry = (z < -Z_LIMIT) & np.isfinite(column["sharpness"])
    findings.append(_finding("blurry", ids, blurry, _score(z, Z_LIMIT),
                             "are much blurrier than images of similar size",
                             np.array([f"sharpness {s:.3g}" for s in column["sharpness"]], dtype=object)))

    entropy = column["entropy"]
    z = robust_z(entropy, floor=0.1)
    low_info = (z < -Z_LIMIT) | (entropy < ABSOLUTE_LOW_ENTROPY) | (column["dynamic_range"] < MIN_DYNAMIC_RANGE)
    findings.append(_finding("low_information", ids, low_info,
                             np.where(entropy < ABSOLUTE_LOW_ENTROPY, 1.0, _score(z, Z_LIMIT)),
                             "carry little information (nearly flat or very few grey levels)",
                             np.array([f"entropy {e:.2f} bits" for e in entropy], dtype=object)))

    grey = column["is_grayscale"] > 0.5
    grey_share = float(grey.mean()) if len(grey) else 0.0
    stray_grey = grey if grey_share < 0.5 else np.zeros_like(grey)
    what = "are grayscale in a mostly colour dataset" if grey_share < 0.5 else "(the dataset is grayscale)"
    findings.append(_finding("grayscale", ids, stray_grey, stray_grey.astype(float), what,
                             summary={"grayscale_share": grey_share}))

    log_area = np.log(np.maximum(column["width"] * column["height"], 1))
    log_aspect = np.log(np.maximum(column["aspect"], 1e-6))
    z_area = robust_z(log_area, floor=0.15)
    z_aspect = robust_z(log_aspect, floor=0.1)
    odd = (np.abs(z_area) > SIZE_Z_LIMIT) | (np.abs(z_aspect) > SIZE_Z_LIMIT)
    notes = np.array([f"{int(w)}x{int(h)}" for w, h in zip(column["width"], column["height"], strict=True)],
                     dtype=object)
    size_score = np.maximum(_score(z_area, SIZE_Z_LIMIT), _score(z_aspect, SIZE_Z_LIMIT))
    findings.append(_finding("odd_size", ids, odd, size_score,
                             "have a size or aspect ratio far from the rest", notes,
                             {"median_width": float(np.nanmedian(column["width"])),
                              "median_height": float(np.nanmedian(column["height"]))}))
    return findings
