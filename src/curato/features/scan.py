"""The single decode pass of ingest: content hash, size, format, properties and perceptual hash.

Every image is read and decoded exactly once. Work is split into chunks of uris; each chunk is
decoded image by image (PIL), then its pixels are handed to
:func:`curato.features.properties.image_properties_and_hashes`, which stacks same-shaped images and
computes every property for the stack at once. Chunks run in worker processes and are put back in
input order.

Unreadable input (missing file, not a regular file, truncated or corrupt data, not an image, more
pixels than :func:`curato.imageio.max_pixels`) never raises: its row has ``readable=False`` and a
one-line ``error`` naming the uri and the reason. The pixel limit is judged from the header, before
decoding.

Pixels are read upright (EXIF orientation, :func:`curato.imageio.decode`); width and height are the
displayed size. Images whose longest side exceeds :data:`MAX_PROPERTY_SIDE` (512) are reduced by an
integer box filter (factor ``ceil(longest / 512)``, so the copy's longest side is 257..512) right
after decoding, before their pixel properties and phash are computed. Means and shares (brightness,
colour, border, dark/bright fractions) agree with the full-resolution values to about 0.01;
sharpness and edge_density are scale dependent and describe the reduced copy. width, height,
file_bytes, bits_per_pixel and jpeg_quality always describe the original. JPEG draft (DCT-domain)
decoding is not used: it would change the reduced pixels, so every JPEG is fully decoded by PIL.

Pool workers end with the process that scans, however it ends (:func:`die_with`), and are stopped at
once when the scan is interrupted.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from PIL import Image

from curato.errors import CuratoError, UnreadableImageError
from curato.features.properties import PROPERTY_COLUMNS, THUMBNAIL_COLUMNS, estimate_jpeg_quality, image_features
from curato.hashing import content_hash
from curato.imageio import RawImage, check_pixel_limit, decode, read_raw, to_rgb_array
from curato.imageio import max_pixels as resolve_max_pixels

MAX_PROPERTY_SIDE = 512
# PIL names some JPEG variants after their container; they are JPEG files to a user (and to a
# "file format predicts the label" check).
_FORMAT_ALIASES = {"mpo": "jpeg"}
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass
class ScanTable:
    """What the scan learnt about each uri; every array is aligned with the input uris.

    ``content_hash`` (str): blake2b-160 hex digest of the stored bytes ("" when they cannot be read);
    ``readable`` (bool); ``error`` (object: one-line str naming the uri, or None); ``width``/``height``
    (int64, 0 when unreadable); ``format`` (str, lower-case PIL format or "idx", "" when unreadable);
    ``file_bytes`` (int64); ``phash`` (uint64, 0 when unreadable); ``properties`` (float32
    (n, len(PROPERTY_COLUMNS)), NaN rows when unreadable); ``thumbnails`` (uint8 (n, THUMBNAIL_COLUMNS),
    zero rows when unreadable; layout in :mod:`curato.features.thumbnails`).
    """

    content_hash: np.ndarray
    readable: np.ndarray
    error: np.ndarray
    width: np.ndarray
    height: np.ndarray
    format: np.ndarray
    file_bytes: np.ndarray
    phash: np.ndarray
    properties: np.ndarray
    thumbnails: np.ndarray

    def __len__(self) -> int:
        return len(self.readable)

    @classmethod
    def concatenate(cls, tables: Sequence[ScanTable]) -> ScanTable:
        """One table with the rows of ``tables`` in order."""
        if not tables:
            return _empty_table()
        return cls(
            content_hash=np.concatenate([t.content_hash for t in tables]),
            readable=np.concatenate([t.readable for t in tables]),
            error=np.concatenate([t.error for t in tables]),
            width=np.concatenate([t.width for t in tables]),
            height=np.concatenate([t.height for t in tables]),
            format=np.concatenate([t.format for t in tables]),
            file_bytes=np.concatenate([t.file_bytes for t in tables]),
            phash=np.concatenate([t.phash for t in tables]),
            properties=np.concatenate([t.properties for t in tables]),
            thumbnails=np.concatenate([t.thumbnails for t in tables]),
        )


def _empty_table() -> ScanTable:
    return ScanTable(
        content_hash=np.array([], dtype=str),
        readable=np.array([], dtype=bool),
        error=np.array([], dtype=object),
        width=np.array([], dtype=np.int64),
        height=np.array([], dtype=np.int64),
        format=np.array([], dtype=str),
        file_bytes=np.array([], dtype=np.int64),
        phash=np.array([], dtype=np.uint64),
        properties=np.empty((0, len(PROPERTY_COLUMNS)), dtype=np.float32),
        thumbnails=np.empty((0, THUMBNAIL_COLUMNS), dtype=np.uint8),
    )


def scan_images(
    uris: Sequence[str],
    *,
    workers: int | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
) -> ScanTable:
    """Read, hash, decode and measure every image in ``uris`` (file paths or ``idx:`` uris).

    ``workers`` processes (default: all cores) each take chunks of at most ``chunk_size`` uris;
    ``workers <= 1``, or input that fits one chunk, runs in this process so small scans do not pay
    for starting a pool. ``progress(n)`` is called here, in the calling process, with the number of
    uris of each chunk as it finishes. Rows come back in input order. ``max_pixels``: the per-image pixel
    limit (default :func:`curato.imageio.max_pixels`: 40 megapixels, or ``CURATO_MAX_PIXELS``); an image over
    it is unreadable, judged from its header before it is decoded.

    Bad input is reported in the table (``readable=False``, ``error``), never raised. Each process
    that scans limits BLAS to one thread while it works and calls :func:`keep_freed_memory`.
    """
    uris = list(uris)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    limit = resolve_max_pixels(max_pixels)  # resolved here: workers may not share this process's settings
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(uris) <= chunk_size:
        return _scan_in_process(uris, chunk_size, progress, limit)

    # Spread the input over all workers even when it is only a few chunks long.
    size = min(chunk_size, math.ceil(len(uris) / workers))
    chunks = [uris[start:start + size] for start in range(0, len(uris), size)]
    results: list[ScanTable | None] = [None] * len(chunks)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=_pool_context(), initializer=_init_worker,
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(_scan_chunk, chunk, limit): index for index, chunk in enumerate(chunks)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                if progress is not None:
                    progress(len(chunks[index]))
        except BaseException:
            # A crashed worker, Ctrl-C or a signal turned into an exception: stop the workers now rather than
            # let them finish their chunks (which can take minutes) before reporting it.
            _stop_workers(pool)
            raise
    return ScanTable.concatenate([table for table in results if table is not None])


def _scan_in_process(uris: list[str], chunk_size: int, progress: Callable[[int], None] | None,
                     max_pixels: int) -> ScanTable:
    tables = []
    keep_freed_memory()
    with _single_threaded_blas():
        for start in range(0, len(uris), chunk_size):
            chunk = uris[start:start + chunk_size]
            tables.append(_scan_chunk(chunk, max_pixels))
            if progress is not None:
                progress(len(chunk))
    return ScanTable.concatenate(tables)


def _pool_context() -> multiprocessing.context.BaseContext:
    """How to start workers.

    ``fork`` when this process runs a single thread: it is the cheapest start and needs nothing from
    the caller. Forking a process that runs other threads (progress bars, BLAS pools, torch) can
    deadlock the child on a lock one of them held, so then ``forkserver`` (its server preloads this
    module, so a worker start is still a fork of a clean process) or ``spawn``; like any
    multiprocessing code under those methods, the calling script needs an
    ``if __name__ == "__main__":`` guard.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


