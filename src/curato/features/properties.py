"""Numeric image properties and perceptual hashes, computed over many images at once.

Pure functions over uint8 arrays (``HxW`` grey or ``HxWx3`` RGB); no I/O. Images of the same shape
are stacked and every property is computed for the whole stack in a handful of NumPy calls, so the
cost per image is a few passes over its pixels, not Python loops.

Units and definitions of :data:`PROPERTY_COLUMNS` (``grey`` is Rec. 601 luma,
``0.299 R + 0.587 G + 0.114 B``; all "[0, 1]" values are fractions of the 0..255 range):

=====================  ==================================================================================
width, height          pixels of the original image (see ``original_sizes``)
aspect                 width / height
megapixels             width * height / 1e6
file_bytes             bytes of the stored file (NaN when not given)
bits_per_pixel         file_bytes * 8 / (width * height): how hard the file is compressed
jpeg_quality           IJG quality 1..100 estimated from the quantisation tables; NaN when not JPEG
brightness_mean        mean grey, [0, 1]
brightness_std         standard deviation of grey, [0, 1] (this is the RMS contrast)
contrast               robust Michelson contrast ``(p99 - p1) / (p99 + p1)`` of grey, where p1/p99 are the
                       1st/99th grey percentiles (percentiles, not min/max, so a few hot pixels do not
                       saturate it); 0 for an all-black image. [0, 1]
dynamic_range          (p99 - p1) / 255 of grey, [0, 1]; small for washed-out or nearly flat images
red_mean, green_mean,  channel means, [0, 1]
blue_mean
saturation_mean        mean HSV saturation ``(max - min) / max`` over channels (0 where max is 0), [0, 1]
colourfulness          Hasler–Süsstrunk M = sigma_rgyb + 0.3 * mu_rgyb on the 0..255 scale of the
                       paper (about 0 for grey, > 33 "moderately colourful", > 59 "quite colourful")
green_fraction         share of pixels whose hue lies in 75°..165° (green) with saturation >= 0.2 and
                       value >= 0.1, [0, 1]: a vegetation/background shortcut signal
sharpness              variance of the 4-neighbour Laplacian of grey on the 0..255 scale (inner pixels);
                       low means blurry. Scale dependent: compare images of similar size. NaN when
                       the image is smaller than 3x3
entropy                Shannon entropy of the 256-bin grey histogram, bits (0..8); low = little information
edge_density           share of inner pixels whose Sobel gradient magnitude exceeds 0.1 of the grey range
                       per pixel (a step of about 0.2 between neighbours), [0, 1]; NaN below 3x3
border_red, border_    channel means and grey mean over the outer ring of the image, [0, 1]; the ring is
green, border_blue,    ``max(1, min(H, W) // 8)`` pixels wide
border_brightness
border_std             standard deviation of grey over that ring, [0, 1]: near 0 for a uniform background
centre_brightness      mean grey over the central box (middle half of each side), [0, 1]; with
                       border_brightness it separates "object on a plain background" layouts
is_grayscale           1.0 when the channels are (near-)identical: at most 0.5% of pixels have a channel
                       spread (max - min) above 12 levels. Tolerant of JPEG chroma noise, so 3-channel
                       JPEGs that store a grey picture count as grey; 2-D inputs are always 1.0
dark_fraction          share of pixels with grey <= 20 (near-black), [0, 1]
bright_fraction        share of pixels with grey >= 235 (near-white), [0, 1]
=====================  ==================================================================================
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import fft

from curato.errors import InputError

PROPERTY_COLUMNS: tuple[str, ...] = (
    "width",
    "height",
    "aspect",
    "megapixels",
    "file_bytes",
    "bits_per_pixel",
    "jpeg_quality",
    "brightness_mean",
    "brightness_std",
    "contrast",
    "dynamic_range",
    "red_mean",
    "green_mean",
    "blue_mean",
    "saturation_mean",
    "colourfulness",
    "green_fraction",
    "sharpness",
    "entropy",
    "edge_density",
    "border_red",
    "border_green",
    "border_blue",
    "border_brightness",
    "border_std",
    "centre_brightness",
    "is_grayscale",
    "dark_fraction",
    "bright_fraction",
)
COLUMN_INDEX: dict[str, int] = {name: i for i, name in enumerate(PROPERTY_COLUMNS)}

# Rec. 601 luma weights: the grey conversion PIL ("L") and most quality tools use.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_DARK_LEVEL = 20
_BRIGHT_LEVEL = 235
_GREY_SPREAD_LEVELS = 12
_GREY_MAX_COLOURED_SHARE = 0.005
# Sobel responses are 8x the per-pixel derivative; 0.1 of the 0..255 range per pixel, squared.
_EDGE_THRESHOLD_SQUARED = (0.1 * 255 * 8) ** 2
# Bound the float32 temporaries of one stacked batch (about 4 Mpixel -> ~16 MB per plane).
_BATCH_PIXELS = 1 << 22
_HASH_SIZE = 32
_HASH_BITS = 8

# Standard luminance quantisation table of the JPEG specification (Annex K), natural (row) order.
_IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


def _ijg_tables() -> np.ndarray:
    """(100, 64) luminance tables the IJG encoder writes for quality 1..100."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = (_IJG_LUMINANCE[None, :] * scale[:, None] + 50) // 100
    return np.clip(tables, 1, 255)


