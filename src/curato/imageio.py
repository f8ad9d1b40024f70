"""Reading image bytes and pixels from the places samples live.

A sample's ``uri`` is either a filesystem path or ``idx:<path>#<index>`` for one image inside an
IDX file (MNIST / Fashion-MNIST layout, optionally gzip-compressed). This module is the only one
that knows those schemes.
"""

from __future__ import annotations

import gzip
import io
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from curato.errors import InputError, UnreadableImageError

IDX_SCHEME = "idx:"
# Truncated JPEG/PNG files must fail loudly, not decode as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = 400_000_000

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


def read_raw(uri: str) -> RawImage:
    """The bytes (and, for IDX sources, the pixels) of the image at ``uri``.

    Raises UnreadableImageError when the file cannot be read.
    """
    if uri.startswith(IDX_SCHEME):
        path, index = parse_idx_uri(uri)
        array = idx_array(path)[index]
        return RawImage(data=np.ascontiguousarray(array).tobytes(), array=array, format_hint="idx")
    try:
        return RawImage(data=Path(uri).read_bytes())
    except OSError as error:
        raise UnreadableImageError(f"{uri}: cannot read file ({error.strerror or error})") from error


def open_pil(raw: RawImage, uri: str = "") -> Image.Image:
    """A fully loaded PIL image from raw bytes; raises UnreadableImageError for corrupt data."""
    if raw.array is not None:
        return Image.fromarray(np.asarray(raw.array, dtype=np.uint8))
    try:
        image = Image.open(io.BytesIO(raw.data))
        image.load()
    except Exception as error:  # PIL raises many types for bad data; all mean "unreadable"
        raise UnreadableImageError(f"{uri}: not a readable image ({type(error).__name__}: {error})") from error
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """An HxWx3 uint8 RGB array; alpha is composited on white, palettes and 16-bit are converted."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1.0)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(uri: str) -> np.ndarray:
    """Decode the image at ``uri`` to an HxWx3 uint8 RGB array."""
    raw = read_raw(uri)
    if raw.array is not None:
        array = np.asarray(raw.array, dtype=np.uint8)
        return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    return to_rgb_array(open_pil(raw, uri))
