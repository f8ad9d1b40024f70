"""Compute embeddings for a workspace: batched, chunked, resumable, with progress.

Rows are computed only for samples whose content hash differs from the stored row (new, changed,
or computed with other settings). Each finished chunk is stored durably, so Ctrl-C or a crash
loses at most one chunk; running the same command again resumes.

Images are decoded upright (EXIF orientation) and only as large as an embedder can use: a large image is
reduced while it is decoded (JPEG at 1/2..1/8 scale in the DCT domain, other formats by an integer box
filter) until its shortest side is under twice :data:`DECODE_MIN_SIDE`, so holding a chunk of decoded
images costs a few MB per image whatever their stored size. Images over the pixel limit
(:func:`curato.imageio.max_pixels`) are failures with their reason, never decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from curato.errors import InputError, UnreadableImageError, WorkspaceNotReadyError
from curato.features.embedders import default_embedder_name, get_embedder
from curato.features.embedders.base import Embedder, PrecomputedEmbedder
from curato.featurestore import FeatureSet
from curato.imageio import load_rgb
from curato.imageio import max_pixels as resolve_max_pixels
from curato.progress import SILENT, Progress
from curato.scale.ray_engine import check_engine, ray_embed_chunks, ray_session
from curato.workspace import Workspace

# Decoded images keep a shortest side of at least this many pixels: at least twice the input of every built-in
# image embedder (224 px, hub models up to 518 px), so reducing first changes their resize very little.
DECODE_MIN_SIDE = 1024
# Part of the stored settings of image embeddings: vectors made under another decode rule are recomputed.
DECODE_SETTINGS = f"upright by EXIF orientation; reduced while decoding to a shortest side >= {DECODE_MIN_SIDE} px"


@dataclass
class EmbedSummary:
    """What one ``curato embed`` did."""

    embedder: str
    dim: int
    total: int
    computed: int
    reused: int
    failed: list[tuple[str, str]]


def choose_embedder_name(workspace: Workspace) -> str:
    """The default embedder for the workspace's data (text model for text, image size-aware CNN)."""
    kinds = workspace.catalog.sample_kinds()
    if not kinds:
        raise WorkspaceNotReadyError(f"{workspace.root}: no samples yet; run "
                                     f"`curato ingest SOURCE -w {workspace.root}` first")
    modality = max(kinds, key=kinds.get)
    median_side = None
    if modality == "image":
        table = workspace.catalog.samples(("width", "height"), kind="image")
        sides = [max(w, h) for w, h in zip(table["width"], table["height"], strict=True) if w and h]
        median_side = float(np.median(sides)) if sides else None
    return default_embedder_name(modality, median_side)


