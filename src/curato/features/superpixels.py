"""Superpixels for the mask tools: one click paints a whole segment instead of one brush disc.

``superpixels(image, n_segments=...)`` returns an (H, W) int32 map with labels ``0..S-1``; every
label is one 4-connected region and together they cover the image. ``superpixel_levels`` gives the
three granularities the app switches between (coarse, medium, fine), with counts scaled to the
image's area so a 4k photo gets segments of the same size in pixels as a VGA one.

Methods (all scikit-image, nothing that needs a build from source):

- ``slic``: scikit-image SLIC at its defaults (k-means in Lab + position, 10 iterations). The
  reference.
- ``slic-half``: the same SLIC on the image downscaled 2x (area-averaged), 5 iterations, labels
  upsampled by nearest neighbour. Much faster; boundaries are placed on a half-resolution grid.
- ``slic-zero``: SLICO (adaptive compactness per segment).
- ``felzenszwalb``: graph-based merging; the count is steered by its ``scale`` (found by bisection).
- ``watershed``: compact watershed on the Sobel gradient from a grid of markers.

The default (``DEFAULT_METHOD``) was chosen by boundary recall at equal segment counts and time per
640x480 / 1024x768 image, measured by ``benchmarks/superpixel_effort.py``; the numbers and the
reasoning are in docs/benchmarks.md ("Superpixels and pre-labels").

The cache keeps one ``.npz`` per (content hash, level) under ``<workspace>/cache/superpixels``; a
changed file has a new content hash, so it misses and is recomputed, and the stale file is removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from curato.errors import InputError

METHODS = ("slic", "slic-half", "slic-zero", "felzenszwalb", "watershed")
DEFAULT_METHOD = "slic-half"
DEFAULT_COMPACTNESS = 10.0
# Pixels per segment at each level: a 640x480 image gets about 100 / 400 / 1600 segments.
LEVEL_AREAS = {"coarse": 3072, "medium": 768, "fine": 192}
# Bump when what a method returns changes, so cached maps from older code are recomputed.
CACHE_VERSION = 1


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"superpixels need an (H, W, 3) image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def contiguous(labels: np.ndarray) -> np.ndarray:
    """Relabel so every label is one 4-connected region, numbered 0..S-1 (int32)."""
    from skimage.measure import label

    return (label(labels.astype(np.int64) + 1, background=0, connectivity=1) - 1).astype(np.int32)


def _half_slic(image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    from skimage.segmentation import slic

    height, width = image.shape[:2]
    h2, w2 = height // 2, width // 2
    if h2 < 8 or w2 < 8:
        return slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
    small = image[: 2 * h2, : 2 * w2].astype(np.float32).reshape(h2, 2, w2, 2, 3).mean((1, 3))
    labels = slic(small, n_segments=n_segments, compactness=compactness, max_num_iter=5, start_label=0)
    rows = np.minimum(np.arange(height) // 2, h2 - 1)
    cols = np.minimum(np.arange(width) // 2, w2 - 1)
    return labels[rows[:, None], cols[None, :]]


def _felzenszwalb(image: np.ndarray, n_segments: int) -> np.ndarray:
    from skimage.segmentation import felzenszwalb

    area = image.shape[0] * image.shape[1]
    low, high = 1.0, 4000.0
    best = felzenszwalb(image, scale=100, sigma=0.8, min_size=max(4, area // (4 * n_segments)))
    for _ in range(8):  # bisection on log(scale): larger scale, fewer segments
        scale = float(np.sqrt(low * high))
        labels = felzenszwalb(image, scale=scale, sigma=0.8, min_size=max(4, area // (4 * n_segments)))
        count = int(labels.max()) + 1
        if abs(count - n_segments) < abs(int(best.max()) + 1 - n_segments):
            best = labels
        if count > n_segments:
            low = scale
        else:
            high = scale
    return best


def _watershed(image: np.ndarray, n_segments: int) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    gradient = sobel(rgb2gray(image))
    return watershed(gradient, markers=n_segments, compactness=0.001) - 1


def superpixels(
    image: np.ndarray,
    *,
    n_segments: int,
    compactness: float = DEFAULT_COMPACTNESS,
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """(H, W) int32 superpixel labels 0..S-1 (each one 4-connected region) of an (H, W, 3) uint8 image.

    Deterministic: the same image and options give the same map. ``compactness`` applies to the SLIC
    methods (higher: rounder, less boundary-following segments).
    """
    if method not in METHODS:
        raise InputError(f"unknown superpixel method {method!r}; choose one of {', '.join(METHODS)}")
    if n_segments < 1:
        raise InputError(f"n_segments must be at least 1, got {n_segments}")
    image = _check_image(image)
    from skimage.segmentation import slic

    if method == "slic":
        labels = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
    elif method == "slic-half":
        labels = _half_slic(image, n_segments, compactness)
    elif method == "slic-zero":
        labels = slic(image, n_segments=n_segments, slic_zero=True, start_label=0)
    elif method == "felzenszwalb":
        labels = _felzenszwalb(image, n_segments)
    else:
        labels = _watershed(image, n_segments)
    return contiguous(labels)


def level_counts(shape: tuple[int, ...]) -> dict[str, int]:
    """Segments per level for an image of this shape (area / pixels per segment, at least 4)."""
    area = int(shape[0]) * int(shape[1])
    return {level: max(4, round(area / pixels)) for level, pixels in LEVEL_AREAS.items()}


def superpixel_levels(
    image: np.ndarray, levels: dict[str, int] | None = None, *, method: str = DEFAULT_METHOD
) -> dict[str, np.ndarray]:
    """Superpixel maps at each level (default: coarse, medium, fine with counts scaled to the area)."""
    counts = levels if levels is not None else level_counts(np.asarray(image).shape)
    return {level: superpixels(image, n_segments=count, method=method) for level, count in counts.items()}


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels whose right or lower neighbour has another label."""
    edges = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    edges[:, :-1] |= horizontal
    edges[:-1, :] |= vertical
    return edges


