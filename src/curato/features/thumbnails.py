"""Thumbnails kept from the scan, and the registered similarity of two thumbnails.

The single decode pass of ingest (:mod:`curato.features.scan`) keeps two small area-resampled copies
of every image, stored together as one uint8 row of :data:`THUMBNAIL_COLUMNS` values in the feature
set ``thumbnails``:

* a colour thumbnail, ``COLOUR_SIDE x COLOUR_SIDE`` (8 x 8) RGB, pixel-interleaved (grey images
  repeat their grey level in the three channels) -- the "does a tiny picture predict the label?"
  shortcut test reads it;
* a grey thumbnail, ``GREY_SIDE x GREY_SIDE`` (24 x 24) -- the near-duplicate check compares two
  pictures with it after registering one onto the other (:func:`registered_similarity`).

Both ignore the aspect ratio: an image of any shape becomes a square.
"""

from __future__ import annotations

import numpy as np

from curato.errors import InputError
from curato.features.properties import COLOUR_SIDE, GREY_SIDE, THUMBNAIL_COLUMNS

THUMBNAIL_LAYOUT = f"rgb{COLOUR_SIDE}x{COLOUR_SIDE}+grey{GREY_SIDE}x{GREY_SIDE}"
# Registration grid: the second picture is resampled at these scales about the centre and these
# shifts (in grey-thumbnail pixels), independently per axis, and the best correlation counts.
REGISTRATION_SCALES = (0.93, 1.0, 1.07)
REGISTRATION_SHIFTS = (-1.0, 0.0, 1.0)
# Pixels left out at each side of the first picture, so every shifted/scaled sample stays inside.
REGISTRATION_MARGIN = 3

__all__ = [
    "COLOUR_SIDE",
    "GREY_SIDE",
    "THUMBNAIL_COLUMNS",
    "THUMBNAIL_LAYOUT",
    "colour_thumbnails",
    "grey_thumbnails",
    "registered_similarity",
]


def _checked(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != THUMBNAIL_COLUMNS:
        raise InputError(f"thumbnails: expected rows of {THUMBNAIL_COLUMNS} values ({THUMBNAIL_LAYOUT}), "
                         f"got shape {rows.shape}; re-run `curato ingest` to rebuild them")
    return rows


def colour_thumbnails(rows: np.ndarray, side: int = COLOUR_SIDE) -> np.ndarray:
    """(n, side, side, 3) float32 colour thumbnails on the 0..255 scale; ``side`` must divide 8 (8, 4, 2, 1)."""
    rows = _checked(rows)
    if side < 1 or COLOUR_SIDE % side:
        raise InputError(f"thumbnail side {side}: use a divisor of {COLOUR_SIDE}")
    colour = rows[:, :COLOUR_SIDE * COLOUR_SIDE * 3].astype(np.float32).reshape(-1, COLOUR_SIDE, COLOUR_SIDE, 3)
    factor = COLOUR_SIDE // side
    return colour.reshape(-1, side, factor, side, factor, 3).mean(axis=(2, 4))


def grey_thumbnails(rows: np.ndarray) -> np.ndarray:
    """(n, GREY_SIDE, GREY_SIDE) float32 grey thumbnails on the 0..255 scale."""
    rows = _checked(rows)
    return rows[:, COLOUR_SIDE * COLOUR_SIDE * 3:].astype(np.float32).reshape(-1, GREY_SIDE, GREY_SIDE)


def _sampling_matrices(side: int) -> np.ndarray:
    """(variants, core, side) linear-interpolation rows: sample a line at scale s and shift d about its centre."""
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN, dtype=np.float64)
    centre = (side - 1) / 2
    matrices = []
    for scale in REGISTRATION_SCALES:
        for shift in REGISTRATION_SHIFTS:
            position = np.clip(centre + scale * (core - centre) + shift, 0, side - 1)
            low = np.floor(position).astype(int)
            high = np.minimum(low + 1, side - 1)
            weight = position - low
            matrix = np.zeros((core.size, side))
            matrix[np.arange(core.size), low] += 1 - weight
            matrix[np.arange(core.size), high] += weight
            matrices.append(matrix)
    return np.asarray(matrices, dtype=np.float32)


