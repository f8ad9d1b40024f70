"""Ingest orchestration: read, validate, scan changed files, write catalog and properties.

Resumable: properties are stored chunk by chunk and each chunk's catalog rows commit in one
transaction, so an interrupted ingest picks up where it stopped. Idempotent: a file whose content
hash is unchanged is not scanned again; a changed file is rescanned and its stale features are
recomputed by the next ``curato embed``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curato.catalog import SampleRecord
from curato.errors import InputError
from curato.features.properties import PROPERTY_COLUMNS
from curato.features.scan import ScanTable, scan_images
from curato.features.thumbnails import THUMBNAIL_LAYOUT
from curato.featurestore import PROPERTIES, THUMBNAILS
from curato.hashing import hash_uris, text_hash
from curato.ingest import readers
from curato.progress import SILENT, Progress
from curato.workspace import Workspace

FORMATS = ("imagefolder", "manifest", "coco", "idx", "text")
PROPERTIES_VERSION = 1


def properties_meta() -> dict[str, Any]:
    """Feature-store settings of the image-properties table (a change invalidates stored rows)."""
    return {"settings": {"columns": list(PROPERTY_COLUMNS), "version": PROPERTIES_VERSION},
            "columns": list(PROPERTY_COLUMNS)}


def thumbnails_meta() -> dict[str, Any]:
    """Feature-store settings of the scan's thumbnails (uint8 rows; layout in curato.features.thumbnails)."""
    return {"settings": {"layout": THUMBNAIL_LAYOUT, "version": 1}, "layout": THUMBNAIL_LAYOUT}


@dataclass
class IngestSummary:
    """What one ingest did."""

    source: str
    format: str
    samples: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    scanned: int = 0
    unreadable: int = 0
    labels_added: int = 0
    annotations: int = 0
    not_in_source: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)