_IJG_TABLES = _ijg_tables()


def estimate_jpeg_quality(quantization_tables: Mapping[int, Sequence[int]] | None) -> float:
    """The IJG quality (1..100) whose luminance table best matches a JPEG's, or NaN without tables.

    ``quantization_tables`` is PIL's ``image.quantization`` (table 0 is luminance, natural order).
    Files written by encoders with custom tables get the closest standard quality. When several
    qualities produce the same table (near 100 most entries clip to 1) their median is returned.
    """
    if not quantization_tables or 0 not in quantization_tables:
        return float("nan")
    table = np.asarray(list(quantization_tables[0]), dtype=np.int64)
    if table.size != 64:
        return float("nan")
    error = np.abs(_IJG_TABLES - table[None, :]).sum(axis=1)
    best = np.flatnonzero(error == error.min()) + 1
    return float(np.median(best))


def image_properties(
    images: Sequence[np.ndarray],
    *,
    file_bytes: Sequence[float] | np.ndarray | None = None,
    jpeg_quality: Sequence[float] | np.ndarray | None = None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Properties of each image: float32 array (n, len(PROPERTY_COLUMNS)), see the module docstring.

    ``images`` are HxW or HxWx3 uint8 arrays. ``file_bytes`` and ``jpeg_quality`` fill their columns
    (NaN when omitted). ``original_sizes`` gives (width, height) of the source when the pixels are a
    downscaled copy, so size columns and bits_per_pixel describe the stored image.
    """
    properties, _ = image_properties_and_hashes(
        images, file_bytes=file_bytes, jpeg_quality=jpeg_quality, original_sizes=original_sizes
    )
    return properties


def perceptual_hash(images: Sequence[np.ndarray]) -> np.ndarray:
    """64-bit DCT perceptual hash of each image (uint64 array of length n).

    Grey is area-resampled to 32x32, transformed with a 2-D DCT-II and the 8x8 lowest frequencies
    kept. The 63 AC bits say whether a coefficient exceeds the median of the AC coefficients (the DC
    term is left out of the median so it cannot dominate); bit 0 says whether the mean grey is above
    mid-grey. Near-identical pictures (resized, recompressed) differ in few bits.
    """
    hashes = np.zeros(len(images), dtype=np.uint64)
    for rows, batch in _batches(images):
        grey = batch.astype(np.float32) if batch.ndim == 3 else _luma(_planar(batch).astype(np.float32))
        hashes[rows] = _phash_from_grey(grey)
    return hashes


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasting, e.g. a[:, None] vs b[None, :])."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0 has a native popcount
        return np.bitwise_count(xor).astype(np.int64)
    as_bytes = xor[..., None].view(np.uint8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.int64)


_BYTE_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def image_properties_and_hashes(
    images: Sequence[np.ndarray],
    *,
    file_bytes: Sequence[float] | np.ndarray | None = None,
    jpeg_quality: Sequence[float] | np.ndarray | None = None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`image_properties` and :func:`perceptual_hash` in one pass (the grey plane is shared)."""
    n = len(images)
    out = np.full((n, len(PROPERTY_COLUMNS)), np.nan, dtype=np.float64)
    hashes = np.zeros(n, dtype=np.uint64)
    for rows, batch in _batches(images):
        out[rows], hashes[rows] = _batch_features(batch)
    _fill_size_columns(out, images, file_bytes, jpeg_quality, original_sizes)
    return out.astype(np.float32), hashes


def _as_uint8_image(image: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError(
            f"image {index}: expected an HxW or HxWx3 uint8 array, got shape {array.shape} {array.dtype}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image {index}: empty image (shape {array.shape})")
    return array


def _batches(images: Sequence[np.ndarray]):
    """Yield (row indices, stacked uint8 batch) for groups of same-shaped images, bounded in size."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    arrays = [_as_uint8_image(image, i) for i, image in enumerate(images)]
    for i, array in enumerate(arrays):
        groups[array.shape].append(i)
    for shape, members in groups.items():
        per_batch = max(1, _BATCH_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(members), per_batch):
            rows = np.asarray(members[start:start + per_batch], dtype=np.intp)
            yield rows, np.stack([arrays[i] for i in rows])


def _planar(batch: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) -> (n, 3, H, W) uint8: contiguous channel planes make per-pixel channel maths fast."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _luma(planes: np.ndarray) -> np.ndarray:
    """Rec. 601 grey (n, H, W) float32 on the 0..255 scale from (n, 3, H, W) float32 planes."""
    grey = planes[:, 0] * _LUMA[0]
    grey += planes[:, 1] * _LUMA[1]
    grey += planes[:, 2] * _LUMA[2]
    return grey


def _batch_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Property rows (n, columns; size columns left NaN) and phashes for one same-shaped stack."""
    n, height, width = batch.shape[:3]
    out = np.full((n, len(PROPERTY_COLUMNS)), np.nan, dtype=np.float64)
    col = COLUMN_INDEX
    if batch.ndim == 4:
        planar = _planar(batch)
        planes = planar.astype(np.float32)
        grey = _luma(planes)
        _colour_columns(out, planar, planes)
        grey_levels = np.minimum(grey + 0.5, 255).astype(np.uint8)
    else:
        grey = batch.astype(np.float32)
        planes = None
        grey_levels = batch
        means = grey.reshape(n, -1).mean(axis=1) / 255
        for name in ("red_mean", "green_mean", "blue_mean"):
            out[:, col[name]] = means
        for name in ("saturation_mean", "colourfulness", "green_fraction"):
            out[:, col[name]] = 0.0
        out[:, col["is_grayscale"]] = 1.0

    flat = grey.reshape(n, -1)
    out[:, col["brightness_mean"]] = flat.mean(axis=1) / 255
    out[:, col["brightness_std"]] = flat.std(axis=1) / 255
    _histogram_columns(out, grey_levels)
    if height >= 3 and width >= 3:
        _gradient_columns(out, grey)
    _layout_columns(out, planes, grey)
    return out, _phash_from_grey(grey)


def _share(mask: np.ndarray) -> np.ndarray:
    """Per-image share of True pixels in an (n, ...) boolean stack."""
    flat = mask.reshape(mask.shape[0], -1)
    return np.count_nonzero(flat, axis=1) / flat.shape[1]


def _colour_columns(out: np.ndarray, planar: np.ndarray, planes: np.ndarray) -> None:
    """Channel means, colourfulness, saturation, grey test and green share from (n, 3, H, W) planes."""
    col = COLUMN_INDEX
    n = planar.shape[0]
    flat = planes.reshape(n, 3, -1)
    channel_means = flat.mean(axis=2) / 255
    out[:, col["red_mean"]] = channel_means[:, 0]
    out[:, col["green_mean"]] = channel_means[:, 1]
    out[:, col["blue_mean"]] = channel_means[:, 2]

    red, green, blue = flat[:, 0], flat[:, 1], flat[:, 2]
    red_green = red - green
    yellow_blue = red + green
    yellow_blue *= 0.5
    yellow_blue -= blue
    sigma = np.sqrt(red_green.var(axis=1) + yellow_blue.var(axis=1))
    mu = np.sqrt(red_green.mean(axis=1) ** 2 + yellow_blue.mean(axis=1) ** 2)
    out[:, col["colourfulness"]] = sigma + 0.3 * mu

    # Elementwise maximum/minimum of uint8 planes is exact and much cheaper than a reduction over
    # a length-3 channel axis.
    red8, green8, blue8 = planar[:, 0], planar[:, 1], planar[:, 2]
    top = np.maximum(np.maximum(red8, green8), blue8)
    spread = top - np.minimum(np.minimum(red8, green8), blue8)
    saturation = np.divide(spread, top, out=np.zeros(spread.shape, dtype=np.float32), where=top > 0)
    out[:, col["saturation_mean"]] = saturation.reshape(n, -1).mean(axis=1)
    coloured = _share(spread > _GREY_SPREAD_LEVELS)
    out[:, col["is_grayscale"]] = (coloured <= _GREY_MAX_COLOURED_SHARE).astype(np.float64)

    # A pixel whose maximum is green has hue 60° * (2 + (B - R) / spread); 75°..165° <=> |B - R| <= 0.75 spread.
    spread16 = spread.astype(np.int16)
    green_hue = 4 * np.abs(blue8.astype(np.int16) - red8) <= 3 * spread16
    green_hue &= green8 == top
    green_hue &= 5 * spread16 >= top  # saturation >= 0.2
    green_hue &= top >= 26  # value >= 0.1
    out[:, col["green_fraction"]] = _share(green_hue)


def _histogram_columns(out: np.ndarray, grey_levels: np.ndarray) -> None:
    """Entropy, percentile contrast and dark/bright shares from per-image 256-bin grey histograms."""
    col = COLUMN_INDEX
    n = grey_levels.shape[0]
    pixels = grey_levels[0].size
    # One bincount for the whole batch: image i's levels are shifted into bins [256 i, 256 i + 256).
    offsets = (np.arange(n, dtype=np.intp) * 256)[:, None]
    shifted = grey_levels.reshape(n, -1) + offsets
    histogram = np.bincount(shifted.ravel(), minlength=256 * n).reshape(n, 256) / pixels
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, col["entropy"]] = -np.where(histogram > 0, histogram * np.log2(histogram), 0.0).sum(axis=1)
    cumulative = np.cumsum(histogram, axis=1)
    low = np.argmax(cumulative >= 0.01 - 1e-12, axis=1).astype(np.float64)
    high = np.argmax(cumulative >= 0.99 - 1e-12, axis=1).astype(np.float64)
    total = low + high
    out[:, col["contrast"]] = np.divide(high - low, total, out=np.zeros(n), where=total > 0)
    out[:, col["dynamic_range"]] = (high - low) / 255
    out[:, col["dark_fraction"]] = cumulative[:, _DARK_LEVEL]
    out[:, col["bright_fraction"]] = np.maximum(1.0 - cumulative[:, _BRIGHT_LEVEL - 1], 0.0)


def _gradient_columns(out: np.ndarray, grey: np.ndarray) -> None:
    """Laplacian variance and Sobel edge share, with shifted slices over the whole stack."""
    col = COLUMN_INDEX
    n = grey.shape[0]
    centre = grey[:, 1:-1, 1:-1]
    laplacian = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1]
    laplacian += grey[:, 1:-1, :-2]
    laplacian += grey[:, 1:-1, 2:]
    laplacian -= 4 * centre
    out[:, col["sharpness"]] = laplacian.reshape(n, -1).var(axis=1)

    vertical_smooth = grey[:, :-2, :] + grey[:, 2:, :]
    vertical_smooth += 2 * grey[:, 1:-1, :]
    gradient_x = vertical_smooth[:, :, 2:] - vertical_smooth[:, :, :-2]
    horizontal_smooth = grey[:, :, :-2] + grey[:, :, 2:]
    horizontal_smooth += 2 * grey[:, :, 1:-1]
    gradient_y = horizontal_smooth[:, 2:, :] - horizontal_smooth[:, :-2, :]
    magnitude_squared = np.square(gradient_x, out=gradient_x)
    magnitude_squared += np.square(gradient_y, out=gradient_y)
    out[:, col["edge_density"]] = _share(magnitude_squared > _EDGE_THRESHOLD_SQUARED)


