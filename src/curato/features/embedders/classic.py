"""``classic``: a weight-free image descriptor for machines without torch and for quick looks.

Each image is stretched to 64x64 (PIL antialiased bilinear; the whole image, like the CNN
embedders) and described by three blocks, each L2-normalised, concatenated and scaled by
1/sqrt(3) so the whole vector has unit length:

* colour (128): joint HSV histogram, 8 hue x 4 saturation x 4 value bins, as square-rooted
  frequencies (the Hellinger mapping, so Euclidean/cosine distances compare histograms sensibly).
* shape (324): HOG on the luminance, 9 unsigned orientations, 16x16-pixel cells, 2x2-cell blocks
  with L2-Hys normalisation: the same definition as ``skimage.feature.hog`` with those arguments.
* texture (20): histograms of rotation-invariant uniform LBP codes (10 each) at two radii,
  (P=8, R=1) and (P=8, R=2): the same codes as ``skimage.feature.local_binary_pattern`` with
  ``method="uniform"``. Eight points rather than sixteen at R=2 halves the cost (each
  off-grid point is a bilinear interpolation of the whole image).

Dimension 472. HOG and LBP are computed here with numpy over the whole batch at once rather than
one ``skimage`` call per image (several milliseconds each on a 64 px image): the tests check that
both agree with skimage's functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from curato.features.embedders._common import as_rgb_uint8, l2_normalise
from curato.features.embedders.base import Embedder

SIZE = 64
HUE_BINS, SAT_BINS, VAL_BINS = 8, 4, 4
HOG_ORIENTATIONS, HOG_CELL, HOG_BLOCK = 9, 16, 2
LBP_SCALES = ((8, 1), (8, 2))
CHUNK = 32
# Bump when any block's definition changes: it is part of settings(), so stored vectors go stale.
VERSION = 1

_COLOUR_DIM = HUE_BINS * SAT_BINS * VAL_BINS
_HOG_DIM = (SIZE // HOG_CELL - HOG_BLOCK + 1) ** 2 * HOG_BLOCK**2 * HOG_ORIENTATIONS
_LBP_DIM = sum(points + 2 for points, _ in LBP_SCALES)
DIM = _COLOUR_DIM + _HOG_DIM + _LBP_DIM


class ClassicEmbedder(Embedder):
    """Colour histogram + HOG + LBP of a 64x64 resize; 472-d, unit length, float32."""

    name = "classic"
    modality = "image"
    batch_size = 256

    @property
    def dim(self) -> int:
        """472: 128 colour + 324 HOG + 20 LBP."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """Every parameter of the three blocks and the resize."""
        return {
            "embedder": self.name,
            "version": VERSION,
            "resize": f"stretch to {SIZE}x{SIZE}, PIL bilinear",
            "colour": f"HSV joint histogram {HUE_BINS}x{SAT_BINS}x{VAL_BINS}, sqrt",
            "hog": {"orientations": HOG_ORIENTATIONS, "cell": HOG_CELL, "block": HOG_BLOCK, "norm": "L2-Hys"},
            "lbp": {"method": "uniform", "scales": [list(scale) for scale in LBP_SCALES]},
            "dim": DIM,
        }

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), 472) float32 unit vectors for HxWx3 uint8 RGB images (HxW grey accepted)."""
        if len(items) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        pixels = np.stack([_resize(as_rgb_uint8(item, index, self.name)) for index, item in enumerate(items)])
        # Slices of CHUNK images keep the float64 intermediates of HOG and LBP within the CPU cache.
        parts = [_describe(pixels[start:start + CHUNK]) for start in range(0, len(pixels), CHUNK)]
        return np.concatenate(parts).astype(np.float32)


def _describe(pixels: np.ndarray) -> np.ndarray:
    grey = luminance(pixels).astype(np.float64)
    blocks = [colour_histogram(pixels), hog_features(grey), lbp_histogram(grey)]
    return np.concatenate([l2_normalise(block) for block in blocks], axis=1) / np.sqrt(len(blocks))


def luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of (n, h, w, 3) uint8 RGB as uint8, rounded half up, in integer arithmetic."""
    weighted = pixels.astype(np.int32) @ np.array([299, 587, 114], dtype=np.int32)
    return ((weighted + 500) // 1000).astype(np.uint8)


def _resize(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (SIZE, SIZE):
        return image
    # reducing_gap first box-reduces very large images by an integer factor: far faster than a
    # full bilinear pass and indistinguishable at 64 px. The result depends only on the image.
    return np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR, reducing_gap=3.0))


def colour_histogram(pixels: np.ndarray) -> np.ndarray:
    """(n, 128) square-rooted joint HSV frequencies of (n, h, w, 3) uint8 RGB images.

    Bins are computed in exact integer arithmetic (no float HSV image): hue from the max channel
    and the chroma, saturation = chroma / max, value = max / 255, each floored into its bins.
    """
    # Contiguous planes and pairwise maximum: reducing over a length-3 last axis is ~10x slower.
    red, green, blue = (pixels[..., channel].astype(np.int32) for channel in range(3))
    high = np.maximum(np.maximum(red, green), blue)
    chroma = high - np.minimum(np.minimum(red, green), blue)
    # Hue in sixths of the circle is sector + (difference / chroma); keep it as one integer
    # numerator over chroma in [0, 6 * chroma).
    sixths = np.where(
        high == red, (green - blue) % (6 * np.maximum(chroma, 1)),
        np.where(high == green, 2 * chroma + blue - red, 4 * chroma + red - green),
    )
    safe = np.maximum(chroma, 1)
    hue = np.where(chroma == 0, 0, np.minimum(HUE_BINS * sixths // (6 * safe), HUE_BINS - 1))
    saturation = np.minimum(SAT_BINS * chroma // np.maximum(high, 1), SAT_BINS - 1)
    value = np.minimum(VAL_BINS * high // 256, VAL_BINS - 1)
    return _per_image_histogram((hue * SAT_BINS + saturation) * VAL_BINS + value, _COLOUR_DIM, sqrt=True)


def hog_features(grey: np.ndarray) -> np.ndarray:
    """(n, 324) HOG of (n, 64, 64) luminance images, equal to ``skimage.feature.hog(image,
    orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2), block_norm="L2-Hys")``."""
    n, height, width = grey.shape
    g_row = np.zeros_like(grey)
    g_col = np.zeros_like(grey)
    g_row[:, 1:-1, :] = grey[:, 2:, :] - grey[:, :-2, :]
    g_col[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    # Hard assignment to one of 9 equal bins, as skimage does (no interpolation between bins).
    bins = np.minimum((orientation // (180 / HOG_ORIENTATIONS)).astype(np.int64), HOG_ORIENTATIONS - 1)
    cells_row, cells_col = height // HOG_CELL, width // HOG_CELL
    cell_row = np.arange(height)[:, None] // HOG_CELL
    cell_col = np.arange(width)[None, :] // HOG_CELL
    cell = (cell_row * cells_col + cell_col)[None]
    index = (np.arange(n)[:, None, None] * (cells_row * cells_col) + cell) * HOG_ORIENTATIONS + bins
    cells = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=n * cells_row * cells_col * 9)
    cells = cells.reshape(n, cells_row, cells_col, HOG_ORIENTATIONS) / (HOG_CELL * HOG_CELL)
    blocks_row, blocks_col = cells_row - HOG_BLOCK + 1, cells_col - HOG_BLOCK + 1
    blocks = np.stack(
        [
            np.stack([cells[:, r:r + HOG_BLOCK, c:c + HOG_BLOCK, :] for c in range(blocks_col)], axis=1)
            for r in range(blocks_row)
        ],
        axis=1,
    )  # (n, blocks_row, blocks_col, 2, 2, 9)
    eps = 1e-5
    flat = blocks.reshape(n, blocks_row, blocks_col, -1)
    flat = flat / np.sqrt((flat**2).sum(-1, keepdims=True) + eps**2)
    flat = np.minimum(flat, 0.2)
    flat = flat / np.sqrt((flat**2).sum(-1, keepdims=True) + eps**2)
    return flat.reshape(n, -1)


def lbp_codes(grey: np.ndarray, points: int, radius: float) -> np.ndarray:
    """(n, h, w) rotation-invariant uniform LBP codes (0..points+1) of (n, h, w) float64 images,
    equal to ``skimage.feature.local_binary_pattern(image, points, radius, "uniform")``.

    Same sampling as skimage: neighbours on a circle (coordinates rounded to 5 decimals),
    bilinear interpolation with zeros outside the image, a neighbour >= centre sets its bit.
    """
    n, height, width = grey.shape
    angles = 2 * np.pi * np.arange(points, dtype=np.float64) / points
    offsets = np.round(np.stack([-radius * np.sin(angles), radius * np.cos(angles)], axis=1), 5)
    pad = int(np.ceil(radius)) + 1
    padded = np.pad(grey, ((0, 0), (pad, pad), (pad, pad)))
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    bits = np.empty((points, n, height, width), dtype=bool)
    for p, (row_offset, col_offset) in enumerate(offsets):
        # Per-row and per-column fractions computed as skimage does (from r + offset), so the
        # interpolated values, and hence every ">=" comparison, match it bit for bit.
        r, c = rows + row_offset, cols + col_offset
        r_lo, c_lo = np.floor(r), np.floor(c)
        dr = (r - r_lo)[:, None]
        dc = (c - c_lo)[None, :]
        r0, c0 = int(r_lo[0]) + pad, int(c_lo[0]) + pad
        r1, c1 = r0 + (1 if dr.any() else 0), c0 + (1 if dc.any() else 0)
        top_left = padded[:, r0:r0 + height, c0:c0 + width]
        top_right = padded[:, r0:r0 + height, c1:c1 + width]
        bottom_left = padded[:, r1:r1 + height, c0:c0 + width]
        bottom_right = padded[:, r1:r1 + height, c1:c1 + width]
        top = (1 - dc) * top_left + dc * top_right
        bottom = (1 - dc) * bottom_left + dc * bottom_right
        texture = (1 - dr) * top + dr * bottom
        bits[p] = texture - grey >= 0
    # Uniform patterns (at most two 0/1 transitions around the circle) are coded by their number
    # of ones; all others share the code points + 1.
    transitions = (bits != np.roll(bits, -1, axis=0)).sum(axis=0)
    return np.where(transitions <= 2, bits.sum(axis=0), points + 1)


def lbp_histogram(grey: np.ndarray) -> np.ndarray:
    """(n, 20) LBP code frequencies at both scales, each scale's histogram summing to one."""
    histograms = [
        _per_image_histogram(lbp_codes(grey, points, radius), points + 2, sqrt=False)
        for points, radius in LBP_SCALES
    ]
    return np.concatenate(histograms, axis=1)


def _per_image_histogram(codes: np.ndarray, bins: int, sqrt: bool) -> np.ndarray:
    """(n, bins) frequencies of integer codes per image, in one bincount over the whole batch."""
    n = codes.shape[0]
    flat = codes.reshape(n, -1)
    counts = np.bincount((flat + bins * np.arange(n)[:, None]).ravel(), minlength=n * bins)
    frequencies = counts.reshape(n, bins) / flat.shape[1]
    return np.sqrt(frequencies) if sqrt else frequencies