def boundary_recall(superpixel_map: np.ndarray, reference: np.ndarray, *, tolerance: int = 2) -> float:
    """Share of the reference mask's boundary pixels within ``tolerance`` px (chessboard) of a segment boundary."""
    from scipy.ndimage import binary_dilation

    truth = boundary_map(reference)
    total = int(truth.sum())
    if total == 0:
        return 1.0
    near = binary_dilation(boundary_map(superpixel_map), structure=np.ones((3, 3), bool), iterations=tolerance)
    return float((truth & near).sum() / total)


def superpixel_cache(workspace_root: str | Path, content_hash: str, level: str) -> Path:
    """Where the superpixel map of this content at this level is cached (the file may not exist)."""
    safe = "".join(c for c in str(content_hash) if c.isalnum() or c in "-_")
    if not safe or safe != str(content_hash) or level not in LEVEL_AREAS:
        raise InputError(f"bad superpixel cache key: hash {content_hash!r}, level {level!r}")
    return Path(workspace_root) / "cache" / "superpixels" / f"{safe}-{level}.npz"


def cached_superpixels(
    workspace_root: str | Path,
    content_hash: str,
    image: np.ndarray,
    level: str,
    *,
    method: str = DEFAULT_METHOD,
    stale_hash: str | None = None,
) -> np.ndarray:
    """Load this content's map at ``level`` from the cache, or compute and store it.

    A file is reused only if its stored hash, shape, method and version match; ``stale_hash`` (the
    sample's previous content hash, when the caller knows it) has its files removed.
    """
    path = superpixel_cache(workspace_root, content_hash, level)
    if stale_hash and stale_hash != content_hash:
        for old_level in LEVEL_AREAS:
            superpixel_cache(workspace_root, stale_hash, old_level).unlink(missing_ok=True)
    shape = np.asarray(image).shape[:2]
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                labels = stored["labels"]
                ok = (
                    str(stored["content_hash"]) == str(content_hash)
                    and str(stored["method"]) == method
                    and int(stored["version"]) == CACHE_VERSION
                    and labels.shape == shape
                )
            if ok:
                return labels.astype(np.int32, copy=False)
        except (OSError, KeyError, ValueError):
            pass  # a damaged or foreign file: recompute and overwrite it
    labels = superpixels(image, n_segments=level_counts(shape)[level], method=method)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(
                stream, labels=labels, content_hash=np.str_(content_hash), method=np.str_(method),
                version=np.int64(CACHE_VERSION),
            )
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return labels
