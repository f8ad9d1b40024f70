"""Unusable or odd images: dark, overexposed, blurry, low information, stray grayscale, odd size.

Thresholds are relative to the dataset's own distribution (robust z-scores: median and MAD), so
a dataset of dark X-rays is not "all dark", with a few absolute limits for images that are unusable
anywhere (an all-black frame). Sharpness is compared among images of about the same size, since it
depends on resolution. Every threshold is a field of :class:`ImageQualityParams`. Corrupt and truncated
files are the ``unreadable`` check's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curato.arrays import check_field
from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError
from curato.features.text_properties import LANGUAGES, TEXT_COLUMNS


@dataclass(frozen=True)
class ImageQualityParams:
    """Thresholds of the ``image_quality`` check (defaults: the tuned values)."""

    z_limit: float = 3.0  # |robust z| of brightness, sharpness or entropy beyond which an image is flagged
    size_z_limit: float = 4.0  # the same for log area and log aspect (wider: sizes vary legitimately)
    dark_brightness: float = 0.3  # a dark outlier must also have a mean brightness below this
    light_brightness: float = 0.7  # an overexposed outlier must also have a mean brightness above this
    absolute_dark: float = 0.02  # mean brightness below this is dark in any dataset (a black frame)
    absolute_light: float = 0.97  # mean brightness above this is overexposed in any dataset
    white_fraction: float = 0.95  # share of pure-white pixels above which an image is overexposed
    absolute_low_entropy: float = 1.0  # grey entropy (bits) below this is low information (~2 grey levels)
    min_dynamic_range: float = 0.05  # 1-99% grey range below this is low information
    size_class_min_group: int = 30  # sharpness is compared within a size class of at least this many images
    grayscale_majority: float = 0.5  # grayscale share from which the dataset is grayscale (nothing flagged)
    near_empty_chars: int = 3  # a text with no word, or fewer characters than this, is empty or nearly so
    encoding_damage_marks: int = 1  # a text with this many marks of a wrong decoding (mojibake, U+FFFD) is damaged
    markup_share: float = 0.5  # a text whose characters are more than this share links/addresses/markup is flagged
    language_majority: float = 0.8  # a language named for this share of the texts makes the others "other language"
    severity_medium: float = 0.01  # share flagged from which a finding is medium (any flag is low)
    severity_high: float = 0.05  # share flagged from which a finding is high

    def __post_init__(self) -> None:
        for name in ("z_limit", "size_z_limit"):
            check_field("image_quality", self, name, low=0.0, strict=True)
        for name in ("dark_brightness", "light_brightness", "absolute_dark", "absolute_light", "white_fraction",
                     "min_dynamic_range", "grayscale_majority", "severity_medium", "severity_high"):
            check_field("image_quality", self, name, low=0.0, high=1.0)
        check_field("image_quality", self, "absolute_low_entropy", low=0.0)
        check_field("image_quality", self, "size_class_min_group", integer=True, low=1)
        for name in ("near_empty_chars", "encoding_damage_marks"):
            check_field("image_quality", self, name, integer=True, low=1)
        for name in ("markup_share", "language_majority"):
            check_field("image_quality", self, name, low=0.0, high=1.0)
        if self.severity_high < self.severity_medium:
            raise InputError(f"image_quality.severity_high: must be >= severity_medium ({self.severity_medium}), "
                             f"got {self.severity_high!r}")


def robust_z(values: np.ndarray, *, floor: float) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the spread floored so a constant column does not explode."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    median = np.median(finite)
    spread = max(1.4826 * float(np.median(np.abs(finite - median))), floor)
    return np.nan_to_num((values - median) / spread)


def _grouped_robust_z(values: np.ndarray, groups: np.ndarray, *, floor: float, min_group: int) -> np.ndarray:
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


_SINGULAR = {"are": "is", "carry": "carries", "have": "has"}


def _finding(check: str, sample_ids: np.ndarray, flagged: np.ndarray, scores: np.ndarray, what: str,
             params: ImageQualityParams, notes: np.ndarray | None = None, summary: dict | None = None) -> Finding:
    count = int(flagged.sum())
    share = count / max(1, len(flagged))
    if count == 1 or count == 0:  # ``what`` is written for many images: "are far darker" -> "is far darker"
        verb, _, rest = what.partition(" ")
        what = f"{_SINGULAR.get(verb, verb)} {rest}"
    message = (f"{count} {'image' if count == 1 else 'images'} ({share:.1%}) {what}" if count
               else f"no image {what}")
    details = {}
    if notes is not None:
        details = {str(sid): {"note": str(note)} for sid, note, bad in zip(sample_ids, notes, flagged, strict=True)
                   if bad}
    severity = severity_from_share(share, low=1e-9, medium=params.severity_medium, high=params.severity_high)
    return Finding(check=check, severity=severity, message=message, sample_ids=sample_ids, flagged=flagged,
                   scores=np.where(flagged, scores, 0.0), summary=summary or {}, details=details)


def image_quality_findings(sample_ids: Sequence[str], properties: np.ndarray, columns: Sequence[str], *,
                           params: ImageQualityParams | None = None) -> list[Finding]:
    """Findings ``dark``, ``overexposed``, ``blurry``, ``low_information``, ``grayscale``, ``odd_size``.

    ``properties`` is the (n, p) property table of readable images (see docs/properties.md); ``params``
    the thresholds (default: :class:`ImageQualityParams`).
    """
    p = ImageQualityParams() if params is None else params
    ids = np.asarray(sample_ids, dtype=object)
    if any(name in TEXT_COLUMNS for name in columns):
        return _by_modality(ids, np.asarray(properties, dtype=np.float64), list(columns), p)
    column = {name: np.asarray(properties[:, list(columns).index(name)], dtype=np.float64) for name in columns}
    brightness = column["brightness_mean"]
    findings = []

    z = robust_z(brightness, floor=0.02)
    dark = ((z < -p.z_limit) & (brightness < p.dark_brightness)) | (brightness < p.absolute_dark)
    notes = np.array([f"mean brightness {b:.2f}" for b in brightness], dtype=object)
    findings.append(_finding("dark", ids, dark, np.where(brightness < p.absolute_dark, 1.0, _score(z, p.z_limit)),
                             "are far darker than the rest of the dataset", p, notes,
                             {"median_brightness": float(np.nanmedian(brightness))}))

    light = (((z > p.z_limit) & (brightness > p.light_brightness)) | (brightness > p.absolute_light)
             | (column["bright_fraction"] > p.white_fraction))
    findings.append(_finding("overexposed", ids, light,
                             np.where(brightness > p.absolute_light, 1.0, _score(z, p.z_limit)),
                             "are overexposed (far brighter than the rest, or mostly pure white)", p, notes))

    # Sharpness depends on resolution: compare an image with others of about its size.
    side = np.minimum(column["width"], column["height"])
    size_class = np.round(np.log2(np.maximum(side, 1)))
    log_sharpness = np.log10(np.maximum(column["sharpness"], 1e-3))
    z = _grouped_robust_z(log_sharpness, size_class, floor=0.05, min_group=p.size_class_min_group)
    blurry = (z < -p.z_limit) & np.isfinite(column["sharpness"])
    findings.append(_finding("blurry", ids, blurry, _score(z, p.z_limit),
                             "are much blurrier than images of similar size", p,
                             np.array([f"sharpness {s:.3g}" for s in column["sharpness"]], dtype=object)))

    entropy = column["entropy"]
    z = robust_z(entropy, floor=0.1)
    low_info = ((z < -p.z_limit) | (entropy < p.absolute_low_entropy)
                | (column["dynamic_range"] < p.min_dynamic_range))
    findings.append(_finding("low_information", ids, low_info,
                             np.where(entropy < p.absolute_low_entropy, 1.0, _score(z, p.z_limit)),
                             "carry little information (nearly flat or very few grey levels)", p,
                             np.array([f"entropy {e:.2f} bits" for e in entropy], dtype=object)))

    grey = column["is_grayscale"] > 0.5
    grey_share = float(grey.mean()) if len(grey) else 0.0
    mostly_colour = grey_share < p.grayscale_majority
    stray_grey = grey if mostly_colour else np.zeros_like(grey)
    what = "are grayscale in a mostly colour dataset" if mostly_colour else "is out of place: the dataset is grayscale"
    findings.append(_finding("grayscale", ids, stray_grey, stray_grey.astype(float), what, p,
                             summary={"grayscale_share": grey_share}))

    log_area = np.log(np.maximum(column["width"] * column["height"], 1))
    log_aspect = np.log(np.maximum(column["aspect"], 1e-6))
    z_area = robust_z(log_area, floor=0.15)
    z_aspect = robust_z(log_aspect, floor=0.1)
    odd = (np.abs(z_area) > p.size_z_limit) | (np.abs(z_aspect) > p.size_z_limit)
    notes = np.array([f"{int(w)}x{int(h)}" for w, h in zip(column["width"], column["height"], strict=True)],
                     dtype=object)
    size_score = np.maximum(_score(z_area, p.size_z_limit), _score(z_aspect, p.size_z_limit))
    findings.append(_finding("odd_size", ids, odd, size_score,
                             "have a size or aspect ratio far from the rest", p, notes,
                             {"median_width": float(np.nanmedian(column["width"])),
                              "median_height": float(np.nanmedian(column["height"]))}))
    return findings


def _by_modality(ids: np.ndarray, properties: np.ndarray, columns: list[str],
                 params: ImageQualityParams) -> list[Finding]:
    """Image rules on the rows with image properties, text rules on the rows with text properties: a text row
    has NaN image columns and an image row NaN text columns, and no rule of one modality sees the other's rows."""
    text_at = [j for j, name in enumerate(columns) if name in TEXT_COLUMNS]
    image_at = [j for j, name in enumerate(columns) if name not in TEXT_COLUMNS]
    findings: list[Finding] = []
    for at, run in ((image_at, image_quality_findings), (text_at, text_quality_findings)):
        rows = np.isfinite(properties[:, at]).any(axis=1) if at else np.zeros(len(ids), dtype=bool)
        if rows.any():
            findings += run(ids[rows], properties[np.ix_(rows, at)], [columns[j] for j in at], params=params)
    return findings