def _load(uri: str, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_rgb(uri, max_pixels=max_pixels, min_side=DECODE_MIN_SIDE), None
    except UnreadableImageError as error:
        return None, str(error)


def compute_embeddings(
    workspace: Workspace,
    embedder_name: str | Embedder | PrecomputedEmbedder | None = None,
    *,
    chunk_size: int = 1024,
    progress: Progress = SILENT,
    max_pixels: int | None = None,
    engine: str = "local",
    address: str | None = None,
    **options: Any,
) -> tuple[FeatureSet, EmbedSummary]:
    """Embed every readable sample of the embedder's modality and store the vectors.

    ``embedder_name``: a registered name, an embedder instance (stored under its ``name`` attribute, or its
    class name), or None for the default. ``max_pixels``: the per-image pixel limit (default
    :func:`curato.imageio.max_pixels`); a larger image is a failure, not decoded. ``engine="ray"``: decode and
    embed on a Ray actor pool (the cluster at ``address``, or a local Ray instance;
    :mod:`curato.scale.ray_engine`), each actor building the embedder by name; the rows written are the same.
    Returns the complete feature set and a summary (rows computed vs reused, failures).
    """
    check_engine(engine)
    limit = resolve_max_pixels(max_pixels)
    if isinstance(embedder_name, Embedder | PrecomputedEmbedder):
        if options:
            raise InputError(f"embed: options {', '.join(sorted(options))} apply to embedders named by string; "
                             "configure the instance instead")
        if engine == "ray" and not isinstance(embedder_name, PrecomputedEmbedder):
            raise InputError("--engine ray builds the embedder on every worker: name a registered embedder "
                             "instead of passing an instance")
        embedder = embedder_name
        name = str(getattr(embedder, "name", "") or type(embedder).__name__)
    else:
        name = embedder_name or choose_embedder_name(workspace)
        embedder = get_embedder(name, **options)
    catalog, store = workspace.catalog, workspace.features
    modality = getattr(embedder, "modality", "image")
    kind = None if modality == "any" else modality
    table = catalog.samples(("sample_id", "uri", "text", "content_hash", "readable"), kind=kind)
    usable = np.array([bool(r) for r in table["readable"]], dtype=bool)
    ids = table["sample_id"][usable].tolist()
    if not ids:
        raise WorkspaceNotReadyError(f"{workspace.root}: no readable {modality} samples to embed with {name!r}")
    hashes = table["content_hash"][usable].tolist()
    settings = embedder.settings()
    if modality == "image" and not isinstance(embedder, PrecomputedEmbedder):
        settings = {**settings, "decode": DECODE_SETTINGS}
    meta = {"settings": settings, "embedder": name, "modality": modality}
    done = store.done_hashes(name, meta=meta)
    todo = [i for i, (sid, digest) in enumerate(zip(ids, hashes, strict=True)) if done.get(sid) != digest]
    failed: list[tuple[str, str]] = []
    with catalog.recorded_run("embed", name, meta["settings"]) as run:
        progress.stage(f"embedding with {name}", len(todo))
        if isinstance(embedder, PrecomputedEmbedder):
            _store_precomputed(workspace, embedder, name, [ids[i] for i in todo], [hashes[i] for i in todo])
            progress.advance(len(todo))
        else:
            items = table["text"][usable] if modality == "text" else table["uri"][usable]
            if engine == "ray":
                with ray_session(address):
                    failed = _embed_missing_ray(workspace, embedder, name, options, todo, ids, hashes, items,
                                                chunk_size, progress, limit)
            else:
                failed = _embed_missing(workspace, embedder, name, todo, ids, hashes, items, chunk_size, progress,
                                        limit)
        if store.pending_parts(name) or not store.has(name):
            store.finalize(name, meta, keep_ids=ids, dtype="float32")
        features = store.load(name)
        summary = EmbedSummary(embedder=name, dim=int(features.vectors.shape[1]), total=len(ids),
                               computed=len(todo) - len(failed), reused=len(ids) - len(todo), failed=failed)
        run.summary = {"computed": summary.computed, "reused": summary.reused, "failed": len(failed),
                       "dim": summary.dim}
    return features, summary


def _store_precomputed(workspace: Workspace, embedder: PrecomputedEmbedder, name: str,
                       ids: list[str], hashes: list[str]) -> None:
    if not ids:
        return
    vectors, found = embedder.lookup(ids)
    if not found.all():
        missing = [sid for sid, ok in zip(ids, found, strict=True) if not ok]
        raise InputError(
            f"{name}: no vector for {len(missing)} of {len(ids)} samples (e.g. {missing[0]!r}); "
            "the ids file must list every sample id in the workspace"
        )
    workspace.features.write_part(name, ids, hashes, np.asarray(vectors, dtype=np.float32))


def _length_sorted(embedder: Embedder, todo: list[int], items: np.ndarray) -> list[int]:
    """Texts of similar length share a call, so no call pads short texts to a long one (the embedder sorts
    within a call too); rows are stored keyed by id, in any order. Images keep their order."""
    return sorted(todo, key=lambda i: len(items[i] or "")) if embedder.modality == "text" else todo


def _embed_missing_ray(workspace: Workspace, embedder: Embedder, name: str, options: dict[str, Any],
                       todo: list[int], ids: list[str], hashes: list[str], items: np.ndarray, chunk_size: int,
                       progress: Progress, max_pixels: int) -> list[tuple[str, str]]:
    failed: list[tuple[str, str]] = []
    todo = _length_sorted(embedder, todo, items)
    results = ray_embed_chunks(name, options, [items[i] for i in todo], batch_size=max(1, int(embedder.batch_size)),
                               chunk_size=chunk_size, max_pixels=max_pixels, min_side=DECODE_MIN_SIDE)
    for start, (vectors, kept, errors) in zip(range(0, len(todo), chunk_size), results, strict=True):
        chunk = todo[start:start + chunk_size]
        decoded = set(kept.tolist())
        failed += [(ids[chunk[j]], errors[j]) for j in range(len(chunk)) if j not in decoded]
        if len(kept):
            workspace.features.write_part(name, [ids[chunk[j]] for j in kept], [hashes[chunk[j]] for j in kept],
                                          vectors)
        progress.advance(len(chunk))
    return failed


def _embed_missing(workspace: Workspace, embedder: Embedder, name: str, todo: list[int], ids: list[str],
                   hashes: list[str], items: np.ndarray, chunk_size: int, progress: Progress,
                   max_pixels: int) -> list[tuple[str, str]]:
    failed: list[tuple[str, str]] = []
    batch = max(1, int(embedder.batch_size))
    todo = _length_sorted(embedder, todo, items)
    chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:

        def submit(chunk: list[int]) -> Iterator[tuple[Any, str | None]]:
            if embedder.modality == "text":
                return iter([(str(items[i] or ""), None) for i in chunk])
            # Decoding starts now, in the background.
            return pool.map(partial(_load, max_pixels=max_pixels), [items[i] for i in chunk])

        pending = submit(chunks[0]) if chunks else iter(())
        for number, chunk in enumerate(chunks):
            loaded = list(pending)
            if number + 1 < len(chunks):
                pending = submit(chunks[number + 1])  # decode the next chunk while this one is embedded
            keep = [j for j, (value, _) in enumerate(loaded) if value is not None]
            failed += [(ids[chunk[j]], error or "") for j, (value, error) in enumerate(loaded) if value is None]
            vectors = []
            for b in range(0, len(keep), batch):
                part = [loaded[j][0] for j in keep[b:b + batch]]
                vectors.append(np.asarray(embedder.embed(part), dtype=np.float32))
                progress.advance(len(part))
            progress.advance(len(chunk) - len(keep))
            if keep:
                workspace.features.write_part(name, [ids[chunk[j]] for j in keep],
                                              [hashes[chunk[j]] for j in keep], np.concatenate(vectors))
    return failed