def border_width(height: int, width: int) -> int:
    """Width in pixels of the outer ring used by the border_* properties."""
    return max(1, min(height, width) // 8)


def _ring_slices(height: int, width: int) -> list[tuple[slice, slice]]:
    """Non-overlapping (rows, cols) slices that together cover the outer ring exactly once."""
    ring = border_width(height, width)
    top_end = min(ring, height)
    bottom_start = max(top_end, height - ring)
    slices = [(slice(0, top_end), slice(None)), (slice(bottom_start, height), slice(None))]
    if bottom_start > top_end:
        left_end = min(ring, width)
        right_start = max(left_end, width - ring)
        middle = slice(top_end, bottom_start)
        slices += [(middle, slice(0, left_end)), (middle, slice(right_start, width))]
    return slices


def _layout_columns(out: np.ndarray, planes: np.ndarray | None, grey: np.ndarray) -> None:
    """Border ring colour/uniformity and centre brightness."""
    col = COLUMN_INDEX
    n, height, width = grey.shape
    slices = _ring_slices(height, width)
    count = sum(len(range(height)[rows]) * len(range(width)[cols]) for rows, cols in slices)
    grey_sum = sum(grey[:, rows, cols].sum(axis=(1, 2), dtype=np.float64) for rows, cols in slices)
    grey_squares = sum(
        np.square(grey[:, rows, cols], dtype=np.float64).sum(axis=(1, 2)) for rows, cols in slices
    )
    grey_mean = grey_sum / count
    out[:, col["border_brightness"]] = grey_mean / 255
    out[:, col["border_std"]] = np.sqrt(np.maximum(grey_squares / count - grey_mean**2, 0.0)) / 255
    if planes is None:
        for name in ("border_red", "border_green", "border_blue"):
            out[:, col[name]] = grey_mean / 255
    else:
        channel_sum = sum(planes[:, :, rows, cols].sum(axis=(2, 3), dtype=np.float64) for rows, cols in slices)
        channel_mean = channel_sum / count / 255
        out[:, col["border_red"]] = channel_mean[:, 0]
        out[:, col["border_green"]] = channel_mean[:, 1]
        out[:, col["border_blue"]] = channel_mean[:, 2]
    centre = grey[:, height // 4: height - height // 4, width // 4: width - width // 4]
    out[:, col["centre_brightness"]] = centre.mean(axis=(1, 2), dtype=np.float64) / 255


def _area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix averaging the source cells each target cell overlaps (area resampling)."""
    edges = np.arange(target + 1) * (source / target)
    starts, ends = edges[:-1, None], edges[1:, None]
    cells = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _phash_from_grey(grey: np.ndarray) -> np.ndarray:
    """uint64 DCT hash of each (n, H, W) float32 grey image on the 0..255 scale."""
    n, height, width = grey.shape
    rows = _area_weights(height, _HASH_SIZE)
    cols = _area_weights(width, _HASH_SIZE)
    # Two plain 2-D products over the whole stack (not n small batched ones): resample the width,
    # then swap axes and resample the height. The result is transposed, which the DCT does not mind
    # as long as the 8x8 block is read back in the same orientation.
    narrow = (grey.reshape(n * height, width) @ cols.T).reshape(n, height, _HASH_SIZE)
    small = (np.ascontiguousarray(narrow.transpose(0, 2, 1)).reshape(n * _HASH_SIZE, height) @ rows.T)
    small = small.reshape(n, _HASH_SIZE, _HASH_SIZE).transpose(0, 2, 1)
    coefficients = fft.dctn(small, type=2, axes=(1, 2), norm="ortho")[:, :_HASH_BITS, :_HASH_BITS]
    coefficients = coefficients.reshape(n, _HASH_BITS * _HASH_BITS)
    median = np.median(coefficients[:, 1:], axis=1, keepdims=True)
    bits = coefficients > median
    bits[:, 0] = small.reshape(n, -1).mean(axis=1) > 127.5
    # Bit k of the hash is coefficient k in row-major order of the 8x8 block.
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u8").reshape(n).astype(np.uint64)


def _fill_size_columns(
    out: np.ndarray,
    images: Sequence[np.ndarray],
    file_bytes: Sequence[float] | np.ndarray | None,
    jpeg_quality: Sequence[float] | np.ndarray | None,
    original_sizes: Sequence[tuple[int, int]] | None,
) -> None:
    col = COLUMN_INDEX
    n = len(images)
    if original_sizes is None:
        sizes = np.array([(np.shape(image)[1], np.shape(image)[0]) for image in images], dtype=np.float64)
    else:
        sizes = np.asarray(original_sizes, dtype=np.float64)
    sizes = sizes.reshape(n, 2)
    width, height = sizes[:, 0], sizes[:, 1]
    pixels = width * height
    out[:, col["width"]] = width
    out[:, col["height"]] = height
    out[:, col["aspect"]] = width / height
    out[:, col["megapixels"]] = pixels / 1e6
    if file_bytes is not None:
        stored = np.asarray(file_bytes, dtype=np.float64).reshape(n)
        out[:, col["file_bytes"]] = stored
        out[:, col["bits_per_pixel"]] = stored * 8 / pixels
    if jpeg_quality is not None:
        out[:, col["jpeg_quality"]] = np.asarray(jpeg_quality, dtype=np.float64).reshape(n)
