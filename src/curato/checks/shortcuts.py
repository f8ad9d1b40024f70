"""Shortcuts: can the label be predicted from something that is not the object?

A network learns the simplest rule that fits the labels: if one class is photographed on grass, "count the
green pixels" fits; if one class is stored as small JPEGs, "look at the compression" fits.
:func:`shortcut_finding` measures how well the label can be predicted from each image property and each
group of properties (``CUE_GROUPS``: colour, brightness/contrast, geometry and size, file
format/compression, background/border, texture/frequency, object size) ALONE, and flags cues that carry
a large share of the label signal.

The cue model: each column is cut into quantile bins (missing values get a bin of their own, categories
stay categories) and a naive-Bayes model over the binned columns (uniform class prior) is cross-validated
over stratified folds, fully vectorised with ``np.bincount``, so hundreds of refits cost seconds. Per cue:
its balanced accuracy, the chance level ``1 / K``, its mutual information with the label (bits), and its
share of the label signal ``(cue - chance) / (reference - chance)``, the reference being the balanced
accuracy of the out-of-fold embedding model (what a network gets from the whole picture).

A cue is flagged when it is significant -- a permutation test refits every cue on shuffled labels and
compares with the largest accuracy any cue reaches there, which keeps the family-wise false-alarm rate
at ``alpha`` however many cues are tested -- and large: its share reaches ``share_flag``. Natural,
object-borne cues (a sandal has fewer bright pixels than a coat) are significant on any real dataset;
the share separates them from a cue that alone rivals the picture.

A cue that singles out ONE class (the tanks on cloudy days, the huskies on snow) carries about 1/K of the label
signal, so the cues that do not describe the object (``ONE_CLASS_COLUMNS``: the file, the background, a corner,
colour at all, focus, the black level, how much of the frame the object fills) are also tested class by class: a
class is named when its share inside one range exceeds the others' by ``class_gain_flag`` with at most
``others_share_flag`` of them inside (a fifth: a cue a tenth of the others also carry, plus the few whose
natural values fall in the range -- soft pictures for a blur, small objects for a scale). For the cues read off
the pixels the difference must also be visible (``VISIBLE_FLOOR``): natural differences there are consistent but
small (sleeves reaching the frame's edge move the background by a few grey levels), planted ones are not.
The focus has a second way in, for a class singled out as SOFTER: every photo set holds naturally soft pictures
in every class, so a blur on one class can leave more than a fifth of the others inside its range; there (and only
there: with fewer others inside, the usual gain applies) the others' limit is waived for a shift twice as visible
(``focus_shift_flag``, the floor squared) and a gain of ``focus_gain_flag``. (A sharper range has no such natural
crowd, and keeps the usual rule.)
Whole-image brightness is object-borne (a sandal is darker than a coat) and stays untested class by class; what
a planted brightening leaves that an object does not is a lifted black level -- no pixel near black -- so the
1st grey percentile is tested, with a floor of 0.15 of the scale (natural class differences: 0 where objects lie
on a background, 0.06 between LFW's faces and its darker texture crops). With two classes the whole-label test
judges only the cues that cannot come from the picture (``TWO_CLASS_WHOLE_LABEL_COLUMNS``).

Also tested: the object size (annotated boxes, else :func:`foreground_proxy` of the thumbnails) as a cue
group; a thumbnail test (the embedding head on 4x4 and 8x8 colour thumbnails, reported); a background-only
test (the head on embeddings of the images with the object blanked out, flagged like a cue). Every
threshold is a field of :class:`ShortcutParams`; how they were chosen: docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# scipy.stats and scikit-learn are imported inside the functions that use them: importing them costs seconds, paid
# by every command that loads the checks (the report, `curato checks`) whether or not it runs them
from curato.arrays import check_field, stratified_folds, stratified_subsample
from curato.checks.findings import Finding
from curato.errors import InputError
from curato.features.text_properties import TEXT_CATEGORICAL, TEXT_COLUMNS

CUE_GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("red_mean", "green_mean", "blue_mean", "saturation_mean", "colourfulness", "green_fraction",
               "is_grayscale"),
    "brightness_contrast": ("brightness_mean", "brightness_std", "contrast", "dynamic_range", "dark_fraction",
                            "bright_fraction", "centre_brightness", "black_level"),
    "geometry_size": ("width", "height", "aspect", "megapixels"),
    "format_compression": ("format", "file_bytes", "bits_per_pixel", "jpeg_quality"),
    "background_border": ("border_red", "border_green", "border_blue", "border_brightness", "border_std",
                          "background_red", "background_green", "background_blue", "background_brightness",
                          "corner_contrast"),
    "texture_frequency": ("sharpness", "entropy", "edge_density", "edge_sharpness"),
    "object_size": ("object_area", "object_extent"),
    # text properties (curato.features.text_properties): a text row has these, an image row the ones above
    "text_length": ("chars", "words", "mean_word_length"),
    "text_characters": ("punctuation_share", "uppercase_share", "digit_share"),
    "text_markup": ("url_share", "email_share", "html_share", "emoji_share"),
    "text_source": ("language", "boilerplate_prefix", "boilerplate_suffix", "encoding_damage"),
}
CATEGORICAL = frozenset({"format"}) | TEXT_CATEGORICAL
# Cues that never depend on what the picture shows: the file format, the JPEG quality setting and the
# stored size. (File bytes do: a plain PNG compresses better than a busy one.) One class singled out by
# them ("90% of 'Bag' images are JPEG, 0% of the others") is flagged even when the cue says nothing
# about the other classes, once that class's share inside its range exceeds the others' by class_gain_flag.
CONTEXT_COLUMNS = frozenset({"format", "jpeg_quality", "width", "height", "aspect", "megapixels"})
# Derived from the thumbnails by cue_table: the background as the MEDIAN of the outer ring of the colour and
# grey thumbnails (an object reaching the edge covers a minority of the ring, so its pixels do not move it,
# unlike the border_* means), and the largest contrast of a corner block against that background (a
# watermark, a logo, a scanner token).
BACKGROUND_COLUMNS = ("background_red", "background_green", "background_blue", "background_brightness",
                      "corner_contrast")
# Also derived from the grey thumbnail: how steep the steepest edges are for the picture's contrast -- the focus
# or blur of the picture, whatever the amount of texture the object has (which sharpness and edge_density
# measure); a frame's straight inner edge is left out (see edge_sharpness).
DERIVED_COLUMNS = (*BACKGROUND_COLUMNS, "edge_sharpness")
# Derived from the stored properties (no new property, so older scans have it): the picture's black level, its 1st
# grey percentile, which the percentile contrast and the dynamic range hold between them. A lifted black -- no
# pixel of the picture near black -- is what an exposure, a haze filter or a scanner's pedestal leaves on every
# picture it touched, whatever they show.
BLACK_LEVEL_INPUTS = ("contrast", "dynamic_range", "brightness_mean")
DERIVED_BLOCK = 32_768  # thumbnail rows turned into derived columns at a time
# The one-class test (see _per_class_cues) judges only cues that describe something other than the object:
# the file (format, JPEG quality, stored size), the background, whether the picture has colour at all, its
# focus, and how much of the frame the object fills (its scale, not its shape).
# For texts: what the source or the pipeline added, not what the text says -- a signature phrase, links,
# addresses, markup, emoji, the language and encoding damage.
TEXT_ONE_CLASS_COLUMNS = frozenset({"boilerplate_prefix", "boilerplate_suffix", "url_share", "email_share",
                                    "html_share", "emoji_share", "language", "encoding_damage"})
ONE_CLASS_COLUMNS = (CONTEXT_COLUMNS | frozenset(DERIVED_COLUMNS)
                     | frozenset({"is_grayscale", "object_extent", "black_level"})
                     | TEXT_ONE_CLASS_COLUMNS)
# With two classes every difference between them predicts the label, so the whole-label test there judges only
# cues that cannot come from what the pictures show (the file, the colour mode, the source's texts); the cues
# read off the pixels (background, corners, focus, scale) go through the one-class test and its visible-shift floor.
TWO_CLASS_WHOLE_LABEL_COLUMNS = CONTEXT_COLUMNS | frozenset({"is_grayscale"}) | TEXT_ONE_CLASS_COLUMNS


@dataclass(frozen=True)
class ShortcutParams:
    """Thresholds of the ``shortcuts`` check (defaults: the tuned values)."""

    bins: int = 16  # quantile bins per numeric cue column
    smoothing: float = 1.0  # pseudo-count added to every cell of the naive-Bayes cue model
    n_folds: int = 5  # cross-validation folds of every model; each class needs this many samples
    permutations: int = 100  # label shuffles of the permutation test
    alpha: float = 0.01  # family-wise false-alarm rate of the permutation test (and the background test)
    share_flag: float = 0.5  # share of the label signal from which a significant cue is flagged
    share_high: float = 0.85  # strongest flagged share (or class gain) from which the finding is high
    class_gain_flag: float = 0.5  # a one-class cue flags a class whose share inside a range exceeds the others' by this
    others_share_flag: float = 0.2  # ... while at most this share of the other classes is inside that range
    # ... and, for the cues read off the pixels, while the median of the class's values inside that range differs
    # from the other classes' median by a visible amount: natural differences there are small, planted ones not
    level_shift_flag: float = 0.03  # background colour and brightness: a difference of this fraction of the scale
    corner_shift_flag: float = 0.3  # corner contrast: 0.3 of the grey scale (a mark, not a texture)
    focus_ratio_flag: float = 1.15  # edge steepness for the contrast: this factor, up or down
    # The focus also flags a class that is SOFTER inside its range, whatever share of the others is there (soft
    # pictures occur naturally in every class), when its shift is twice as visible -- the floor squared -- and its
    # gain reaches focus_gain_flag
    focus_shift_flag: float = 1.32
    focus_gain_flag: float = 0.4
    black_level_flag: float = 0.15  # black level (1st grey percentile): this fraction of the scale, about 38 levels
    range_flag: float = 0.3  # a class's samples inside its range of a flagged cue are flagged if it separates by this
    max_samples: int = 10_000  # samples (a stratified subsample) the cue models and the permutations use
    background_samples: int = 1_000  # images re-embedded with their object blanked out for the background test
    cues_explained: int = 3  # flagged cues explained class by class (per-class ranges, examples, flagged samples)
    named_in_message: int = 3  # flagged cues, and classes per cue, named in the message
    examples_per_class: int = 6  # example samples per class and explained cue, lowest to highest value
    foreground_levels: float = 24.0  # foreground proxy: grey levels a cell must differ from the border's median
    foreground_spreads: float = 3.0  # ... or this many robust spreads of the border, whichever is larger

    def __post_init__(self) -> None:
        check = "shortcuts"
        for name, low in (("bins", 2), ("n_folds", 2), ("permutations", 1), ("max_samples", 1),
                          ("background_samples", 20),
                          ("cues_explained", 0), ("named_in_message", 1), ("examples_per_class", 1)):
            check_field(check, self, name, integer=True, low=low)
        for name in ("smoothing", "share_flag", "share_high"):
            check_field(check, self, name, low=0.0, strict=True)
        for name in ("alpha", "class_gain_flag"):
            check_field(check, self, name, low=0.0, high=1.0, strict=True)
        check_field(check, self, "others_share_flag", low=0.0, high=1.0)
        for name in ("level_shift_flag", "corner_shift_flag", "black_level_flag"):
            check_field(check, self, name, low=0.0)
        check_field(check, self, "focus_ratio_flag", low=1.0)
        check_field(check, self, "focus_shift_flag", low=self.focus_ratio_flag)
        check_field(check, self, "focus_gain_flag", low=0.0, high=1.0, strict=True)
        check_field(check, self, "range_flag", low=0.0, high=1.0)
        for name in ("foreground_levels", "foreground_spreads"):
            check_field(check, self, name, low=0.0)


def foreground_boxes(grey: np.ndarray, *, params: ShortcutParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Foreground proxy from grey thumbnails: (area fraction (n,), box (n, 4) as fractions top, left, bottom, right).

    ``grey``: (n, s, s) on the 0..255 scale. The background is the median grey of the outer ring;
    foreground cells differ from it by more than ``max(foreground_levels, foreground_spreads x MAD of the
    ring)`` (``params``, default :class:`ShortcutParams`). An image without foreground gets area 0 and an
    empty box (0, 0, 0, 0).
    """
    p = ShortcutParams() if params is None else params
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 3:
        raise InputError(f"grey thumbnails must be (n, side, side), got shape {grey.shape}")
    _, height, width = grey.shape
    ring = np.ones((height, width), dtype=bool)
    ring[1:-1, 1:-1] = False
    border = grey[:, ring]
    level = np.median(border, axis=1)
    spread = np.median(np.abs(border - level[:, None]), axis=1)
    cut = np.maximum(p.foreground_levels, p.foreground_spreads * spread)
    foreground = np.abs(grey - level[:, None, None]) > cut[:, None, None]

    def span(mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        seen = mask.any(axis=1)
        first = np.where(seen, mask.argmax(axis=1), 0)
        end = np.where(seen, size - mask[:, ::-1].argmax(axis=1), 0)
        return first / size, end / size

    top, bottom = span(foreground.any(axis=2), height)
    left, right = span(foreground.any(axis=1), width)
    return foreground.mean(axis=(1, 2)), np.stack([top, left, bottom, right], axis=1)


def foreground_proxy(grey: np.ndarray, *, params: ShortcutParams | None = None) -> np.ndarray:
    """(n, 2) object area fraction and extent -- the foreground box's longer side as a fraction of the side."""
    area, box = foreground_boxes(grey, params=params)
    extent = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    return np.stack([area, extent], axis=1)


def blank_box(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A copy of an HxWx3 image with the box (fractions top, left, bottom, right) filled by the border's median colour.

    What is left is the background: the input of the background-only test.
    """
    height, width = image.shape[:2]
    top, left, bottom, right = (round(f * size) for f, size in zip(box, (height, width, height, width),
                                                                          strict=True))
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    out = image.copy()
    out[top:bottom, left:right] = np.median(ring, axis=0).astype(image.dtype)
    return out


def cue_table(
    properties: np.ndarray,
    property_columns: Sequence[str],
    *,
    formats: Sequence[str | None] | None = None,
    thumbnails: np.ndarray | None = None,
    object_size: np.ndarray | None = None,
    params: ShortcutParams | None = None,
    property_categories: Mapping[str, Sequence[str]] | None = None,
) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """The cue columns the check tests (image properties, file format, object size), their names, and
    the category names of categorical columns.

    ``properties``: (n, p) scan properties named by ``property_columns``; ``formats``: the stored file
    format per sample (a category); ``object_size``: (n, 2) area fraction and extent (longer box side
    over the image side) from annotations (NaN rows where a sample has none) -- missing rows are
    filled from the foreground proxy of the grey ``thumbnails`` (scan thumbnail rows) when given, with
    ``params``' ``foreground_*`` thresholds. ``property_categories``: names of the codes of categorical
    property columns (text language and boilerplate phrases, ``AuditData.property_categories``).
    """
    values = [np.asarray(properties, dtype=np.float64)]
    names = list(property_columns)
    categories: dict[str, list[str]] = {name: list(known) for name, known in (property_categories or {}).items()
                                        if name in names}
    n = values[0].shape[0]
    if formats is not None:
        known = [f or "" for f in formats]
        categories["format"] = sorted(set(known) - {""})
        lookup = {name: i for i, name in enumerate(categories["format"])}
        values.append(np.array([[lookup[f]] if f else [np.nan] for f in known], dtype=np.float64).reshape(n, 1))
        names.append("format")
    size = np.full((n, 2), np.nan) if object_size is None else np.asarray(object_size, dtype=np.float64).copy()
    if thumbnails is not None:
        from curato.features.thumbnails import grey_thumbnails

        rows = np.asarray(thumbnails)
        missing = ~np.isfinite(size).all(axis=1) & rows.any(axis=1)
        where = np.flatnonzero(missing)
        for start in range(0, len(where), DERIVED_BLOCK):
            block = where[start:start + DERIVED_BLOCK]
            size[block] = foreground_proxy(grey_thumbnails(rows[block]), params=params)
    if np.isfinite(size).any():
        values.append(size)
        names += ["object_area", "object_extent"]
    if all(name in names for name in BLACK_LEVEL_INPUTS):
        values.append(black_level(*(values[0][:, names.index(name)] for name in BLACK_LEVEL_INPUTS))[:, None])
        names.append("black_level")
    if thumbnails is not None and len(thumbnails):
        rows = np.asarray(thumbnails)
        # In row blocks: the float64 grey pictures of a million rows would take ~5 GB at once.
        values.append(np.concatenate([np.concatenate([background_columns(rows[start:start + DERIVED_BLOCK]),
                                                      edge_sharpness(rows[start:start + DERIVED_BLOCK])[:, None]],
                                                     axis=1) for start in range(0, len(rows), DERIVED_BLOCK)]))
        names += list(DERIVED_COLUMNS)
    return np.concatenate(values, axis=1), names, categories


def background_columns(thumbnails: np.ndarray) -> np.ndarray:
    """(n, 5) background red, green, blue, brightness and corner contrast from stored thumbnail rows, in [0, 1].

    The background is the level the outer ring of cells mostly shows (colour: the 8x8 thumbnail; brightness:
    the 24x24 grey one): the mean of the tightest half of the ring's values (the "shorth"), which an object
    reaching the edge, light on dark or dark on light, does not move while it covers less than half the ring.
    The corner contrast is the largest difference, over the four corners, between a corner block (a sixth
    of the side) and the ring cells that continue it along both edges: a logo or a scanner token sits in the
    corner alone, an object that reaches a corner goes on along the edge. Rows without a picture get NaN.
    """
    from curato.features.thumbnails import colour_thumbnails, grey_thumbnails

    rows = np.asarray(thumbnails)
    colour = colour_thumbnails(rows).astype(np.float64) / 255  # (n, 8, 8, 3)
    grey = grey_thumbnails(rows).astype(np.float64) / 255  # (n, 24, 24)
    background = np.stack([_shorth(_ring(colour[..., channel])) for channel in range(3)], axis=1)
    level = _shorth(_ring(grey))
    side = grey.shape[1]
    block = max(2, side // 6)
    contrasts = []
    for rows_at, cols_at in ((slice(0, block), slice(0, block)), (slice(0, block), slice(side - block, side)),
                             (slice(side - block, side), slice(0, block)),
                             (slice(side - block, side), slice(side - block, side))):
        corner = grey[:, rows_at, cols_at].mean(axis=(1, 2))
        top = rows_at.start == 0
        left = cols_at.start == 0
        along_row = grey[:, 0 if top else side - 1, (block if left else side - 2 * block):(2 * block if left
                                                                                          else side - block)]
        along_col = grey[:, (block if top else side - 2 * block):(2 * block if top else side - block),
                         0 if left else side - 1]
        contrasts.append(np.abs(corner - np.concatenate([along_row, along_col], axis=1).mean(axis=1)))
    out = np.concatenate([background, level[:, None], np.max(contrasts, axis=0)[:, None]], axis=1)
    out[~rows.any(axis=1)] = np.nan
    return out


def black_level(contrast: np.ndarray, dynamic_range: np.ndarray, brightness_mean: np.ndarray) -> np.ndarray:
    """(n,) the 1st grey percentile on the 0..1 scale, recovered from the stored properties: the percentile contrast
    ``(p99 - p1) / (p99 + p1)`` and the dynamic range ``(p99 - p1) / 255`` give ``p99 + p1`` and so ``p1``. A flat
    picture (no contrast, no range) is at its mean; an all-black one at 0."""
    contrast, dynamic_range = np.asarray(contrast, dtype=np.float64), np.asarray(dynamic_range, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = (dynamic_range / contrast - dynamic_range) / 2
    return np.clip(np.where(contrast > 0, spread, np.asarray(brightness_mean, dtype=np.float64)), 0.0, 1.0)


def edge_sharpness(thumbnails: np.ndarray) -> np.ndarray:
    """(n,) steepness of the grey thumbnails' steepest edges for their contrast: the 99th percentile of the
    gradient magnitude (grey levels per pixel) over the picture's range of grey levels. A blurred picture's
    edges are wide and shallow whatever it shows; a sharp one's steepest edges climb most of its range within a
    pixel or two, whether the object is a trouser or a pullover. A frame (:func:`frame_depths`) is left out, with
    the two rows past it (its blend row and the next): its straight inner edge is the frame's, not the picture's
    focus -- on a soft face it would be the steepest edge, on a textured crop not, so a frame carried by every
    class alike would set them apart.
    NaN for rows without a picture or without contrast."""
    from curato.features.thumbnails import grey_thumbnails

    rows = np.asarray(thumbnails)
    grey = grey_thumbnails(rows).astype(np.float64)
    n, side, _ = grey.shape
    depth = frame_depths(grey)
    gradient = np.hypot(grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2], grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    # Unframed rows count every pixel; only framed ones (few) need the masks.
    framed = np.flatnonzero((depth > 0).any(axis=1))
    spread = grey.max(axis=(1, 2)) - grey.min(axis=(1, 2))
    read = (spread > 0) & rows.any(axis=1)
    counted = None
    if framed.size:
        # Pixels of the frame, its resampled blend row and the next (the gradient's stencil reaches one pixel).
        cut = depth[framed] + 2
        index = np.arange(side)
        outside = (((index[None] < cut[:, 0, None]) | (index[None] >= side - cut[:, 1, None]))[:, :, None]
                   | ((index[None] < cut[:, 2, None]) | (index[None] >= side - cut[:, 3, None]))[:, None, :])
        counted = ~(outside[:, 1:-1, 1:-1] | outside[:, :-2, 1:-1] | outside[:, 2:, 1:-1] | outside[:, 1:-1, :-2]
                    | outside[:, 1:-1, 2:])
        inside = grey[framed]
        spread[framed] = (np.where(outside, -np.inf, inside).max(axis=(1, 2))
                          - np.where(outside, np.inf, inside).min(axis=(1, 2)))
        read[framed] = (spread[framed] > 0) & (counted.sum(axis=(1, 2)) >= side) & rows[framed].any(axis=1)
    out = np.full(n, np.nan)
    # The masked (nan) quantile is ~8x slower than the plain one: only framed rows need it.
    whole = read.copy()
    whole[framed] = False
    if whole.any():
        out[whole] = _row_quantile(gradient[whole].reshape(int(whole.sum()), -1), 0.99) / spread[whole]
    masked = framed[read[framed]]
    if masked.size:
        steepest = np.nanquantile(np.where(counted[read[framed]], gradient[masked], np.nan).reshape(masked.size, -1),
                                  0.99, axis=1)
        out[masked] = steepest / spread[masked]
    return out


def _row_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """``np.quantile(values, q, axis=1)`` (linear method) of NaN-free rows, the same bits at half the cost: a
    partition at the two order statistics around ``q`` and NumPy's interpolation between them."""
    width = values.shape[1]
    position = (width - 1) * q
    below = int(np.floor(position))
    above = min(below + 1, width - 1)
    ordered = np.partition(values, [below, above] if above > below else [below], axis=1)
    low, high = ordered[:, below], ordered[:, above]
    gamma = position - below
    step = high - low
    return low + step * gamma if gamma < 0.5 else high - step * (1 - gamma)


def frame_depths(grey: np.ndarray, *, flat: float = 0.03, step: float = 0.1, along_quantile: float = 0.25
                 ) -> np.ndarray:
    """(n, 4) rows of a frame on each side (top, bottom, left, right) of (n, s, s) grey pictures; 0 where none.

    A frame -- a drawn border, a mount, a scanner's bed -- is a band of one level on all four sides (each of its
    rows within ``flat`` of the picture's range of the band's level along the side), equally deep (+-1 row) and
    ending within the outer sixth, whose inner edge is straight and encloses a picture: past the band (the larger
    of its resampled blend row and the first row inside, per place along the side) the level is left at the
    ``along_quantile`` of the side on at least two sides and by ``step`` of the range at the median on one; at
    least two of its inner corners leave the band's level; and what it encloses is not flat.

    What is not a frame: a background deeper than the outer sixth; a centred object on a plain ground -- a disk's
    outline meets the band at a few places and its inner corners are background, a plain box's inside is flat
    (its outline is the picture's only edge); a flat picture. Limits: the frame must be about one thumbnail row
    deep or more (~1/24 of the picture's side: a 3-px frame is found on 25- and 50-px pictures, on 2 of 3 at
    75 px, rarely from 100 px); a band on two or three sides (a letterbox) is not looked for; a frame round a
    blank picture is not found; a textured box centred on a plain ground, straight on all four sides within the
    outer sixth, is a frame (as a mount is).
    """
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim != 3 or grey.shape[1] != grey.shape[2] or grey.shape[1] < 3:
        raise InputError(f"grey pictures must be (n, side, side) with side >= 3, got shape {grey.shape}")
    n, side = grey.shape[0], grey.shape[1]
    cap = max(1, side // 6)
    spread = (grey.max(axis=(1, 2)) - grey.min(axis=(1, 2)))[:, None]
    along = slice(cap, side - cap)  # the side without the corners, which two sides share
    runs, levels, ends, steps = [], [], [], []
    for view in (grey, grey[:, ::-1], grey.transpose(0, 2, 1), grey.transpose(0, 2, 1)[:, ::-1]):
        lines = view[:, :min(cap + 3, side), along]
        level = np.median(lines[:, 0], axis=1)
        banded = np.abs(lines - level[:, None, None]).max(axis=2) <= flat * spread
        run = np.cumprod(banded[:, :cap + 1], axis=1).sum(axis=1)  # cap + 1: the band reaches past the outer sixth
        past = np.take_along_axis(lines, np.minimum(np.stack([run, run + 1], axis=1), lines.shape[1] - 1)[:, :, None],
                                  axis=1)
        runs.append(run)
        levels.append(level)
        departs = np.abs(past - level[:, None, None]).max(axis=1)  # per place along the side, the larger of the two
        ends.append(np.quantile(departs, along_quantile, axis=1) > flat * spread[:, 0])
        steps.append(np.median(departs, axis=1) >= step * spread[:, 0])
    run, level = np.stack(runs, axis=1), np.stack(levels, axis=1)
    ended, stepped = np.stack(ends, axis=1).sum(axis=1), np.stack(steps, axis=1).sum(axis=1)
    framed = ((spread[:, 0] > 0) & (run.min(axis=1) >= 1) & (run.max(axis=1) <= cap)
              & (run.max(axis=1) - run.min(axis=1) <= 1)
              & (level.max(axis=1) - level.min(axis=1) <= flat * spread[:, 0])
              & (ended >= 2) & (stepped >= 1))
    if framed.any():  # its inner corners leave the band's level, and what it encloses is not flat
        rows = np.flatnonzero(framed)
        cut = np.minimum(run[rows] + 1, side // 2)
        corners = grey[rows[:, None], np.stack([cut[:, 0], cut[:, 0], side - 1 - cut[:, 1], side - 1 - cut[:, 1]], 1),
                       np.stack([cut[:, 2], side - 1 - cut[:, 3], cut[:, 2], side - 1 - cut[:, 3]], 1)]
        cornered = (np.abs(corners - np.median(level[rows], axis=1)[:, None]) > flat * spread[rows]).sum(axis=1) >= 2
        index = np.arange(side)
        inside = (((index[None] >= cut[:, 0, None]) & (index[None] < side - cut[:, 1, None]))[:, :, None]
                  & ((index[None] >= cut[:, 2, None]) & (index[None] < side - cut[:, 3, None]))[:, None, :])
        enclosed = (np.where(inside, grey[rows], -np.inf).max(axis=(1, 2))
                    - np.where(inside, grey[rows], np.inf).min(axis=(1, 2)))
        framed[rows] = cornered & (enclosed > flat * spread[rows, 0])
    return np.where(framed[:, None], run, 0) if n else np.zeros((0, 4), dtype=run.dtype)


def _ring(pictures: np.ndarray) -> np.ndarray:
    """(n, cells) the outer ring of (n, side, side) pictures."""
    ring = np.ones(pictures.shape[1:3], dtype=bool)
    ring[1:-1, 1:-1] = False
    return pictures[:, ring]


def _shorth(values: np.ndarray) -> np.ndarray:
    """Per row, the mean of the tightest window holding half of the values: a location estimate that up to
    half of outliers on either side do not move."""
    ordered = np.sort(values, axis=1)
    count = ordered.shape[1]
    half = (count + 1) // 2
    widths = ordered[:, half - 1:] - ordered[:, :count - half + 1]
    start = widths.argmin(axis=1)
    window = start[:, None] + np.arange(half)[None, :]
    return np.take_along_axis(ordered, window, axis=1).mean(axis=1)


def bin_columns(values: np.ndarray, columns: Sequence[str], *, bins: int | None = None) -> np.ndarray:
    """(n, c) int codes: quantile bins per numeric column, categories for categorical ones; NaN -> last code.

    ``bins`` defaults to ``ShortcutParams.bins``.
    """
    bins = ShortcutParams().bins if bins is None else bins
    values = np.asarray(values, dtype=np.float64)
    codes = np.zeros(values.shape, dtype=np.int64)
    for j, name in enumerate(columns):
        column = values[:, j]
        known = np.isfinite(column)
        if name in CATEGORICAL:
            _, inverse = np.unique(column[known], return_inverse=True)
            codes[known, j] = inverse
        elif known.any():
            edges = np.unique(np.quantile(column[known], np.linspace(0, 1, bins + 1)[1:-1]))
            if name in TEXT_COLUMNS:  # most texts have no link, markup or damage: the zeros would swallow every
                # quantile edge and the few texts with some would share their bin; the smallest value gets its own
                edges = np.union1d(edges, [np.nextafter(column[known].min(), np.inf)])
            codes[known, j] = np.searchsorted(edges, column[known], side="right")
        codes[~known, j] = codes[:, j].max() + 1 if known.any() else 0
    return codes


def _naive_bayes_predictions(codes: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int,
                             n_folds: int, smoothing: float) -> np.ndarray:
    """Cross-validated naive-Bayes class predictions over binned columns (uniform class prior).

    ``labels`` is (n,) or (r, n) -- r labelings at once (the permutations): every count is one
    ``np.bincount`` over all of them. Returns predictions of the same shape as ``labels``.
    """
    stacked = np.atleast_2d(labels)
    repeats = stacked.shape[0]
    width = codes.shape[1]
    levels = int(codes.max()) + 1
    cell = (np.arange(width)[None, :] * n_folds + folds[:, None]) * levels + codes  # (n, width)
    cells = width * n_folds * levels
    key = (np.arange(repeats)[:, None, None] * cells + cell[None]) * n_classes + stacked[:, :, None]
    counts = np.bincount(key.ravel(), minlength=repeats * cells * n_classes)
    counts = counts.reshape(repeats, width, n_folds, levels, n_classes).astype(np.float64)
    train = counts.sum(axis=2, keepdims=True) - counts  # every fold's model leaves that fold out
    class_totals = train.sum(axis=3, keepdims=True)
    log_likelihood = np.log(train + smoothing) - np.log(class_totals + smoothing * levels)
    # rows with the same fold and codes get the same scores: score each distinct (fold, codes) once (at most
    # n_folds x levels for one column instead of n), summed in the same order, so the same predictions
    distinct, inverse = np.unique(np.column_stack([folds, codes]), axis=0, return_inverse=True)
    scores = np.zeros((repeats, len(distinct), n_classes))
    for column in range(width):
        scores += log_likelihood[:, column, distinct[:, 0], distinct[:, column + 1]]
    predictions = scores.argmax(axis=2)[:, inverse.reshape(-1)]
    return predictions if np.ndim(labels) == 2 else predictions[0]


def _balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced accuracy of each row of (r, n) predictions against (r, n) labels (classes present only)."""
    repeats = labels.shape[0]
    offset = np.arange(repeats)[:, None] * n_classes
    support = np.bincount((offset + labels).ravel(), minlength=repeats * n_classes).reshape(repeats, n_classes)
    hits = np.bincount((offset + labels)[labels == predictions], minlength=repeats * n_classes)
    recall = hits.reshape(repeats, n_classes) / np.maximum(support, 1)
    return recall.sum(axis=1) / np.maximum((support > 0).sum(axis=1), 1)


def _mutual_information(codes: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Plug-in mutual information (bits) between one binned column and the label."""
    levels = int(codes.max()) + 1
    joint = np.bincount(codes * n_classes + labels, minlength=levels * n_classes).reshape(levels, n_classes)
    joint = joint / joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / outer[nonzero])).sum())


def _interval_gains(codes: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class, the largest (share of the class - share of the others) over contiguous bin ranges: (K,)."""
    return _interval_shares(codes, labels, n_classes)[0]


def _interval_shares(codes: np.ndarray, labels: np.ndarray, n_classes: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class, over contiguous bin ranges, the best range's (gain, share of the class inside, share of the
    other classes inside, first code, end code (exclusive)), each (K,); gain = class share - others' share, the
    largest there is."""
    levels = int(codes.max()) + 1
    hist = np.bincount(labels * levels + codes, minlength=n_classes * levels).reshape(n_classes, levels)
    others = hist.sum(axis=0, keepdims=True) - hist
    inside = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    outside = others / np.maximum(others.sum(axis=1, keepdims=True), 1)
    zero = np.zeros((n_classes, 1))
    cum_in = np.concatenate([zero, np.cumsum(inside, axis=1)], axis=1)
    cum_out = np.concatenate([zero, np.cumsum(outside, axis=1)], axis=1)
    low, high = np.triu_indices(levels + 1, k=1)
    share_in, share_out = cum_in[:, high] - cum_in[:, low], cum_out[:, high] - cum_out[:, low]
    best = (share_in - share_out).argmax(axis=1)
    picked = np.arange(n_classes)
    return (share_in[picked, best] - share_out[picked, best], share_in[picked, best], share_out[picked, best],
            low[best], high[best])


def _class_interval(codes: np.ndarray, values: np.ndarray, labels: np.ndarray, klass: int, column: str,
                    categories: Sequence[str] | None = None) -> dict[str, Any]:
    """The range of bins that best separates one class from the others, in words and numbers.

    ``low``/``high`` bound the known values inside the range (None when it holds none); ``missing``
    says whether "value unknown" (NaN) is part of it; ``text`` describes it ("format = jpeg",
    "border_brightness in [0.91, 1]").
    """
    levels = int(codes.max()) + 1
    inside = np.bincount(codes[labels == klass], minlength=levels) / max(int((labels == klass).sum()), 1)
    outside = np.bincount(codes[labels != klass], minlength=levels) / max(int((labels != klass).sum()), 1)
    gain = np.concatenate([[0.0], np.cumsum(inside - outside)])
    lo_grid, hi_grid = np.triu_indices(levels + 1, k=1)
    best = int(np.argmax(gain[hi_grid] - gain[lo_grid]))
    lo, hi = int(lo_grid[best]), int(hi_grid[best])
    member = (codes >= lo) & (codes < hi)
    known = np.isfinite(values)
    in_range = values[member & known]
    missing = bool((member & ~known).any())
    low = float(in_range.min()) if in_range.size else None
    high = float(in_range.max()) if in_range.size else None
    if low is None:
        text = f"{column} unknown"
    elif categories is not None:
        shown = sorted({categories[int(v)] for v in np.unique(in_range)})
        text = _text_cue_words(column, shown) if column in TEXT_CATEGORICAL else f"{column} = {' or '.join(shown)}"
    else:
        text = f"{column} in [{low:.3g}, {high:.3g}]" if low != high else f"{column} = {low:.3g}"
    if missing and low is not None:
        text += " (or unknown)"
    return {"share_of_class": float(inside[lo:hi].sum()), "share_of_others": float(outside[lo:hi].sum()),
            "low": low, "high": high, "missing": missing, "text": text}


def shortcut_finding(
    sample_ids: Sequence[str] | np.ndarray,
    labels: np.ndarray,
    cues: np.ndarray,
    cue_columns: Sequence[str],
    *,
    class_names: Sequence[str] | None = None,
    reference_probs: np.ndarray | None = None,
    thumbnails: Mapping[str, np.ndarray] | None = None,
    background: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    alpha: float | None = None,
    permutations: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    params: ShortcutParams | None = None,
) -> Finding:
    """The ``shortcuts`` Finding: which non-object cues predict the label, and how strongly.

    ``labels``: int codes 0..K-1 (n,); ``cues``: (n, c) float values of ``cue_columns`` (property
    names, ``format`` as a category code, ``object_area``/``object_extent``; NaN =
    unknown); ``reference_probs``: (n, K) out-of-fold probabilities of the embedding model (the
    share-of-signal reference). ``thumbnails``: name -> (n, f) pixel features for the thumbnail test
    (e.g. ``{"4x4": ..., "8x8": ...}``). ``background``: ``(rows, background_embeddings,
    full_embeddings)`` for the background-only test on a subsample (``rows`` index the samples).
    ``categories``: names of the codes of categorical columns (``cue_table`` returns them).
    Samples are stratified-subsampled to ``max_samples`` for the cue models and the permutations.
    ``params``: the thresholds (default: :class:`ShortcutParams`); ``alpha``, ``permutations`` and
    ``max_samples``, when given, override its fields.
    """
    from sklearn.metrics import balanced_accuracy_score
    overrides = {"alpha": alpha, "permutations": permutations, "max_samples": max_samples}
    p = dataclasses.replace(ShortcutParams() if params is None else params,
                            **{name: value for name, value in overrides.items() if value is not None})
    ids = np.asarray(sample_ids, dtype=object)
    labels = np.asarray(labels)
    cues = np.asarray(cues, dtype=np.float64)
    n = len(ids)
    if labels.shape != (n,) or cues.ndim != 2 or cues.shape[0] != n or cues.shape[1] != len(cue_columns):
        raise InputError(f"shortcuts: labels {labels.shape} and cues {cues.shape} must have one row per sample "
                         f"({n}) and cues one column per name ({len(cue_columns)})")
    if n and (labels.min() < 0 or not np.issubdtype(labels.dtype, np.integer)):
        raise InputError("shortcuts: labels must be integer class codes 0..K-1")
    n_classes = int(labels.max()) + 1 if n else 0
    names = [str(c) for c in class_names] if class_names is not None else [str(k) for k in range(n_classes)]
    present = np.bincount(labels, minlength=n_classes) if n else np.zeros(0, int)
    if n_classes < 2 or (present > 0).sum() < 2 or present[present > 0].min() < p.n_folds:
        return Finding(check="shortcuts", severity="none", sample_ids=ids, flagged=np.zeros(n, bool),
                       scores=np.zeros(n), message="shortcuts not checked: needs two or more classes with at least "
                       f"{p.n_folds} labeled samples each", summary={"cues_flagged": 0})
    rng = np.random.default_rng(seed)
    rows = stratified_subsample(labels, p.max_samples, seed=seed)
    y = labels[rows]
    folds = stratified_folds(y, p.n_folds, rng)
    chance = 1.0 / int((present > 0).sum())
    two_classes = int((present > 0).sum()) == 2
    codes = bin_columns(cues[rows], cue_columns, bins=p.bins)
    informative = np.array([np.unique(codes[:, j]).size > 1 for j in range(codes.shape[1])])
    column_index = {name: j for j, name in enumerate(cue_columns)}
    tested: dict[str, list[int]] = {}
    for group, members in CUE_GROUPS.items():
        usable = [column_index[m] for m in members if m in column_index and informative[column_index[m]]]
        for j in usable:
            tested.setdefault(cue_columns[j], [j])
        if len(usable) > 1:
            tested[f"group:{group}"] = usable

    # Row 0: the real labels; rows 1..: shuffled ones. Every cue is refitted on every row.
    targets = np.stack([y] + [rng.permutation(y) for _ in range(p.permutations)])
    accuracy = np.array([_balanced_accuracy(targets, _naive_bayes_predictions(
        codes[:, cols], targets, folds, n_classes, p.n_folds, p.smoothing), n_classes) for cols in tested.values()]
    ).reshape(len(tested), len(targets))  # no cue varies (e.g. every image the same picture): nothing tested
    observed = accuracy[:, 0]
    null_max = accuracy[:, 1:].max(axis=0, initial=chance)
    p_values = (1 + (null_max[None, :] >= observed[:, None] - 1e-12).sum(axis=1)) / (1 + p.permutations)
    reference = None
    if reference_probs is not None:
        probs = np.asarray(reference_probs, dtype=np.float64)[rows]
        known = np.isfinite(probs).all(axis=1)
        if known.sum() >= 2:
            reference = float(balanced_accuracy_score(y[known], probs[known].argmax(axis=1)))
    per_class = _per_class_cues(codes, cues[rows], cue_columns, informative, targets, n_classes, names)
    cue_rows = []
    for (name, cols), accuracy, p_value in zip(tested.items(), observed, p_values, strict=True):
        share = None if reference is None else (accuracy - chance) / max(reference - chance, 1e-9)
        group = name.removeprefix("group:") if name.startswith("group:") else _group_of(name)
        row: dict[str, Any] = {"cue": name, "group": group, "columns": [cue_columns[j] for j in cols],
                               "balanced_accuracy": round(float(accuracy), 4), "p_value": round(float(p_value), 4),
                               "share_of_signal": None if share is None else round(float(share), 4)}
        if len(cols) == 1:
            row["mutual_information_bits"] = round(_mutual_information(codes[:, cols[0]], y, n_classes), 4)
        pictured = any(cue_columns[j] not in TWO_CLASS_WHOLE_LABEL_COLUMNS for j in cols)
        row["flagged"] = row["whole_label"] = bool(p_value <= p.alpha and share is not None
                                                   and share >= p.share_flag and not (two_classes and pictured))
        if len(cols) == 1 and cue_columns[cols[0]] in per_class:
            found = per_class[cue_columns[cols[0]]]
            row["class_p_value"] = round(found["p_value"], 4)
            row["classes"] = [c for c in found["classes"]
                              if c["p_value"] <= p.alpha and _singles_out(cue_columns[cols[0]], c, p)]
            row["flagged"] |= bool(row["classes"])
        cue_rows.append(row)
    cue_rows.sort(key=lambda r: (not r["flagged"], -r["balanced_accuracy"]))
    tests = {"thumbnails": _thumbnail_test(thumbnails, labels, rows, y, chance, reference, seed, p)}
    if background is not None:
        tests["background_only"] = _background_test(background, labels, chance, seed, p)
    return _finding(ids, labels, cues, cue_columns, rows, y, codes, cue_rows, tests, names, chance, reference, p,
                    categories)


def _per_class_cues(codes: np.ndarray, values: np.ndarray, cue_columns: Sequence[str], informative: np.ndarray,
                    targets: np.ndarray, n_classes: int, names: list[str]) -> dict[str, dict[str, Any]]:
    """Cues that single out one class (``ONE_CLASS_COLUMNS``): per column, each class's gain -- its share
    inside the column's best range minus the other classes' share there -- and, for the columns read off the
    pixels, the median of the class's values inside that range and the other classes' median (what
    :func:`_visible` compares).

    Row 0 of ``targets`` is the real labeling, the rest are the permutations: the p-value compares a gain with
    the largest gain of any class in any of these columns on shuffled labels (family-wise over columns x
    classes, as the whole-label test is over cues).
    """
    columns = [j for j, name in enumerate(cue_columns) if informative[j] and name in ONE_CLASS_COLUMNS]
    if not columns:
        return {}
    gains = np.array([[_interval_gains(codes[:, j], target, n_classes) for j in columns] for target in targets])
    null_max = gains[1:].max(axis=(1, 2))
    result = {}
    labels = targets[0]
    for j in columns:
        observed, inside, outside, first, end = _interval_shares(codes[:, j], labels, n_classes)
        class_p = (1 + (null_max[None, :] >= observed[:, None] - 1e-12).sum(axis=1)) / (1 + len(null_max))
        classes = []
        for k in np.argsort(-observed):
            if observed[k] <= 0:
                continue
            entry = {"class": names[k], "gain": round(float(observed[k]), 4), "p_value": round(float(class_p[k]), 4),
                     "share_of_class": round(float(inside[k]), 4), "share_of_others": round(float(outside[k]), 4)}
            if cue_columns[j] in VISIBLE_FLOOR:
                in_range = (labels == k) & (codes[:, j] >= first[k]) & (codes[:, j] < end[k])
                entry["median_inside"], entry["median_others"] = _medians(values[:, j], in_range, labels != k)
            classes.append(entry)
        result[cue_columns[j]] = {"p_value": float(class_p.min()), "classes": classes}
    return result


def _medians(column: np.ndarray, inside: np.ndarray, others: np.ndarray) -> tuple[float | None, float | None]:
    """The medians of the known values of ``column`` where ``inside`` and where ``others`` (None where none)."""
    picked = [column[mask & np.isfinite(column)] for mask in (inside, others)]
    return tuple(round(float(np.median(v)), 4) if v.size else None for v in picked)  # type: ignore[return-value]


# Columns read off the pixels: the ShortcutParams field holding the least visible change, and how it is measured
# (a difference of levels on the 0..1 scale, or a ratio).
VISIBLE_FLOOR = {**dict.fromkeys(("background_red", "background_green", "background_blue", "background_brightness"),
                                 ("level_shift_flag", "difference")),
                 "corner_contrast": ("corner_shift_flag", "difference"),
                 "black_level": ("black_level_flag", "difference"),
                 "edge_sharpness": ("focus_ratio_flag", "ratio")}


def _singles_out(column: str, entry: Mapping[str, Any], params: ShortcutParams) -> bool:
    """Whether a significant per-class entry of ``column`` names its class: a gain of ``class_gain_flag`` with at
    most ``others_share_flag`` of the others inside and a visible shift -- or, for a class whose focus is softer
    inside its range with more of the others inside than that limit, a gain of ``focus_gain_flag`` and a shift of
    ``focus_shift_flag`` (naturally soft pictures fall in a blur's range in every class; natural focus differences
    stay small)."""
    if (entry["gain"] >= params.class_gain_flag and entry["share_of_others"] <= params.others_share_flag
            and _visible(column, entry, params)):
        return True
    inside, others = entry.get("median_inside"), entry.get("median_others")
    softer = inside is not None and others is not None and inside < others
    # only where the others' limit is what failed: below it, the usual gain applies (a lower gain there named
    # object-borne focus differences, Fashion-MNIST's shirts against ankle boots)
    return bool(column == "edge_sharpness" and softer and entry["share_of_others"] > params.others_share_flag
                and entry["gain"] >= params.focus_gain_flag
                and _visible(column, entry, params, floor=params.focus_shift_flag))


def _visible(column: str, entry: Mapping[str, Any], params: ShortcutParams, floor: float | None = None) -> bool:
    """Whether a class singled out by ``column`` differs from the others by a visible amount (always true for
    columns without a floor): the median of its values inside its range against the other classes' median.
    ``floor``: instead of the column's ``ShortcutParams`` field."""
    if column not in VISIBLE_FLOOR:
        return True
    field, kind = VISIBLE_FLOOR[column]
    least = getattr(params, field) if floor is None else floor
    inside, others = entry["median_inside"], entry["median_others"]
    if inside is None or others is None:
        return False
    if kind == "ratio":
        low, high = sorted((abs(inside), abs(others)))
        return bool(high >= least * low)
    return bool(abs(inside - others) >= least)


def _group_of(column: str) -> str:
    return next((group for group, members in CUE_GROUPS.items() if column in members), "other")


def _head_accuracy(features: np.ndarray, labels: np.ndarray, seed: int, n_folds: int) -> float:
    """Balanced accuracy of the out-of-fold embedding head (a linear probe) on these features."""
    from curato.models.probes import linear_probe_accuracy

    return linear_probe_accuracy(np.asarray(features, dtype=np.float32), labels, n_folds=n_folds,
                                 seed=seed).balanced_accuracy


def _thumbnail_test(thumbnails: Mapping[str, np.ndarray] | None, labels: np.ndarray, rows: np.ndarray,
                    y: np.ndarray, chance: float, reference: float | None, seed: int,
                    params: ShortcutParams) -> dict[str, Any]:
    if not thumbnails:
        return {"ran": False, "why": "no thumbnails stored; re-run `curato ingest` to compute them"}
    result: dict[str, Any] = {"ran": True, "chance": round(chance, 4), "full_image": reference}
    for name, features in thumbnails.items():
        result[name] = round(_head_accuracy(np.asarray(features)[rows], y, seed, params.n_folds), 4)
    return result


def _background_test(background: tuple[np.ndarray, np.ndarray, np.ndarray], labels: np.ndarray, chance: float,
                     seed: int, params: ShortcutParams) -> dict[str, Any]:
    from scipy import stats
    rows, blanked, full = (np.asarray(a) for a in background)
    y = labels[rows]
    if len(rows) < 2 * params.n_folds or np.unique(y).size < 2:
        return {"ran": False, "why": "too few labeled samples for the background-only test"}
    background_accuracy = _head_accuracy(blanked, y, seed, params.n_folds)
    full_accuracy = _head_accuracy(full, y, seed, params.n_folds)
    share = (background_accuracy - chance) / max(full_accuracy - chance, 1e-9)
    # Balanced accuracy is a mean of per-class recalls; with near-balanced classes the count of hits
    # behaves like a binomial around chance, which is what the test assumes.
    hits = round(background_accuracy * len(rows))
    p_value = float(stats.binomtest(hits, len(rows), chance, alternative="greater").pvalue)
    return {"ran": True, "samples": len(rows), "background_only": round(background_accuracy, 4),
            "full_image": round(full_accuracy, 4), "chance": round(chance, 4), "share_of_signal": round(share, 4),
            "p_value": p_value, "flagged": bool(p_value <= params.alpha and share >= params.share_flag)}


def _finding(ids: np.ndarray, labels: np.ndarray, cues: np.ndarray, cue_columns: Sequence[str], rows: np.ndarray,
             y: np.ndarray, codes: np.ndarray, cue_rows: list[dict[str, Any]], tests: dict[str, Any],
             names: list[str], chance: float, reference: float | None, params: ShortcutParams,
             categories: Mapping[str, Sequence[str]] | None) -> Finding:
    n = len(ids)
    flagged_cues = [r for r in cue_rows if r["flagged"]]
    background_flag = bool(tests.get("background_only", {}).get("flagged"))
    flagged = np.zeros(n, dtype=bool)
    scores = np.zeros(n)
    breakdown: list[dict[str, Any]] = []
    examples: dict[str, dict[str, list[str]]] = {}
    column_index = {name: j for j, name in enumerate(cue_columns)}
    # Explain each flagged cue by its strongest single column (a group's best member).
    explained = []
    for row in flagged_cues:
        column = max(row["columns"], key=lambda c: next((r["balanced_accuracy"] for r in cue_rows
                                                         if r["cue"] == c), 0.0))
        if column not in explained:
            explained.append(column)
    one_class: list[dict[str, Any]] = []
    named_pairs: set[tuple[str, str]] = set()  # (column, class) the one-class test names
    for column in explained[:params.cues_explained]:
        j = column_index[column]
        per_class = []
        # A cue flagged for the whole label flags the samples of every class it separates; a one-class cue
        # only those of the classes it singles out.
        carriers = [r for r in flagged_cues if column in r["columns"]]
        every_class = any(r.get("whole_label") for r in carriers)
        named = {c["class"] for r in carriers for c in r.get("classes", [])}
        named_pairs |= {(column, name) for name in named}
        for klass in np.unique(y):
            interval = _class_interval(codes[:, j], cues[rows, j], y, int(klass), column,
                                       (categories or {}).get(column))
            per_class.append({"class": names[klass], "column": column, **interval})
            values = cues[:, j]
            in_range = np.isnan(values) if interval["missing"] else np.zeros(n, dtype=bool)
            if interval["low"] is not None:
                in_range |= (values >= interval["low"]) & (values <= interval["high"])
            inside = in_range & (labels == klass)
            if interval["share_of_class"] - interval["share_of_others"] >= params.range_flag and (
                    every_class or names[klass] in named):
                flagged |= inside
                scores = np.maximum(scores, np.where(inside, interval["share_of_class"], 0.0))
            if names[klass] in named and not any(entry["class"] == names[klass] for entry in one_class):
                one_class.append(_side_by_side(ids, labels, int(klass), in_range, names, column, interval,
                                               params.examples_per_class))
        per_class.sort(key=lambda r: -(r["share_of_class"] - r["share_of_others"]))
        breakdown += per_class
        examples[column] = _examples_by_cue(ids, labels, cues[:, j], names, params.examples_per_class)
    if flagged_cues or background_flag:
        shares = [max(r["share_of_signal"] or 0.0, max((c["gain"] for c in r.get("classes", [])), default=0.0))
                  for r in flagged_cues]
        if background_flag:
            shares.append(tests["background_only"]["share_of_signal"])
        strongest = max(shares)
        severity = "high" if strongest >= params.share_high else "medium"
        parts = [_cue_sentence(r, chance, reference, params.named_in_message)
                 for r in flagged_cues[:params.named_in_message]]
        if background_flag:
            b = tests["background_only"]
            parts.append(f"the background alone predicts it with {b['background_only']:.2f} (whole picture "
                         f"{b['full_image']:.2f})")
        message = "possible shortcut: " + "; ".join(parts)
        if breakdown:  # the example sentence: a class the cue names, when it names any
            top = next((r for r in breakdown if (r["column"], r["class"]) in named_pairs), breakdown[0])
            texts = top["column"] in TEXT_COLUMNS
            phrase = top["text"] if texts and top["column"] in TEXT_CATEGORICAL else f"have {top['text']}"
            message += (f". {top['share_of_class']:.0%} of '{top['class']}' {'texts' if texts else 'images'} "
                        f"{phrase}, vs {top['share_of_others']:.0%} of the others")
        if one_class:
            message += f". {_advice(one_class[0]['column'])}"
    else:
        severity = "none"
        best = cue_rows[0] if cue_rows else None
        message = "no cue outside the object carries a large share of the label signal"
        if best is not None:
            message += (f" (strongest: {best['cue'].removeprefix('group:')}, balanced accuracy "
                        f"{best['balanced_accuracy']:.2f}, chance {chance:.2f})")
    summary = {"cues_tested": len(cue_rows), "cues_flagged": len(flagged_cues), "chance": round(chance, 4),
               "reference_balanced_accuracy": None if reference is None else round(reference, 4),
               "samples_used": len(rows), "permutations": params.permutations, "alpha": params.alpha,
               "share_flag": params.share_flag}
    evidence = {"cues": cue_rows, "per_class": breakdown, "examples": examples, "tests": tests,
                "one_class": one_class}
    return Finding(check="shortcuts", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=scores, summary=summary, evidence=evidence)


ONE_CLASS_ADVICE = ("What to do: collect images of that class without the cue (and of the others with it), crop "
                    "or mask the region that carries it, or augment it away (colour jitter, random frames, "
                    "re-encoding, rescaling), then audit again")
TEXT_ONE_CLASS_ADVICE = ("What to do: collect texts of that class without the cue (and of the others with it), strip "
                         "what the source added (signature phrases, links, markup) or repair the encoding before "
                         "training, then audit again")


def _advice(column: str) -> str:
    return TEXT_ONE_CLASS_ADVICE if column in TEXT_COLUMNS else ONE_CLASS_ADVICE


def _text_cue_words(column: str, shown: Sequence[str]) -> str:
    """A categorical text cue in words, as a verb phrase: "start with 'ADVERTISEMENT:'", "are in french"."""
    quoted = " or ".join(f"'{value}'" for value in shown if value)
    if column == "language":
        return f"are in {' or '.join(shown)}"
    where = "start" if column == "boilerplate_prefix" else "end"
    if not quoted:
        return f"{where} with no phrase common in the collection"
    return f"{where} with {quoted}" + (" (or no common phrase)" if "" in shown else "")


def _side_by_side(ids: np.ndarray, labels: np.ndarray, klass: int, in_range: np.ndarray, names: list[str],
                  column: str, interval: Mapping[str, Any], count: int) -> dict[str, Any]:
    """A singled-out class's images with and without the cue, and other classes' images with it, for the
    report to show side by side."""
    members = labels == klass

    def pick(mask: np.ndarray) -> list[str]:
        found = np.flatnonzero(mask)
        chosen = found[np.unique(np.linspace(0, len(found) - 1, min(count, len(found))).astype(int))] if len(
            found) else found
        return [str(ids[i]) for i in chosen]

    return {"class": names[klass], "column": column, "cue": interval["text"],
            "share_of_class": round(float(interval["share_of_class"]), 4),
            "share_of_others": round(float(interval["share_of_others"]), 4),
            "with_cue": pick(members & in_range), "without_cue": pick(members & ~in_range),
            "others_with_cue": pick(~members & in_range), "advice": _advice(column)}


def _cue_sentence(row: dict[str, Any], chance: float, reference: float | None, named: int) -> str:
    name = row["cue"].removeprefix("group:")
    if row.get("classes"):
        classes = ", ".join(f"'{c['class']}'" for c in row["classes"][:named])
        return f"{name} singles out {classes}"
    whole = "" if reference is None else f", whole picture {reference:.2f}"
    accuracy = row["balanced_accuracy"]
    return f"{name} predicts the label with balanced accuracy {accuracy:.2f} (chance {chance:.2f}{whole})"


def _examples_by_cue(ids: np.ndarray, labels: np.ndarray, values: np.ndarray, names: list[str],
                     per_class: int) -> dict[str, list]:
    """Per class, ``per_class`` sample ids spread from the lowest to the highest cue value."""
    result = {}
    for klass in np.unique(labels):
        members = np.flatnonzero((labels == klass) & np.isfinite(values))
        if not members.size:
            continue
        ordered = members[np.argsort(values[members], kind="stable")]
        picks = ordered[np.unique(np.linspace(0, ordered.size - 1, per_class).astype(int))]
        result[names[klass]] = [[str(ids[i]), round(float(values[i]), 4)] for i in picks]
    return result
