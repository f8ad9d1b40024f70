"""Numeric image properties and perceptual hashes, computed over many images at once.

Pure functions over uint8 arrays (``HxW`` grey or ``HxWx3`` RGB); no I/O. Images of the same shape
are stacked and every property is computed for the whole stack in a handful of NumPy calls, so the
cost per image is a few passes over its pixels, not Python loops.

Units and definitions of :data:`PROPERTY_COLUMNS` (``grey`` is Rec. 601 luma,
``0.299 R + 0.587 G + 0.114 B``, in float32; the histogram-based columns (contrast, dynamic_range,
entropy, dark_fraction, bright_fraction) use grey rounded to 8-bit levels; all "[0, 1]" values are
fractions of the 0..255 range):

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
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

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
# Pixels per stacked batch: 256 K pixels keeps each float32 temporary near 1 MB, small enough to be
# recycled by the allocator instead of page-faulted in afresh (faults were half the cost at 16 MB),
# and still stacks ~330 Fashion-MNIST-sized images per NumPy call.
_BATCH_PIXELS = 1 << 18
_HASH_SIZE = 32
# Thumbnails kept from the scan (layout documented in curato.features.thumbnails).
COLOUR_SIDE = 8
GREY_SIDE = 24
THUMBNAIL_COLUMNS = COLOUR_SIDE * COLOUR_SIDE * 3 + GREY_SIDE * GREY_SIDE
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
    return _quality_of_table(tuple(int(value) for value in quantization_tables[0]))


@lru_cache(maxsize=256)
def _quality_of_table(table: tuple[int, ...]) -> float:
    # Cached: a dataset's JPEGs come from a handful of encoders and settings.
    if len(table) != 64:
        return float("nan")
    error = np.abs(_IJG_TABLES - np.asarray(table, dtype=np.int64)[None, :]).sum(axis=1)
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
    properties, hashes, _ = image_features(images, file_bytes=file_bytes, jpeg_quality=jpeg_quality,
                                           original_sizes=original_sizes)
    return properties, hashes


def image_features(
    images: Sequence[np.ndarray],
    *,
    file_bytes: Sequence[float] | np.ndarray | None = None,
    jpeg_quality: Sequence[float] | np.ndarray | None = None,
    original_sizes: Sequence[tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Properties, perceptual hashes and thumbnail rows (see :mod:`curato.features.thumbnails`) in one pass."""
    n = len(images)
    out = np.full((n, len(PROPERTY_COLUMNS)), np.nan, dtype=np.float64)
    hashes = np.zeros(n, dtype=np.uint64)
    thumbnails = np.zeros((n, THUMBNAIL_COLUMNS), dtype=np.uint8)
    for rows, batch in _batches(images):
        out[rows], hashes[rows], thumbnails[rows] = _batch_features(batch)
    _fill_size_columns(out, images, file_bytes, jpeg_quality, original_sizes)
    return out.astype(np.float32), hashes, thumbnails


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


