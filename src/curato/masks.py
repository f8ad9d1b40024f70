"""Pixel masks as data: COCO run-length encoding, polygons, label maps and indexed PNGs.

Pure functions over NumPy arrays (plus two small PNG readers/writers), used by ingest, export, the catalog's
mask rows and the ``masks`` audit check. Conventions:

- A *binary mask* is a 2-D bool array (h, w). A *label map* is a 2-D integer array: 0 = background,
  1..K = classes (the order of the class names given beside it).
- RLE follows COCO: the mask is read in column-major (Fortran) order and ``counts`` alternate runs of 0s and
  1s, starting with 0s (a leading 0 when the first pixel is set). ``{"size": [h, w], "counts": [...]}`` is the
  uncompressed form; ``counts`` as a string is the compressed form COCO tools write. The compressed codec is
  written here from the published format description (pycocotools' ``maskApi``): each count after the second
  is stored as its difference from the count two places before, and every value is written in 5-bit groups,
  least significant first, as characters ``48 + group`` with bit 0x20 set while more groups follow; the last
  group's bit 0x10 carries the sign.
- Polygons are COCO's ``[x1, y1, x2, y2, ...]`` lists (one or more per object), filled with
  ``skimage.draw.polygon`` at pixel centres; the union of an object's polygons is its mask. (pycocotools
  rasterises edges slightly differently, so a polygon's area may differ from its COCO ``area`` by a pixel row.)
- ``bbox`` is COCO's ``[x, y, width, height]`` of the set pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import InputError

MAX_CLASSES = 65535
"""Largest class index a label map may hold (PNG label maps hold at most 255: mode ``P`` or ``L``)."""


# ---- run-length encoding ---------------------------------------------------------------------------------------


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO ``counts`` of a binary mask (column-major runs, 0s first)."""
    binary = _binary(mask)
    flat = binary.ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return [int(c) for c in counts]


