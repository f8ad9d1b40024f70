"""Reading image bytes and pixels from the places samples live.

A sample's ``uri`` is either a filesystem path or ``idx:<path>#<index>`` for one image inside an
IDX file (MNIST / Fashion-MNIST layout, optionally gzip-compressed). This module is the only one
that knows those schemes, and the only one that opens encoded images: every reader of pixels (the
ingest scan, embedding, report thumbnails, the audit's second looks) goes through :func:`decode`, so
each gets the same rules:

* only regular files are read, and never more bytes than the file held when it was opened (a FIFO,
  a device or a directory named as an image is unreadable, not a hang);
* an image with more than :func:`max_pixels` pixels (default 40 megapixels; ``CURATO_MAX_PIXELS``)
  is unreadable, decided from its header before any pixel is decoded;
* the EXIF orientation is applied: pixels, width and height are those of the image as displayed;
* a caller that needs fewer pixels (embedding, thumbnails) asks for them: JPEGs are then decoded at
  1/2, 1/4 or 1/8 scale in the DCT domain and other formats box-reduced by an integer factor right
  after decoding, so at most one full-size copy of a large image is ever held.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from curato.errors import InputError, UnreadableImageError

IDX_SCHEME = "idx:"
# Truncated JPEG/PNG files must fail loudly, not decode as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own decompression-bomb guard stays as a backstop above curato's limit (it refuses twice this).
Image.MAX_IMAGE_PIXELS = 400_000_000

DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "CURATO_MAX_PIXELS"
# The per-image pixel limit for this process when set (wins over $CURATO_MAX_PIXELS); see max_pixels().
MAX_PIXELS: int | None = None

# EXIF Orientation (tag 0x0112) -> the transpose that shows the stored pixels upright.
EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_idx_lock = threading.Lock()


@dataclass(frozen=True)
class RawImage:
    """The stored bytes of an image, and its pixels when the source holds them undecoded (IDX)."""

    data: bytes
    array: np.ndarray | None = None
    format_hint: str | None = None


def idx_uri(path: str | Path, index: int) -> str:
    """The uri of image ``index`` inside the IDX file at ``path``."""
    return f"{IDX_SCHEME}{Path(path).resolve()}#{index}"


def parse_idx_uri(uri: str) -> tuple[str, int]:
    """Split an ``idx:`` uri into the file path and the image index."""
    path, _, index = uri[len(IDX_SCHEME):].rpartition("#")
    return path, int(index)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a whole IDX file (optionally gzip-compressed) into an array.

    Raises InputError naming the file when its header is not IDX.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            payload = handle.read()
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read IDX file ({error}); check the file is complete") from error
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number); expected MNIST-style idx1/idx3 data")
    dtype = np.dtype(_IDX_DTYPES[payload[2]])
    ndim = payload[3]
    dims = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(payload) - offset < expected:
        raise InputError(f"{path}: IDX file is truncated ({len(payload) - offset} of {expected} bytes)")
    return np.frombuffer(payload, dtype=dtype, count=int(np.prod(dims)), offset=offset).reshape(dims)


@lru_cache(maxsize=8)
def _cached_idx(path: str) -> np.ndarray:
    return read_idx(path)


def idx_array(path: str) -> np.ndarray:
    """The cached contents of an IDX file (decoded once per process)."""
    with _idx_lock:
        return _cached_idx(path)


def max_pixels(value: int | None = None) -> int:
    """The per-image pixel limit in force: ``value`` when given, else :data:`MAX_PIXELS` when set, else the
    ``CURATO_MAX_PIXELS`` environment variable, else :data:`DEFAULT_MAX_PIXELS` (40 megapixels).

    Raises InputError for a limit that is not a positive whole number (naming where it came from).
    """
    if value is not None:
        return _positive_limit(value, "max_pixels")
    if MAX_PIXELS is not None:
        return _positive_limit(MAX_PIXELS, "curato.imageio.MAX_PIXELS")
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        number = int(text.replace("_", ""))
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels, e.g. 40000000") from None
    return _positive_limit(number, MAX_PIXELS_ENV)


def _positive_limit(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{source}: the pixel limit must be a positive whole number, got {value!r}")
    return int(value)


def check_pixel_limit(uri: str, width: int, height: int, limit: int | None = None) -> None:
    """Raise UnreadableImageError when a ``width`` x ``height`` image is over the pixel limit."""
    allowed = max_pixels(limit)
    if width * height > allowed:
        raise UnreadableImageError(
            f"{uri}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{allowed / 1e6:g} megapixels per image (set {MAX_PIXELS_ENV} to allow larger images)")


def read_raw(uri: str) -> RawImage:
    """The bytes (and, for IDX sources, the pixels) of the image at ``uri``.

    Only a regular file is read (a symbolic link to one is fine), and at most as many bytes as it held when
    opened. Raises UnreadableImageError when the file cannot be read or is not a regular file.
    """
    if uri.startswith(IDX_SCHEME):
        path, index = parse_idx_uri(uri)
        array = idx_array(path)[index]
        return RawImage(data=np.ascontiguousarray(array).tobytes(), array=array, format_hint="idx")
    return RawImage(data=read_regular_file(uri))


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of the regular file at ``path``; UnreadableImageError for anything else.

    Opened without blocking (a FIFO with no writer would otherwise wait forever), checked on the open
    descriptor (no window for the name to be swapped), and read up to the size it had then (a device such as
    /dev/zero, or a file still growing, cannot make the read run on).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise UnreadableImageError(f"{path}: cannot read file ({error.strerror or error})") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a regular file")
            raise UnreadableImageError(f"{path}: is {kind}, not a regular file; only image files are read")
        size = info.st_size
        chunks, remaining = [], size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 24))
            if not chunk:
                break  # the file shrank since it was opened: what is there is what it holds
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise UnreadableImageError(f"{path}: cannot read file ({error.strerror or error})") from error
    finally:
        os.close(fd)


@dataclass
class Decoded:
    """An image decoded by :func:`decode`.

    ``image``: loaded PIL image, upright (EXIF orientation applied), mode "L" or "RGB" (alpha composited on
    white, palettes, bilevel and CMYK converted), except high-bit-depth modes ("I;16", "I", "F"), which are
    left as decoded for the caller to scale; possibly reduced (``reduced_by``). ``width``/``height``: the full
    image as displayed (oriented), whatever was decoded. ``format``: lower-case PIL format ("idx" for IDX
    items). ``quantization``: the JPEG quantisation tables, else None. ``orientation``: the EXIF value (1..8).
    """

    image: Image.Image
    width: int
    height: int
    format: str
    quantization: dict[int, Any] | None = None
    orientation: int = 1
    reduced_by: int = 1


def open_image(raw: RawImage, uri: str = "", *, max_pixels: int | None = None) -> Image.Image:
    """A lazily opened PIL image: header read, size checked against the pixel limit, no pixel decoded yet.

    Raises UnreadableImageError for data that is not an image or an image over the limit.
    """
    if raw.array is not None:
        array = np.asarray(raw.array, dtype=np.uint8)
        check_pixel_limit(uri, array.shape[1] if array.ndim > 1 else 1, array.shape[0], max_pixels)
        return Image.fromarray(array)
    try:
        image = Image.open(io.BytesIO(raw.data))
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(f"{uri}: over Pillow's decompression-bomb limit ({error})") from error
    except Exception as error:  # PIL raises many types for bad data; all mean "unreadable"
        raise UnreadableImageError(f"{uri}: not a readable image ({type(error).__name__}: {error})") from error
    check_pixel_limit(uri, image.width, image.height, max_pixels)
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation of ``image`` (1 = upright; 1 also when absent, unreadable or out of range)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block does not make the pixels unreadable
        return 1
    return int(value) if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned as EXIF ``orientation`` says it is displayed (unchanged for 1)."""
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def decode(raw: RawImage, uri: str = "", *, max_pixels: int | None = None, max_side: int | None = None,
           min_side: int | None = None) -> Decoded:
    """Decode an image: pixel limit checked from the header first, EXIF orientation applied, modes normalised.

    Reduction (integer box filter, applied to the stored pixels before turning them upright): ``max_side``
    reduces by ``ceil(longest / max_side)`` so the longest side is at most ``max_side`` (exactly what reducing
    the full decoded image would give). ``min_side`` reduces as far as the shortest side stays at least
    ``min_side``, JPEGs first in the DCT domain (``draft``: 1/2, 1/4 or 1/8 scale, slightly different pixels
    from a full decode). Reduction applies to "L" and "RGB" results; high-bit-depth images are returned
    full size. Raises UnreadableImageError for data that cannot be decoded or is over the limit.
    """
    image = open_image(raw, uri, max_pixels=max_pixels)
    image_format = (raw.format_hint if raw.array is not None else (image.format or "")).lower()
    quantization = getattr(image, "quantization", None) if image_format in ("jpeg", "mpo") else None
    stored_width, stored_height = image.size
    try:
        if min_side is not None and raw.array is None and image_format in ("jpeg", "mpo"):
            scale = min(stored_width, stored_height) // max(int(min_side), 1)
            if scale >= 2:
                image.draft(None, (int(min_side), int(min_side)))
        image.load()
        orientation = exif_orientation(image)
        image = _eight_bit(image)
    except UnreadableImageError:
        raise
    except Exception as error:  # PIL raises many types for bad data; all mean "unreadable"
        raise UnreadableImageError(f"{uri}: not a readable image ({type(error).__name__}: {error})") from error
    factor = 1
    if image.mode in ("L", "RGB"):
        if max_side is not None:
            factor = max(factor, math.ceil(max(image.size) / max(int(max_side), 1)))
        if min_side is not None:
            factor = max(factor, min(image.size) // max(int(min_side), 1))
        if factor > 1:
            image = image.reduce(factor)
    reduced_by = max(1, round(max(stored_width, stored_height) / max(image.size)))  # draft and reduce together
    width, height = (stored_height, stored_width) if orientation in (5, 6, 7, 8) else (stored_width, stored_height)
    return Decoded(image=upright(image, orientation), width=width, height=height, format=image_format,
                   quantization=quantization, orientation=orientation, reduced_by=reduced_by)


def _eight_bit(image: Image.Image) -> Image.Image:
    """"L" or "RGB" (high-bit-depth modes unchanged): what every reader of 8-bit pixels gets."""
    if image.mode in ("L", "RGB") or image.mode in _HIGH_BIT_DEPTH_MODES:
        return image
    if image.mode == "1":
        return image.convert("L")
    return to_rgb_image(image)


def open_pil(raw: RawImage, uri: str = "") -> Image.Image:
    """A fully loaded, upright PIL image from raw bytes; raises UnreadableImageError for corrupt data."""
    return decode(raw, uri).image


def to_rgb_image(image: Image.Image) -> Image.Image:
    """An RGB PIL image; alpha is composited on white, palettes and 16-bit are converted."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        if image.mode != "RGBA":
            image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1.0)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """An HxWx3 uint8 RGB array; alpha is composited on white, palettes and 16-bit are converted."""
    return np.asarray(to_rgb_image(image), dtype=np.uint8)


def load_rgb(uri: str, *, max_pixels: int | None = None, min_side: int | None = None) -> np.ndarray:
    """Decode the image at ``uri`` to an upright HxWx3 uint8 RGB array.

    ``min_side``: reduce (see :func:`decode`) as far as the shortest side stays at least ``min_side`` pixels,
    for readers that shrink the image anyway (embedders, thumbnails). ``max_pixels``: the pixel limit
    (default: :func:`max_pixels`). Raises UnreadableImageError.
    """
    raw = read_raw(uri)
    if raw.array is not None:
        array = np.asarray(raw.array, dtype=np.uint8)
        check_pixel_limit(uri, array.shape[1] if array.ndim > 1 else 1, array.shape[0], max_pixels)
        return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    decoded = decode(raw, uri, max_pixels=max_pixels, min_side=min_side)
    image = to_rgb_image(decoded.image)
    if min_side is not None and min(image.size) // min_side >= 2:  # a high-bit-depth image decode did not reduce
        image = image.reduce(min(image.size) // min_side)
    return np.asarray(image, dtype=np.uint8)
