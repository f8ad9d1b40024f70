"""Ray Data for the per-image work of ingest and embed: hashing, decoding, properties, thumbnails, vectors.

Ingest and embed are per-image work (read, decode, measure, run the CNN) followed by writes that must stay
in one place (catalog rows and feature-store parts). This engine runs the per-image part as Ray Data
pipelines -- tasks for hashing and scanning, an actor pool for the embedder, so each actor loads the model
once -- and streams the results back to the calling process in input order, chunk by chunk. The caller
writes each chunk exactly as the local path does, so the workspace holds the same rows and parts and an
interrupted run resumes in the same way (finished chunks are durable; their hashes are skipped next time).

Listing the source (folder walk, manifest) stays in the calling process; every node must see the files
at the same paths (a shared filesystem) and have curato installed (a cluster's runtime environment).
Without an address a local Ray instance is started on this machine's cores and stopped afterwards; a
running instance (``ray.init`` done by the caller) is used as it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from curato.errors import InputError, UnreadableImageError
from curato.features.properties import PROPERTY_COLUMNS, THUMBNAIL_COLUMNS
from curato.features.scan import ScanTable, scan_images
from curato.hashing import hash_uris
from curato.imageio import load_rgb
from curato.system import available_cpus

ENGINES = ("local", "ray")
# Rows per Ray task for hashing and scanning: large enough that a task's overhead (tens of ms) is small
# against decoding it, small enough to spread a few thousand images over every core.
SCAN_BATCH = 256
HASH_BATCH = 1024


def check_engine(engine: str) -> None:
    """Refuse an unknown engine name (exit code 2)."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")


def require_ray() -> ModuleType:
    """The ``ray`` module, or an InputError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # Ray Data ships in ray[data], not in plain ray
    except ImportError as error:
        raise InputError("--engine ray needs Ray Data: pip install 'curato[scale]' (or use --engine local)") from error
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[ModuleType]:
    """A connected Ray: the running one, the cluster at ``address``, or a local instance on this machine's
    cores that is shut down on exit."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = available_cpus()
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            where = address or "a local instance"
            raise InputError(f"--engine ray: cannot start or reach Ray at {where} ({error}); check --address "
                             f"or use --engine local") from error
        started = True
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results come back in input order, chunk by chunk
    context.enable_progress_bars = False  # curato's own progress shows the work
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset "starting execution" lines
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _cluster_cpus(ray: ModuleType) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _dataset(ray: ModuleType, column: str, values: Sequence[Any], batch_size: int) -> Any:
    """A Ray dataset of ``values`` cut into blocks of one batch each, so every worker gets work (one block
    would be one task)."""
    blocks = max(1, math.ceil(len(values) / batch_size))
    return ray.data.from_items([{column: value} for value in values], override_num_blocks=blocks)


def ray_hash(uris: Sequence[str], *, progress: Callable[[int], None] | None = None) -> list[str | None]:
    """Content hash of each uri (as :func:`curato.hashing.hash_uris`), computed by Ray tasks;
    ``progress(n)`` after every ``n`` hashes that come back."""
    if not uris:
        return []
    ray = require_ray()

    def hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        digests = hash_uris([str(u) for u in batch["uri"]], workers=1)
        return {"digest": np.array([d or "" for d in digests], dtype=object)}

    dataset = _dataset(ray, "uri", uris, HASH_BATCH).map_batches(hash_batch, batch_size=HASH_BATCH,
                                                                batch_format="numpy")
    digests: list[str | None] = []
    for batch in dataset.iter_batches(batch_size=HASH_BATCH, batch_format="numpy"):
        digests += [str(d) or None for d in batch["digest"]]
        if progress is not None:
            progress(len(batch["digest"]))
    return digests


def _scan_batch(batch: dict[str, np.ndarray], max_pixels: int | None) -> dict[str, np.ndarray]:
    table = scan_images([str(u) for u in batch["uri"]], workers=1, max_pixels=max_pixels)
    return {"content_hash": table.content_hash.astype(object), "readable": table.readable,
            "error": np.array([e or "" for e in table.error], dtype=object), "width": table.width,
            "height": table.height, "format": table.format.astype(object), "file_bytes": table.file_bytes,
            "phash": table.phash, "properties": table.properties, "thumbnails": table.thumbnails}