def encode_rle(mask: np.ndarray, *, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE of a binary mask: ``{"size": [h, w], "counts": str}`` (compressed, as COCO files carry it) or
    ``counts`` as a list of ints with ``compressed=False``."""
    binary = _binary(mask)
    counts = rle_counts(binary)
    return {"size": [int(binary.shape[0]), int(binary.shape[1])],
            "counts": compress_counts(counts) if compressed else counts}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The binary mask (h, w) of a COCO RLE, compressed (``counts`` a string) or not (a list of ints)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"an RLE needs 'size': [h, w] and 'counts' ({error}); fix the segmentation") from error
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = decompress_counts(counts) if isinstance(counts, str) else np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise InputError("RLE counts must be non-negative integers")
    total = int(runs.sum())
    if total != height * width:
        raise InputError(f"RLE counts cover {total} pixels but size {height}x{width} has {height * width}; "
                         f"the segmentation is damaged")
    values = np.arange(runs.size, dtype=np.int64) % 2 == 1  # runs alternate 0s, 1s, 0s, ...
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")


def compress_counts(counts: Sequence[int]) -> str:
    """COCO's compressed string form of uncompressed ``counts``."""
    out = bytearray()
    values = [int(v) for v in counts]
    for index, count in enumerate(values):
        value = count - values[index - 2] if index > 2 else count
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: a negative value ends at -1
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(group + 48)
    return out.decode("ascii")


def decompress_counts(text: str) -> np.ndarray:
    """Uncompressed counts (int64 array) of COCO's compressed string form."""
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    position, length = 0, len(data)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise InputError("compressed RLE counts end in the middle of a number; the segmentation is damaged")
            group = data[position] - 48
            if not 0 <= group < 64:
                raise InputError(f"compressed RLE counts hold {chr(data[position])!r}, not a count character")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return np.asarray(counts, dtype=np.int64)


# ---- polygons, area, box -----------------------------------------------------------------------------------------


def polygon_mask(polygons: Sequence[Sequence[float]] | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The binary mask (h, w) = ``shape`` of COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (their union)."""
    from skimage.draw import polygon as fill_polygon

    mask = np.zeros(shape, dtype=bool)
    if isinstance(polygons, np.ndarray) and polygons.ndim == 1:
        polygons = [polygons]
    elif polygons and not isinstance(polygons[0], Sequence | np.ndarray):
        polygons = [polygons]  # one flat polygon
    for number, points in enumerate(polygons):
        coords = np.asarray(points, dtype=np.float64).reshape(-1)
        if coords.size < 6 or coords.size % 2:
            raise InputError(f"polygon {number}: needs x, y pairs of at least 3 points, found {coords.size} numbers")
        xs, ys = coords[0::2], coords[1::2]
        rows, cols = fill_polygon(ys, xs, shape=shape)
        mask[rows, cols] = True
    return mask


def segmentation_mask(segmentation: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The binary mask of a COCO ``segmentation``: an RLE dict (compressed or not) or polygons (``shape`` needed)."""
    if isinstance(segmentation, Mapping):
        return decode_rle(segmentation)
    if shape is None:
        raise InputError("a polygon segmentation needs the image's size to be drawn")
    return polygon_mask(segmentation, shape)


def mask_area(mask: np.ndarray) -> int:
    """Number of set pixels."""
    return int(np.count_nonzero(mask))


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of the set pixels (``[0, 0, 0, 0]`` for an empty mask)."""
    binary = _binary(mask)
    rows = np.flatnonzero(binary.any(axis=1))
    cols = np.flatnonzero(binary.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


# ---- label maps --------------------------------------------------------------------------------------------------


def split_label_map(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class indices present, sorted; their binary masks (k, h, w)) of a label map; background 0 is left out."""
    labels = _label_map(label_map)
    present = np.unique(labels)
    present = present[present != 0]
    masks = labels[None, :, :] == present[:, None, None]
    return present.astype(np.int64), masks


def merge_masks(masks: Sequence[np.ndarray] | np.ndarray, classes: Sequence[int] | np.ndarray,
                shape: tuple[int, int] | None = None) -> np.ndarray:
    """A label map from per-class binary masks and their class indices (1..K); where masks overlap the later one
    wins. ``shape`` is needed only when there are no masks. Returns uint8 when every index fits, else uint16."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(masks) != classes.size:
        raise InputError(f"{len(masks)} masks but {classes.size} class indices")
    if classes.size and (classes.min() < 1 or classes.max() > MAX_CLASSES):
        raise InputError(f"class indices must be 1..{MAX_CLASSES} (0 is the background)")
    if shape is None:
        if not len(masks):
            raise InputError("no masks and no shape: the label map's size is unknown")
        shape = _binary(masks[0]).shape
    dtype = np.uint8 if not classes.size or classes.max() <= 255 else np.uint16
    label_map = np.zeros(shape, dtype=dtype)
    for mask, index in zip(masks, classes.tolist(), strict=True):
        binary = _binary(mask)
        if binary.shape != tuple(shape):
            raise InputError(f"a mask of shape {binary.shape} does not fit a label map of shape {tuple(shape)}")
        label_map[binary] = index
    return label_map


# ---- indexed PNGs ------------------------------------------------------------------------------------------------


def read_label_png(path: str | Path) -> np.ndarray:
    """A label map from an indexed PNG (mode ``P``: palette indices; or ``L``: grey values), as uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("P", "L", "1"):
                raise InputError(f"{path}: a mask PNG must be indexed (mode P) or greyscale (mode L), found mode "
                                 f"{mode}; write class indices 0..K (0 = background)")
            return np.asarray(image.convert("L") if mode == "1" else image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"{path}: cannot be read as a PNG mask ({error})") from error


def write_label_png(path: str | Path, label_map: np.ndarray, *, palette: Sequence[int] | None = None) -> None:
    """Write a label map (values 0..255) as an indexed PNG (mode ``P``) with a distinct colour per class;
    ``palette``: flat RGB triples to use instead."""
    from PIL import Image

    labels = _label_map(label_map)
    if labels.size and labels.max() > 255:
        raise InputError(f"{path}: class index {int(labels.max())} does not fit an indexed PNG (at most 255)")
    image = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    image.putpalette(list(palette) if palette is not None else default_palette())
    image.save(path, format="PNG", optimize=False)


def default_palette() -> list[int]:
    """Flat RGB triples for 256 indices: black background, then the PASCAL VOC colour scheme."""
    indices = np.arange(256)
    colour = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (indices >> (shift * 3 + channel)) & 1
            colour[:, channel] |= bit << (7 - shift)
    return colour.reshape(-1).tolist()


# ---- helpers -----------------------------------------------------------------------------------------------------


def _binary(mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(f"a mask must be 2-D (h, w), found shape {array.shape}")
    return array if array.dtype == bool else array != 0


def _label_map(label_map: np.ndarray) -> np.ndarray:
    array = np.asarray(label_map)
    if array.ndim != 2:
        raise InputError(f"a label map must be 2-D (h, w), found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if array.dtype == bool:
            return array.astype(np.uint8)
        raise InputError(f"a label map must hold integer class indices, found {array.dtype}")
    if array.size and array.min() < 0:
        raise InputError("a label map must not hold negative class indices")
    return array


__all__ = ["compress_counts", "decode_rle", "decompress_counts", "default_palette", "encode_rle", "mask_area",
           "mask_bbox", "merge_masks", "polygon_mask", "read_label_png", "rle_counts", "segmentation_mask",
           "split_label_map", "write_label_png"]