_worker_blas_limit: object = None


def _init_worker(owner: int) -> None:
    """Pool initializer: die with the process that scans (``owner``); one BLAS thread (workers already fill
    every core, so BLAS threads would only contend)."""
    global _worker_blas_limit
    die_with(owner)
    _worker_blas_limit = _single_threaded_blas()  # the limit holds while the object lives
    keep_freed_memory()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(owner: int) -> None:
    """End this process as soon as process ``owner`` ends, however it ends (``kill -9`` included).

    A pool worker would otherwise outlive a killed ``curato ingest``: it finishes its chunk, then blocks for
    ever on a queue nobody reads, and with the forkserver start method it also keeps the fork server and
    the resource tracker alive. When ``owner`` is this process's parent (the ``fork`` start method) the
    kernel sends SIGKILL on its death (Linux ``PR_SET_PDEATHSIG``). Otherwise (a fork server is the
    parent) a daemon thread waits on a pidfd of ``owner`` (Linux 5.3+), or checks every half second where
    there is none, and kills this process when ``owner`` is gone. An owner already gone ends it at once.
    """
    if owner == os.getppid() and sys.platform.startswith("linux"):
        try:
            if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != owner:  # the owner died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(owner)
        except ProcessLookupError:
            os._exit(1)
        except OSError:  # a kernel without pidfds
            pidfd = None
    elif not _alive(owner):
        os._exit(1)
    threading.Thread(target=_watch_owner, args=(owner, pidfd), name="curato-owner-watch", daemon=True).start()


def _watch_owner(owner: int, pidfd: int | None) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])  # a pidfd becomes readable when its process ends
    else:
        while _alive(owner):
            threading.Event().wait(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (a recycled pid)
        return True
    return True


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (bounded: a worker that does not end on SIGTERM
    within 5 s is killed)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor's own record of them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel at once.

    The property kernels allocate many short-lived arrays of a few hundred KB. With glibc's
    defaults each one is a fresh mmap, or heap that was just trimmed, so every 4 KB page is faulted
    in again; on virtual machines that doubled the cost of a scan. These values are what glibc's
    own dynamic threshold settles at after the first large free (32 MB), with the heap allowed to
    keep up to ``trim_threshold`` bytes free. Applied once per process; False where the C library
    is not glibc (nothing changes there).
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):
        return False
    _malloc_tuned = tuned
    return tuned