def registered_similarity(grey: np.ndarray, first: np.ndarray, second: np.ndarray, *,
                          chunk: int = 4096) -> np.ndarray:
    """Best correlation of picture ``first[i]`` with picture ``second[i]`` over a small registration grid.

    ``grey``: (n, side, side) grey thumbnails (:func:`grey_thumbnails`). The central window of the
    first picture (a ``REGISTRATION_MARGIN`` border left out) is compared with the second picture
    resampled at 3 scales x 3 shifts per axis (81 placements); the result is the highest Pearson
    correlation, in [-1, 1]. Slightly shifted, cropped or rescaled copies of one picture come out
    near 1 even where their embeddings and perceptual hashes have drifted; correlation also ignores
    brightness and contrast changes.

    Cost: the spread of each placement of a second picture is computed once per distinct picture;
    per pair, the vertical resampling is folded into the first picture's window and the horizontal one
    applied to the second picture, and the two meet in a (9 x 9) matrix of placements.
    """
    grey = np.asarray(grey, dtype=np.float32)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if grey.ndim != 3 or grey.shape[1] != grey.shape[2] or grey.shape[1] <= 2 * REGISTRATION_MARGIN + 1:
        raise InputError(f"grey thumbnails must be (n, side, side) with side > {2 * REGISTRATION_MARGIN + 1}, "
                         f"got {grey.shape}")
    side = grey.shape[1]
    inner = slice(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN)
    matrices = _sampling_matrices(side)  # (v, c, side)
    placements = matrices.shape[0] ** 2
    pictures, position = np.unique(second, return_inverse=True)
    spread = np.empty((pictures.size, placements), dtype=np.float32)
    # Sum of squares of placement (u, v) without building it: sum over h, g of (W_u^T W_u)[h, g] (R_v R_v^T)[h, g],
    # where R_v is the picture resampled horizontally.
    gram = np.einsum("uch,ucg->uhg", matrices, matrices)
    row_weights = matrices.sum(axis=1)  # (u, side): how much each source row adds to a placement's sum
    count = (side - 2 * REGISTRATION_MARGIN) ** 2
    for start in range(0, pictures.size, chunk):
        b = grey[pictures[start:start + chunk]]
        right = np.einsum("vkw,mhw->mvhk", matrices, b, optimize=True)
        squares = np.einsum("uhg,mvhg->muv", gram, np.matmul(right, right.transpose(0, 1, 3, 2)), optimize=True)
        total = np.einsum("uh,mvh->muv", row_weights, right.sum(axis=3), optimize=True)
        variance = np.maximum(squares - total ** 2 / count, 0.0)
        spread[start:start + len(b)] = np.sqrt(variance).reshape(len(b), placements)
    out = np.empty(first.size, dtype=np.float64)
    for start in range(0, first.size, chunk):
        a = grey[first[start:start + chunk]][:, inner, inner]
        a = a - a.mean(axis=(1, 2), keepdims=True)
        a /= np.linalg.norm(a.reshape(len(a), -1), axis=1)[:, None, None] + 1e-6
        b = grey[second[start:start + chunk]]
        left = np.einsum("uch,mck->muhk", matrices, a, optimize=True)  # (m, u, side, c)
        right = np.einsum("vkw,mhw->mvhk", matrices, b, optimize=True)  # (m, v, side, c)
        numerator = np.einsum("muhk,mvhk->muv", left, right, optimize=True).reshape(len(a), placements)
        correlation = numerator / (spread[position[start:start + chunk]] + 1e-6)
        out[start:start + chunk] = correlation.max(axis=1)
    return np.clip(out, -1.0, 1.0)