def _batches(images: Sequence[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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


def _batch_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Property rows (n, columns; size columns left NaN), phashes and thumbnail rows for one same-shaped stack."""
    n, height, width = batch.shape[:3]
    out = np.full((n, len(PROPERTY_COLUMNS)), np.nan, dtype=np.float64)
    col = COLUMN_INDEX
    if batch.ndim == 4:
        planar = _planar(batch)
        planes = planar.astype(np.float32)
        grey = _luma(planes)
        # grey <= 255 (+ float rounding), so adding 0.5 and truncating rounds without overflow.
        grey_levels = (grey + 0.5).astype(np.uint8)
        _colour_columns(out, planar, planes)
    else:
        grey = batch.astype(np.float32)
        planes = None
        grey_levels = batch

    mean, std = _mean_and_std(grey.reshape(n, -1))
    out[:, col["brightness_mean"]] = mean / 255
    out[:, col["brightness_std"]] = std / 255
    if planes is None:  # a grey image: every channel is the grey plane, and there is no colour
        for name in ("red_mean", "green_mean", "blue_mean"):
            out[:, col[name]] = mean / 255
        for name in ("saturation_mean", "colourfulness", "green_fraction"):
            out[:, col[name]] = 0.0
        out[:, col["is_grayscale"]] = 1.0
    _histogram_columns(out, grey_levels)
    if height >= 3 and width >= 3:
        _gradient_columns(out, grey)
    _layout_columns(out, planes, grey)
    return out, _phash_from_grey(grey), _thumbnail_rows(grey, planes)


def grey_squares(images: Sequence[np.ndarray], side: int) -> np.ndarray:
    """(m, side, side) float32 grey pictures (Rec. 601 luma, 0..255) of the images, area-resampled to a square
    like the scan's grey thumbnail (aspect ignored) but at any ``side`` -- e.g. the images' own size, for a
    closer look than the thumbnail's. Accepts (H, W) grey and (H, W, 3) RGB arrays."""
    out = np.empty((len(images), side, side), dtype=np.float32)
    for position, image in enumerate(images):
        array = np.asarray(image, dtype=np.float32)
        grey = array if array.ndim == 2 else array[..., :3] @ _LUMA
        out[position] = _resample(grey, side)
    return out


def _resample(stack: np.ndarray, side: int) -> np.ndarray:
    """Area-resample the last two axes of a float32 stack (..., H, W) to (..., side, side)."""
    rows = _area_weights(stack.shape[-2], side)
    cols = _area_weights(stack.shape[-1], side)
    return rows @ stack @ cols.T


def _thumbnail_rows(grey: np.ndarray, planes: np.ndarray | None) -> np.ndarray:
    """uint8 rows: the colour thumbnail (COLOUR_SIDE^2 x RGB, pixel-interleaved) then the grey one (GREY_SIDE^2)."""
    n = grey.shape[0]
    if planes is None:
        colour = np.repeat(_resample(grey, COLOUR_SIDE)[:, None], 3, axis=1)
    else:
        colour = _resample(planes, COLOUR_SIDE)
    colour = colour.transpose(0, 2, 3, 1).reshape(n, -1)
    fine = _resample(grey, GREY_SIDE).reshape(n, -1)
    return (np.clip(np.concatenate([colour, fine], axis=1), 0, 255) + 0.5).astype(np.uint8)


def _mean_and_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation of an (n, m) float32 array, as float64.

    Two passes (sum, then the centred sum of squares as a dot product) instead of np.std's four,
    and centring keeps the precision for near-constant rows (a flat background must give ~0).
    """
    count = values.shape[1]
    mean = values.sum(axis=1) / count
    centred = values - mean[:, None].astype(np.float32)
    variance = np.einsum("ij,ij->i", centred, centred, dtype=np.float32) / count
    return mean.astype(np.float64), np.sqrt(np.maximum(variance, 0.0)).astype(np.float64)


def _share(mask: np.ndarray) -> np.ndarray:
    """Per-image share of True pixels in an (n, ...) boolean stack."""
    flat = mask.reshape(mask.shape[0], -1)
    return np.count_nonzero(flat, axis=1) / flat.shape[1]


def _colour_columns(out: np.ndarray, planar: np.ndarray, planes: np.ndarray) -> None:
    """Channel means, colourfulness, saturation, grey test and green share from (n, 3, H, W) planes
    (``planar`` uint8, ``planes`` the same as float32)."""
    col = COLUMN_INDEX
    n = planar.shape[0]
    flat = planes.reshape(n, 3, -1)
    channel_means = flat.sum(axis=2) / (flat.shape[2] * 255)
    out[:, col["red_mean"]] = channel_means[:, 0]
    out[:, col["green_mean"]] = channel_means[:, 1]
    out[:, col["blue_mean"]] = channel_means[:, 2]

    # Hasler–Süsstrunk opponent channels rg = R - G and yb = (R + G) / 2 - B.
    red, green, blue = flat[:, 0], flat[:, 1], flat[:, 2]
    red_green = red - green
    yellow_blue = red + green
    yellow_blue *= 0.5
    yellow_blue -= blue
    red_green_mean, red_green_std = _mean_and_std(red_green)
    yellow_blue_mean, yellow_blue_std = _mean_and_std(yellow_blue)
    sigma = np.hypot(red_green_std, yellow_blue_std)
    mu = np.hypot(red_green_mean, yellow_blue_mean)
    out[:, col["colourfulness"]] = sigma + 0.3 * mu

    # Elementwise maximum/minimum of uint8 planes is exact and much cheaper than a reduction over
    # a length-3 channel axis.
    red8, green8, blue8 = planar[:, 0], planar[:, 1], planar[:, 2]
    top = np.maximum(np.maximum(red8, green8), blue8)
    spread = top - np.minimum(np.minimum(red8, green8), blue8)
    # spread is 0 wherever top is 0, so dividing by max(top, 1) gives saturation 0 there without a mask.
    # (Operands share a dtype throughout: mixed-dtype ufuncs go through slow buffered casts.)
    saturation = spread.astype(np.float32)
    saturation /= np.maximum(top, 1).astype(np.float32)
    out[:, col["saturation_mean"]] = saturation.reshape(n, -1).sum(axis=1) / saturation[0].size
    coloured = _share(spread > _GREY_SPREAD_LEVELS)
    out[:, col["is_grayscale"]] = (coloured <= _GREY_MAX_COLOURED_SHARE).astype(np.float64)

    # A pixel whose maximum is green has hue 60° * (2 + (B - R) / spread); 75°..165° <=> |B - R| <= 0.75 spread.
    spread16, top16 = spread.astype(np.int16), top.astype(np.int16)
    blue_minus_red = blue8.astype(np.int16)
    blue_minus_red -= red8.astype(np.int16)
    green_hue = 4 * np.abs(blue_minus_red) <= 3 * spread16
    green_hue &= green8 == top
    green_hue &= 5 * spread16 >= top16  # saturation >= 0.2
    green_hue &= top >= 26  # value >= 0.1
    out[:, col["green_fraction"]] = _share(green_hue)


def _histogram_columns(out: np.ndarray, grey_levels: np.ndarray) -> None:
    """Entropy, percentile contrast and dark/bright shares from per-image 256-bin grey histograms."""
    col = COLUMN_INDEX
    n = grey_levels.shape[0]
    pixels = grey_levels[0].size
    if pixels >= 16384:  # large images: a bincount per image avoids an int64 copy of the whole stack
        counts = np.stack([np.bincount(levels.ravel(), minlength=256) for levels in grey_levels])
    else:  # small images: one bincount, image i's levels shifted into bins [256 i, 256 i + 256)
        shifted = grey_levels.reshape(n, -1) + (np.arange(n, dtype=np.intp) * 256)[:, None]
        counts = np.bincount(shifted.ravel(), minlength=256 * n).reshape(n, 256)
    histogram = counts / pixels
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
    out[:, col["sharpness"]] = _mean_and_std(laplacian.reshape(n, -1))[1] ** 2

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
    # Gather the ring once into a contiguous (n, ring pixels) array and reuse the row statistics.
    ring = np.concatenate([grey[:, rows, cols].reshape(n, -1) for rows, cols in slices], axis=1)
    ring_mean, ring_std = _mean_and_std(ring)
    out[:, col["border_brightness"]] = ring_mean / 255
    out[:, col["border_std"]] = ring_std / 255
    if planes is None:
        for name in ("border_red", "border_green", "border_blue"):
            out[:, col[name]] = ring_mean / 255
    else:
        channel_sum = sum(planes[:, :, rows, cols].sum(axis=(2, 3)) for rows, cols in slices)
        channel_mean = channel_sum.astype(np.float64) / (ring.shape[1] * 255)
        out[:, col["border_red"]] = channel_mean[:, 0]
        out[:, col["border_green"]] = channel_mean[:, 1]
        out[:, col["border_blue"]] = channel_mean[:, 2]
    centre = grey[:, height // 4: height - height // 4, width // 4: width - width // 4]
    out[:, col["centre_brightness"]] = centre.sum(axis=(1, 2)).astype(np.float64) / (centre[0].size * 255)


@lru_cache(maxsize=64)
def _area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix averaging the source cells each target cell overlaps (area resampling).

    Cached per size pair (read-only), as batches of one image size recur throughout a dataset.
    """
    edges = np.arange(target + 1) * (source / target)
    starts, ends = edges[:-1, None], edges[1:, None]
    cells = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(ends, cells + 1) - np.maximum(starts, cells), 0.0, None)
    weights = (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=64)
def _dct_projection(source: int) -> np.ndarray:
    """(8, source) float32: area-resample to 32 points, then the 8 lowest orthonormal DCT-II terms.

    Folding the resampling into the DCT basis (taken from scipy.fft applied to the identity) makes
    the hash two small matrix products per stack instead of a resize, a 32x32 DCT and a crop.
    """
    dct_basis = fft.dct(np.eye(_HASH_SIZE), type=2, norm="ortho", axis=0)[:_HASH_BITS]
    projection = (dct_basis @ _area_weights(source, _HASH_SIZE).astype(np.float64)).astype(np.float32)
    projection.flags.writeable = False
    return projection


def _phash_from_grey(grey: np.ndarray) -> np.ndarray:
    """uint64 DCT hash of each (n, H, W) float32 grey image on the 0..255 scale."""
    n, height, width = grey.shape
    rows, cols = _dct_projection(height), _dct_projection(width)
    # Two plain 2-D products over the whole stack (not n small batched ones): project the width,
    # then swap axes and project the height; the last transpose restores (row frequency, column frequency).
    across = (grey.reshape(n * height, width) @ cols.T).reshape(n, height, _HASH_BITS)
    across = np.ascontiguousarray(across.transpose(0, 2, 1)).reshape(n * _HASH_BITS, height)
    coefficients = (across @ rows.T).reshape(n, _HASH_BITS, _HASH_BITS).transpose(0, 2, 1)
    coefficients = coefficients.reshape(n, _HASH_BITS * _HASH_BITS)
    median = np.median(coefficients[:, 1:], axis=1, keepdims=True)
    bits = coefficients > median
    # The orthonormal DC term of a 32x32 block is 32 x its mean grey.
    bits[:, 0] = coefficients[:, 0] > 127.5 * _HASH_SIZE
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