def _single_threaded_blas() -> AbstractContextManager:
    """Limit BLAS to one thread (now, and until the returned context exits); the phash's small
    matrix products run several times slower when OpenBLAS spreads them over threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it BLAS keeps its default
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# PIL puts the repr of the in-memory buffer in some messages; its address would make errors differ run to run.
_BUFFER_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _one_line(uri: str, error: BaseException) -> str:
    message = " ".join(_BUFFER_REPR.sub("", str(error)).split()) or type(error).__name__
    return message if message.startswith(uri) else f"{uri}: {message}"


@dataclass
class _Decoded:
    pixels: np.ndarray
    width: int
    height: int
    format: str
    jpeg_quality: float


def _scan_chunk(uris: Sequence[str], max_pixels: int | None = None) -> ScanTable:
    """Scan ``uris`` in this process (the unit of work of a pool worker)."""
    max_pixels = resolve_max_pixels(max_pixels)
    n = len(uris)
    hashes = [""] * n
    errors: list[str | None] = [None] * n
    formats = [""] * n
    readable = np.zeros(n, dtype=bool)
    width = np.zeros(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    file_bytes = np.zeros(n, dtype=np.int64)
    quality = np.full(n, np.nan)
    pixels: list[np.ndarray] = []
    for i, uri in enumerate(uris):
        try:
            raw = read_raw(uri)
        except (CuratoError, OSError, ValueError, IndexError) as error:  # bad path, idx file or idx index
            errors[i] = _one_line(uri, error)
            continue
        hashes[i] = content_hash(raw.data)
        file_bytes[i] = len(raw.data)
        try:
            decoded = _decode(raw, uri, max_pixels)
        except CuratoError as error:
            errors[i] = _one_line(uri, error)
            continue
        readable[i] = True
        width[i], height[i] = decoded.width, decoded.height
        formats[i] = decoded.format
        quality[i] = decoded.jpeg_quality
        pixels.append(decoded.pixels)

    properties = np.full((n, len(PROPERTY_COLUMNS)), np.nan, dtype=np.float32)
    phash = np.zeros(n, dtype=np.uint64)
    thumbnails = np.zeros((n, THUMBNAIL_COLUMNS), dtype=np.uint8)
    if pixels:
        rows = np.flatnonzero(readable)
        properties[rows], phash[rows], thumbnails[rows] = image_features(
            pixels,
            file_bytes=file_bytes[rows],
            jpeg_quality=quality[rows],
            original_sizes=np.stack([width[rows], height[rows]], axis=1),
        )
    return ScanTable(
        content_hash=np.array(hashes, dtype=str),
        readable=readable,
        error=np.array(errors, dtype=object),
        width=width,
        height=height,
        format=np.array(formats, dtype=str),
        file_bytes=file_bytes,
        phash=phash,
        properties=properties,
        thumbnails=thumbnails,
    )


def _decode(raw: RawImage, uri: str, max_pixels: int) -> _Decoded:
    """Pixels (uint8 HxW or HxWx3, longest side capped, upright) and facts about the image as displayed."""
    if raw.array is not None:
        array = np.asarray(raw.array)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
            raise UnreadableImageError(f"{uri}: unsupported IDX image shape {array.shape}")
        height, width = array.shape[:2]
        check_pixel_limit(uri, width, height, max_pixels)
        pixels = array if array.dtype == np.uint8 else _rescale_to_uint8(array)
        return _Decoded(_cap_size(pixels, uri), width, height, raw.format_hint or "idx", float("nan"))

    # Box-reduced in PIL right after decoding (the same pixels as reducing the converted array, without
    # holding more full-size copies); orientation applied, width/height as displayed.
    decoded = decode(raw, uri, max_pixels=max_pixels, max_side=MAX_PROPERTY_SIDE)
    image_format = _FORMAT_ALIASES.get(decoded.format, decoded.format)
    quality = float("nan")
    if image_format == "jpeg":
        quality = estimate_jpeg_quality(decoded.quantization)
    try:
        pixels = _pil_pixels(decoded.image)
    except (OSError, ValueError) as error:  # a mode PIL cannot convert
        raise UnreadableImageError(f"{uri}: cannot convert {decoded.image.mode} pixels to RGB ({error})") from error
    return _Decoded(_cap_size(pixels, uri), decoded.width, decoded.height, image_format, quality)


def _pil_pixels(image: Image.Image) -> np.ndarray:
    """Grey images stay 2-D (a third of the work); everything else becomes RGB like imageio does."""
    if image.mode == "L":
        return np.asarray(image)
    if image.mode == "1":
        return np.asarray(image.convert("L"))
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _rescale_to_uint8(np.asarray(image))
    return to_rgb_array(image)


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max scale deep or signed pixel values to 0..255 (as imageio does for 16-bit images)."""
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    scaled = (np.where(finite, values, low) - low) / max(high - low, 1e-12) * 255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _cap_size(pixels: np.ndarray, uri: str) -> np.ndarray:
    """Box-reduce by an integer factor so the longest side is at most MAX_PROPERTY_SIDE."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise UnreadableImageError(f"{uri}: image has no pixels (shape {pixels.shape})")
    longest = max(pixels.shape[0], pixels.shape[1])
    if longest <= MAX_PROPERTY_SIDE:
        return pixels
    factor = math.ceil(longest / MAX_PROPERTY_SIDE)
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).reduce(factor))
