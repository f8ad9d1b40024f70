"""Helpers shared by the embedders: input checks, optional-dependency checks, the user cache
directory, file hashing, and the torchvision import shim.

Nothing here imports torch at module import time: ``import curato.features.embedders`` must stay
cheap and must work on an install without the ``torch`` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import CuratoError, InputError

_tv_lock = threading.Lock()
# The stub operator library must stay referenced for the life of the process: torch removes the
# operators a ``torch.library.Library`` defined when that object is garbage-collected.
_tv_stub_library: Any = None


def require(modules: Sequence[str], extra: str, what: str) -> None:
    """Raise a one-line CuratoError naming the pip extra when any of ``modules`` is not installed.

    Uses ``find_spec`` so that checking costs no import of the (heavy) modules themselves.
    """
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise CuratoError(
            f"{what} needs {', '.join(missing)}, which {verb} not installed; "
            f"install with: pip install 'curato[{extra}]'"
        )


def cache_dir() -> Path:
    """The directory for derived files curato can rebuild (exported models): ``$CURATO_CACHE``,
    else ``$XDG_CACHE_HOME/curato``, else ``~/.cache/curato``. Not created here."""
    if os.environ.get("CURATO_CACHE"):
        return Path(os.environ["CURATO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "curato"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's contents, memoised per (path, size, mtime) for this process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_rgb_uint8(item: Any, index: int, embedder: str) -> np.ndarray:
    """Check one image handed to an embedder and return it as a contiguous HxWx3 uint8 array.

    Grey images (HxW or HxWx1) are repeated to three channels because several sources (IDX files,
    medical scans) hold them that way; anything else that is not HxWx3 uint8 is refused rather than
    guessed at, since a silently mis-read image would produce a plausible but wrong vector.
    """
    array = np.asarray(item)
    if array.dtype != np.uint8:
        raise InputError(
            f"{embedder}: image {index} has dtype {array.dtype}; expected uint8 RGB pixels "
            "(decode images with curato.imageio.load_rgb)"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(
            f"{embedder}: image {index} has shape {array.shape}; expected HxWx3 RGB "
            "(convert RGBA/palette images with curato.imageio.to_rgb_array)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{embedder}: image {index} is empty (shape {array.shape})")
    return np.ascontiguousarray(array)


def check_texts(items: Sequence[Any], embedder: str) -> list[str]:
    """The items as a list of str; raises InputError naming the first item that is not text."""
    texts = list(items)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{embedder}: item {index} is {type(text).__name__}, expected str")
    return texts


def prepare_torchvision_import() -> None:
    """Make ``import torchvision`` (and so timm, open_clip, transformers) work with a torchvision
    whose compiled operators cannot load.

    A torchvision wheel built for CUDA, installed next to a CPU-only torch, fails to load its
    ``_C`` extension; its Python code then dies at import with "operator torchvision::nms does not
    exist" because it registers fake kernels for ``nms``/``qnms``. Those two schemas are all it
    needs to import; image transforms do not use the compiled operators. When the extension
    does load (a matching torchvision), nothing is changed. Call before importing any of those
    libraries; it is idempotent and thread-safe.
    """
    global _tv_stub_library
    if "torchvision" in sys.modules or _tv_stub_library is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    with _tv_lock:
        if _tv_stub_library is not None:
            return
        import torch

        package_dir = Path(spec.origin).parent
        for extension in sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd")):
            try:
                torch.ops.load_library(str(extension))
                return  # the real operators are registered; torchvision imports normally
            except (OSError, RuntimeError):
                break
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _tv_stub_library = library


def l2_normalise(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Load transformers models without their progress bars on stderr (curato reports its own
    progress); the previous setting is restored afterwards. Import transformers only after
    ``prepare_torchvision_import``."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between each row of ``a`` and the same row of ``b`` (two (n, d) arrays)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a cache file via a temporary name so a concurrent reader never sees half a file.

    A cache that cannot be written is not an error: what it holds is rebuilt next time instead.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)


class OpenVinoModel:
    """An ONNX graph compiled by OpenVINO for the CPU with the THROUGHPUT hint, in float32: one
    stream per core (on 2 cores, two single-threaded streams), each running its own batch.

    On 2 AVX2 cores this ran MiniLM 1.4-1.9x faster than onnxruntime on the same graph; EfficientNet-Lite0
    was not faster (docs/benchmarks.md), so it is opt-in there. Imports openvino only when built."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        core = openvino.Core()
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "PERFORMANCE_HINT": "THROUGHPUT",
            # float32 throughout: on CPUs with bf16 units OpenVINO would otherwise compute in bf16.
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": int(threads),
        })
        self.requests = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def run(self, feeds: Iterable[tuple[Any, dict[str, np.ndarray]]], out: np.ndarray) -> None:
        """For each ``(where, inputs)``, ``out[where] = first output``; all streams stay busy, and a lazy
        ``feeds`` prepares the next batch while the streams compute.

        Requests are used in turn and waited on from this thread (``wait`` releases the GIL): no Python
        callback runs on OpenVINO's threads, which could wait for the GIL that this thread holds."""
        requests = [self._compiled.create_infer_request() for _ in range(self.requests)]
        pending: list[Any] = [None] * len(requests)

        def collect(slot: int) -> None:
            if pending[slot] is not None:
                requests[slot].wait()
                out[pending[slot]] = requests[slot].get_output_tensor(0).data
                pending[slot] = None

        for number, (where, inputs) in enumerate(feeds):
            slot = number % len(requests)
            collect(slot)
            requests[slot].start_async(inputs)
            pending[slot] = where
        for slot in range(len(requests)):
            collect(slot)