def read_source(source: str | Path, *, format: str | None = None, images_root: str | Path | None = None
                ) -> tuple[str, list[SampleRecord]]:
    """(format, records) for ``source``; raises InputError for anything unusable."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path to the dataset")
    chosen = format or readers.detect_format(path)
    if chosen not in FORMATS:
        raise InputError(f"--format {chosen!r} is unknown; use one of {', '.join(FORMATS)}")
    if chosen == "imagefolder":
        if not path.is_dir():
            raise InputError(f"{path}: --format imagefolder needs a directory of class folders")
        records = readers.read_imagefolder(path)
    elif chosen == "manifest":
        records = readers.read_manifest(path)
    elif chosen == "text":
        records = readers.read_text_table(path)
    elif chosen == "idx":
        records = readers.read_idx_source(path)
    else:
        records = readers.read_coco(path, Path(images_root) if images_root else None)
    if not records:
        suffixes = ", ".join(sorted(readers.IMAGE_SUFFIXES))
        what = f"image files ({suffixes})" if chosen == "imagefolder" else "samples"
        raise InputError(f"{path}: no {what} found; point at the folder or file that holds the dataset")
    return chosen, records


def validate_records(source: Path, records: Sequence[SampleRecord]) -> None:
    """Refuse duplicate ids and labels that mix numbers with names."""
    counts = Counter(record.sample_id for record in records)
    duplicated = [sid for sid, n in counts.items() if n > 1]
    if duplicated:
        shown = ", ".join(repr(s) for s in duplicated[:3])
        raise InputError(
            f"{source}: {len(duplicated)} duplicate sample id(s) ({shown}); ids must be unique — fix the 'id' field"
        )
    numeric = [r.label for r in records if r.label is not None and _is_number(r.label)]
    named = [r.label for r in records if r.label is not None and not _is_number(r.label)]
    if numeric and named:
        raise InputError(
            f"{source}: field 'label' mixes numbers ({numeric[0]!r}, {len(numeric)} rows) and names "
            f"({named[0]!r}, {len(named)} rows); use one kind of label throughout"
        )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def ingest(
    workspace: Workspace,
    source: str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    source_name: str | None = None,
    images_root: str | Path | None = None,
    workers: int | None = None,
    chunk_size: int = 4096,
    progress: Progress = SILENT,
) -> IngestSummary:
    """Add (or refresh) the samples of ``source`` in ``workspace``.

    ``split`` overrides the split of every sample; ``source_name`` names where the samples came from
    (default: the source's file or folder name), used by ``curato bias --by source``.
    """
    path = Path(source)
    chosen, records = read_source(path, format=format, images_root=images_root)
    validate_records(path, records)
    origin = source_name or path.stem.split(".")[0] or path.name
    for record in records:
        if split is not None:
            record.split = split
        if record.source is None:
            record.source = origin
    catalog = workspace.catalog
    summary = IngestSummary(source=str(path), format=chosen, samples=len(records))
    with catalog.recorded_run("ingest", str(path), {"format": chosen, "split": split, "source": origin}) as run:
        known = catalog.known_samples()
        images = [r for r in records if r.kind == "image"]
        texts = [r for r in records if r.kind == "text"]
        _ingest_texts(workspace, texts, known, summary)
        _ingest_images(workspace, images, known, summary, workers=workers, chunk_size=chunk_size,
                       progress=progress)
        with catalog.transaction() as conn:
            summary.labels_added = catalog.sync_imported_labels(
                conn, {r.sample_id: r.label for r in records if r.label is not None}
            )
            annotated = [r for r in records if r.annotations]
            if annotated or chosen == "coco":
                rows = [a for r in records for a in r.annotations]
                catalog.replace_imported_annotations(conn, [r.sample_id for r in records], rows)
                summary.annotations = len(rows)
        in_source = {r.sample_id for r in records}
        summary.not_in_source = sum(1 for sid in known if sid not in in_source)
        summary.label_counts = dict(Counter(r.label for r in records if r.label is not None).most_common())
        run.summary = {k: v for k, v in summary.__dict__.items() if k != "label_counts"}
    return summary


def _base_row(record: SampleRecord) -> dict[str, Any]:
    return {"sample_id": record.sample_id, "kind": record.kind, "uri": record.uri, "text": record.text,
            "split": record.split, "source": record.source, "meta": record.meta or None}


def _ingest_texts(workspace: Workspace, texts: list[SampleRecord], known: dict, summary: IngestSummary) -> None:
    if not texts:
        return
    rows = []
    for record in texts:
        digest = text_hash(record.text or "")
        _count_change(summary, known.get(record.sample_id), digest)
        rows.append({**_base_row(record), "content_hash": digest, "readable": True, "error": None,
                     "bytes": len((record.text or "").encode("utf-8")), "format": "text"})
    with workspace.catalog.transaction() as conn:
        workspace.catalog.upsert_samples(conn, rows)


def _count_change(summary: IngestSummary, previous: tuple | None, digest: str | None) -> None:
    if previous is None:
        summary.new += 1
    elif previous[1] != digest:
        summary.changed += 1
    else:
        summary.unchanged += 1


def _ingest_images(workspace: Workspace, images: list[SampleRecord], known: dict, summary: IngestSummary, *,
                   workers: int | None, chunk_size: int, progress: Progress) -> None:
    if not images:
        return
    catalog, store = workspace.catalog, workspace.features
    meta = properties_meta()
    progress.stage("hashing", len(images))
    digests = []
    for start in range(0, len(images), chunk_size):
        chunk = images[start:start + chunk_size]
        digests += hash_uris([r.uri for r in chunk])
        progress.advance(len(chunk))
    stored = store.done_hashes(PROPERTIES, meta=meta)
    thumbs = store.done_hashes(THUMBNAILS, meta=thumbnails_meta())
    todo: list[int] = []
    untouched: list[dict[str, Any]] = []
    for index, (record, digest) in enumerate(zip(images, digests, strict=True)):
        previous = known.get(record.sample_id)
        _count_change(summary, previous, digest)
        fresh = previous is not None and previous[1] == digest and digest is not None
        done = stored.get(record.sample_id) == digest and thumbs.get(record.sample_id) == digest
        if fresh and (done or not previous[2]):
            untouched.append(_base_row(record))
        else:
            todo.append(index)
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, untouched)
    summary.scanned = len(todo)
    progress.stage("scanning images", len(todo))
    for start in range(0, len(todo), chunk_size):
        chunk = [images[i] for i in todo[start:start + chunk_size]]
        table = scan_images([r.uri for r in chunk], workers=workers, progress=progress.advance)
        readable = np.flatnonzero(table.readable)
        if len(readable):
            chunk_ids = [chunk[i].sample_id for i in readable]
            store.write_part(PROPERTIES, chunk_ids, table.content_hash[readable].tolist(),
                             table.properties[readable])
            store.write_part(THUMBNAILS, chunk_ids, table.content_hash[readable].tolist(),
                             table.thumbnails[readable])
        with catalog.transaction() as conn:
            catalog.upsert_samples(conn, _scanned_rows(chunk, table))
    in_source = {record.sample_id for record in images}
    summary.unreadable = sum(1 for sample_id, _ in catalog.unreadable() if sample_id in in_source)
    readable_ids = [sid for sid, (_, _, ok) in catalog.known_samples().items() if ok]
    if store.pending_parts(PROPERTIES):
        store.finalize(PROPERTIES, meta, keep_ids=readable_ids)
    if store.pending_parts(THUMBNAILS):
        store.finalize(THUMBNAILS, thumbnails_meta(), keep_ids=readable_ids, dtype="uint8")


def _scanned_rows(chunk: list[SampleRecord], table: ScanTable) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(chunk):
        ok = bool(table.readable[i])
        rows.append({
            **_base_row(record),
            "content_hash": table.content_hash[i] or None,
            "readable": ok,
            "error": None if ok else table.error[i],
            "width": int(table.width[i]) if ok else None,
            "height": int(table.height[i]) if ok else None,
            "format": table.format[i] or None,
            "bytes": int(table.file_bytes[i]),
            "phash": f"{int(table.phash[i]):016x}" if ok else None,
        })
    return rows