def text_quality_findings(sample_ids: Sequence[str], properties: np.ndarray, columns: Sequence[str], *,
                          params: ImageQualityParams | None = None) -> list[Finding]:
    """Findings ``empty_text``, ``encoding_damage``, ``odd_length``, ``mostly_markup``, ``other_language``.

    ``properties``: (n, p) text properties (:mod:`curato.features.text_properties`) of text samples; the
    thresholds are the text fields of :class:`ImageQualityParams`. Unknown values (NaN) flag nothing.
    """
    p = ImageQualityParams() if params is None else params
    ids = np.asarray(sample_ids, dtype=object)
    column = {name: np.asarray(properties[:, j], dtype=np.float64) for j, name in enumerate(columns)}
    chars, words = column["chars"], column["words"]
    findings = []

    empty = np.isfinite(chars) & ((words == 0) | (chars < p.near_empty_chars))
    findings.append(_text_finding("empty_text", ids, empty, empty.astype(float), "are empty or nearly empty", p,
                                  [f"{int(c)} characters" for c in np.nan_to_num(chars)]))

    damage = np.nan_to_num(column["encoding_damage"])
    damaged = damage >= p.encoding_damage_marks
    findings.append(_text_finding("encoding_damage", ids, damaged, np.clip(damage / 4, 0.0, 1.0),
                                  "show encoding damage (mojibake such as 'Ã©' or 'â€™', or U+FFFD)", p,
                                  [f"{int(d)} mark(s) of a wrong decoding" for d in damage]))

    log_chars = np.where(empty | ~np.isfinite(chars), np.nan, np.log(np.maximum(chars, 1)))
    z = robust_z(log_chars, floor=0.15)
    odd = ~np.isnan(log_chars) & (np.abs(z) > p.size_z_limit)
    findings.append(_text_finding("odd_length", ids, odd, _score(z, p.size_z_limit),
                                  "are far longer or shorter than the rest", p,
                                  [f"{int(c)} characters" for c in np.nan_to_num(chars)],
                                  {"median_chars": float(np.nanmedian(chars)) if np.isfinite(chars).any() else None}))

    markup = np.nansum(np.stack([column["url_share"], column["email_share"], column["html_share"]]), axis=0)
    heavy = markup > p.markup_share
    findings.append(_text_finding("mostly_markup", ids, heavy, np.clip(markup, 0.0, 1.0),
                                  "are mostly web addresses, e-mail addresses or HTML markup", p,
                                  [f"{m:.0%} links/addresses/markup" for m in markup]))

    language = column["language"]
    named = language[np.isfinite(language)].astype(int)
    counts = np.bincount(named, minlength=len(LANGUAGES))
    main = int(counts.argmax()) if named.size else -1
    majority = named.size > 0 and counts[main] >= p.language_majority * named.size
    other = np.isfinite(language) & (language != main) if majority else np.zeros(len(ids), dtype=bool)
    what = (f"are in another language than the dataset's {LANGUAGES[main]}" if majority
            else "are in another language (no language is named for most texts)")
    findings.append(_text_finding("other_language", ids, other, other.astype(float), what, p,
                                  [LANGUAGES[int(v)] if np.isfinite(v) else "unknown" for v in language],
                                  {"languages": {LANGUAGES[k]: int(c) for k, c in enumerate(counts) if c},
                                   "unknown": int((~np.isfinite(language)).sum())}))
    return findings


_TEXT_SINGULAR = {"are": "is", "show": "shows"}


def _text_finding(check: str, ids: np.ndarray, flagged: np.ndarray, scores: np.ndarray, what: str,
                  params: ImageQualityParams, notes: Sequence[str], summary: dict | None = None) -> Finding:
    """A text finding in words: "14 texts are empty or nearly empty", "1 text shows encoding damage ..."."""
    count = int(flagged.sum())
    share = count / max(1, len(flagged))
    if count <= 1:  # ``what`` is written for many texts: "are empty" -> "is empty"
        verb, _, rest = what.partition(" ")
        what = f"{_TEXT_SINGULAR.get(verb, verb)} {rest}"
    message = f"{count} {'text' if count == 1 else 'texts'} ({share:.1%}) {what}" if count else f"no text {what}"
    details = {str(sid): {"note": str(note)} for sid, note, bad in zip(ids, notes, flagged, strict=True) if bad}
    severity = severity_from_share(share, low=1e-9, medium=params.severity_medium, high=params.severity_high)
    return Finding(check=check, severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=np.where(flagged, np.nan_to_num(scores), 0.0), summary=summary or {}, details=details)