def _as_table(batch: dict[str, np.ndarray]) -> ScanTable:
    count = len(batch["readable"])
    return ScanTable(
        content_hash=np.asarray([str(h) for h in batch["content_hash"]], dtype=str),
        readable=np.asarray(batch["readable"], dtype=bool),
        error=np.array([str(e) or None for e in batch["error"]], dtype=object),
        width=np.asarray(batch["width"], dtype=np.int64),
        height=np.asarray(batch["height"], dtype=np.int64),
        format=np.asarray([str(f) for f in batch["format"]], dtype=str),
        file_bytes=np.asarray(batch["file_bytes"], dtype=np.int64),
        phash=np.asarray(batch["phash"], dtype=np.uint64),
        properties=np.asarray(batch["properties"], dtype=np.float32).reshape(count, len(PROPERTY_COLUMNS)),
        thumbnails=np.asarray(batch["thumbnails"], dtype=np.uint8).reshape(count, THUMBNAIL_COLUMNS),
    )


def ray_scan_chunks(uris: Sequence[str], *, chunk_size: int, max_pixels: int | None = None) -> Iterator[ScanTable]:
    """Scan ``uris`` (as :func:`curato.features.scan.scan_images`) with Ray tasks; yield one table per
    ``chunk_size`` consecutive uris, in input order, as soon as each chunk is complete."""
    if not uris:
        return
    ray = require_ray()
    dataset = _dataset(ray, "uri", uris, SCAN_BATCH).map_batches(
        _scan_batch, fn_kwargs={"max_pixels": max_pixels}, batch_size=SCAN_BATCH, batch_format="numpy")
    for batch in dataset.iter_batches(batch_size=chunk_size, batch_format="numpy"):
        yield _as_table(batch)


class _EmbedActor:
    """One embedder per actor, loaded once; ``threads`` CPU threads each where the embedder takes them."""

    def __init__(self, name: str, options: dict[str, Any], threads: int, max_pixels: int, min_side: int) -> None:
        from curato.features.embedders import get_embedder

        try:
            self.embedder = get_embedder(name, **{"threads": threads, **options})
        except InputError:  # an embedder without a threads option
            self.embedder = get_embedder(name, **options)
        self.max_pixels, self.min_side = max_pixels, min_side

    def _load(self, item: Any) -> tuple[Any, str | None]:
        if self.embedder.modality == "text":
            return str(item or ""), None
        try:
            return load_rgb(str(item), max_pixels=self.max_pixels, min_side=self.min_side), None
        except UnreadableImageError as error:
            return None, str(error)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [self._load(item) for item in batch["item"]]
        keep = [j for j, (value, _) in enumerate(loaded) if value is not None]
        vectors = None
        if keep:
            vectors = np.asarray(self.embedder.embed([loaded[j][0] for j in keep]), dtype=np.float32)
        dim = vectors.shape[1] if vectors is not None else 1
        out = np.zeros((len(loaded), dim), dtype=np.float32)
        if vectors is not None:
            out[keep] = vectors
        return {"vector": out, "error": np.array([error or "" for _, error in loaded], dtype=object),
                "ok": np.array([value is not None for value, _ in loaded], dtype=bool)}


def ray_embed_chunks(name: str, options: dict[str, Any], items: Sequence[Any], *, batch_size: int, chunk_size: int,
                     max_pixels: int, min_side: int, actors: int | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Embed ``items`` (image uris or texts) with an actor pool of embedder ``name`` (``actors`` of them,
    default one per cluster CPU, each single-threaded); images are decoded as :func:`curato.imageio.load_rgb`
    with ``max_pixels`` and ``min_side``. Yield, per ``chunk_size`` consecutive items in input order, (vectors
    of the decoded items, their positions in the chunk, the error of every item: "" where it decoded)."""
    if not len(items):
        return
    ray = require_ray()
    cpus = _cluster_cpus(ray)
    actors = actors or cpus
    threads = max(1, cpus // actors)
    dataset = _dataset(ray, "item", items, batch_size).map_batches(
        _EmbedActor, fn_constructor_kwargs={"name": name, "options": options, "threads": threads,
                                             "max_pixels": max_pixels, "min_side": min_side},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), num_cpus=threads, batch_size=batch_size,
        batch_format="numpy")
    for batch in dataset.iter_batches(batch_size=chunk_size, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        kept = np.flatnonzero(ok)
        vectors = np.asarray(batch["vector"], dtype=np.float32)
        vectors = vectors.reshape(len(ok), -1)[kept]
        yield vectors, kept, [str(e) for e in batch["error"]]
