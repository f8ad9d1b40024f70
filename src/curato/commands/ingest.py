"""Ingest orchestration: read, validate, scan changed files, write catalog and properties.

Resumable: properties are stored chunk by chunk and each chunk's catalog rows commit in one
transaction, so an interrupted ingest picks up where it stopped. Idempotent: a file whose content
hash is unchanged is not scanned again; a changed file is rescanned and its stale features are
recomputed by the next ``curato embed``.

Confinement (docs/reliability.md): every file read resolves inside one root folder and is a regular file;
every entry of the source is a sample or a reported skip; a sample never silently changes source.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curato.catalog import SampleRecord
from curato.errors import InputError
from curato.features.properties import PROPERTY_COLUMNS
from curato.features.scan import ScanTable, scan_images
from curato.features.text_properties import (
    TEXT_PROPERTIES,
    TEXT_PROPERTIES_VERSION,
    TEXT_PROPERTY_COLUMNS,
    text_properties,
)
from curato.features.thumbnails import THUMBNAIL_LAYOUT
from curato.featurestore import PROPERTIES, THUMBNAILS, encoded_ids
from curato.hashing import hash_uris, text_hash
from curato.ingest import readers
from curato.progress import SILENT, Progress
from curato.scale.ray_engine import check_engine, ray_hash, ray_scan_chunks, ray_session
from curato.workspace import Workspace

FORMATS = ("imagefolder", "manifest", "coco", "idx", "text", "label-studio")
PROPERTIES_VERSION = 1
_EXAMPLES = 3


def properties_meta() -> dict[str, Any]:
    """Feature-store settings of the image-properties table (a change invalidates stored rows)."""
    return {"settings": {"columns": list(PROPERTY_COLUMNS), "version": PROPERTIES_VERSION},
            "columns": list(PROPERTY_COLUMNS)}


def text_properties_meta() -> dict[str, Any]:
    """Feature-store settings of the text-properties table (a change invalidates stored rows)."""
    return {"settings": {"columns": list(TEXT_PROPERTY_COLUMNS), "version": TEXT_PROPERTIES_VERSION},
            "columns": list(TEXT_PROPERTY_COLUMNS), "modality": "text"}


def thumbnails_meta() -> dict[str, Any]:
    """Feature-store settings of the scan's thumbnails (uint8 rows; layout in curato.features.thumbnails)."""
    return {"settings": {"layout": THUMBNAIL_LAYOUT, "version": 1}, "layout": THUMBNAIL_LAYOUT}


@dataclass
class IngestSummary:
    """What one ingest did.

    ``rows`` entries were read from the source (manifest rows, COCO images, IDX images, folder entries):
    ``rows == samples + sum(skipped.values())``. ``skipped``: reason -> entries skipped for it;
    ``skipped_examples``: reason -> up to three of them. ``annotations_skipped``: COCO annotations of an image
    id not in ``images``. ``sources_changed``: samples already in the workspace whose source the manifest's
    ``source`` column changed (a change of the ingest's own source name is refused instead).
    """

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
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    annotations_skipped: int = 0
    sources_changed: int = 0
    masks: int = 0  # samples given a mask by --masks
    mask_classes: list[str] = field(default_factory=list)
    masks_unmatched: list[str] = field(default_factory=list)  # --masks files named after no sample


def read_source(source: str | Path, *, format: str | None = None, images_root: str | Path | None = None,
                root: str | Path | None = None) -> tuple[str, readers.ReadResult]:
    """(format, what the reader found) for ``source``; raises InputError for anything unusable.

    ``root``: the folder every file of the dataset must resolve inside (default: the manifest's or COCO
    file's folder, the ``images_root`` given, or the image/IDX folder itself)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path to the dataset")
    problem = None if path.is_dir() else readers.regular_file_error(path)
    if problem:
        raise InputError(f"{path}: {problem}; point at a dataset file or folder")
    chosen = format or readers.detect_format(path)
    if chosen not in FORMATS:
        raise InputError(f"--format {chosen!r} is unknown; use one of {', '.join(FORMATS)}")
    if chosen == "imagefolder":
        if not path.is_dir():
            raise InputError(f"{path}: --format imagefolder needs a directory of class folders")
        found = readers.read_imagefolder(path, root)
    elif chosen == "manifest":
        found = readers.read_manifest(path, root)
    elif chosen == "text":
        found = readers.read_text_table(path)
    elif chosen == "idx":
        found = readers.read_idx_source(path, root)
    elif chosen == "label-studio":
        raise InputError(f"{path}: Label Studio tasks annotate samples already in a workspace; ingest them with "
                         f"`curato ingest {path} -w WORKSPACE --format label-studio`")
    else:
        found = readers.read_coco(path, Path(images_root) if images_root else None, root)
    if not found.records:
        suffixes = ", ".join(sorted(readers.IMAGE_SUFFIXES))
        what = f"image files ({suffixes})" if chosen == "imagefolder" else "samples"
        skipped = sum(len(items) for items in found.skipped.values())
        also = f" ({skipped} entries skipped: {'; '.join(found.skipped)})" if skipped else ""
        raise InputError(f"{path}: no {what} found{also}; point at the folder or file that holds the dataset")
    return chosen, found


_UNSAFE_ID = re.compile(r"[\x00-\x1f\x7f]")


def validate_records(source: Path, records: Sequence[SampleRecord]) -> None:
    """Refuse ids with control characters (a line break in a file name), duplicate ids, and labels that mix
    numbers with names. Ids are kept exactly as read (manifest readers refuse surrounding whitespace)."""
    for record in records:
        if _UNSAFE_ID.search(record.sample_id):
            raise InputError(f"{source}: sample id {record.sample_id!r} has a control character; rename that "
                             f"file or fix that id")
        if not record.sample_id.isascii():
            try:
                record.sample_id.encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not UTF-8 reaches Python as lone surrogates
                raise InputError(f"{source}: file name {record.sample_id!r} is not valid UTF-8; rename that file "
                                 f"(e.g. `convmv -f latin1 -t utf8`)") from None
    # a set of references to the records' own strings: no copy of the ids at the longest id's width
    if len({record.sample_id for record in records}) != len(records):
        counts = Counter(record.sample_id for record in records)
        duplicated = [sid for sid, n in counts.items() if n > 1]
        shown = ", ".join(repr(s) for s in duplicated[:3])
        raise InputError(
            f"{source}: {len(duplicated)} duplicate sample id(s) ({shown}); ids must be unique — fix the 'id' field"
        )
    kinds = {label: _is_number(label) for label in {r.label for r in records if r.label is not None}}
    numeric = [label for label, number in kinds.items() if number]
    named = [label for label, number in kinds.items() if not number]
    if numeric and named:
        rows = Counter(kinds[r.label] for r in records if r.label is not None)
        first = {number: next(r.label for r in records if r.label is not None and kinds[r.label] == number)
                 for number in (True, False)}
        raise InputError(
            f"{source}: field 'label' mixes numbers ({first[True]!r}, {rows[True]} rows) and names "
            f"({first[False]!r}, {rows[False]} rows); use one kind of label throughout"
        )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _assign_sources(workspace: Workspace, source: Path, records: Sequence[SampleRecord], origin: str) -> int:
    """Fill each record's source (its own ``source`` column, else ``origin``) and return how many samples
    already in the workspace the ``source`` column moves to another source. Refuses to move samples to
    another source through ``origin`` (re-ingesting under another --source name): that rewrite is never silent."""
    renamed: Counter[str] = Counter()
    example: dict[str, str] = {}
    moved = 0
    for record, old in zip(records, _stored_values(workspace, records, "source"), strict=True):
        if record.source is None:
            record.source = origin
            if old is not None and old != origin:
                renamed[old] += 1
                example.setdefault(old, record.sample_id)
        elif old is not None and old != record.source:
            moved += 1
    if renamed:
        old, count = renamed.most_common(1)[0]
        raise InputError(
            f"{source}: {sum(renamed.values())} sample(s) already in the workspace come from source {old!r} "
            f"({count} of them, e.g. {example[old]!r}); ingesting them as source {origin!r} would rewrite that — "
            f"pass --source {old} to refresh them, or ingest into another workspace"
        )
    return moved


_LOOKUP_BATCH = 50_000  # samples per catalog lookup by id (an indexed IN-query), per label sync


def _stored_values(workspace: Workspace, records: Sequence[SampleRecord], column: str) -> Iterator[Any]:
    """The catalog's ``column`` of each record's sample (None for a sample not in it), looked up
    ``_LOOKUP_BATCH`` ids at a time: no table of every sample in the catalog is held."""
    for start in range(0, len(records), _LOOKUP_BATCH):
        batch = records[start:start + _LOOKUP_BATCH]
        found = workspace.catalog.samples_of([r.sample_id for r in batch], (column,))
        for record in batch:
            values = found.get(record.sample_id)
            yield None if values is None else values[0]


def _known(workspace: Workspace, sample_ids: Sequence[str]) -> dict[str, tuple[str | None, bool]]:
    """sample_id -> (content hash, readable) of those of ``sample_ids`` already in the catalog."""
    found: dict[str, tuple[str | None, bool]] = {}
    for start in range(0, len(sample_ids), _LOOKUP_BATCH):
        rows = workspace.catalog.samples_of(sample_ids[start:start + _LOOKUP_BATCH], ("content_hash", "readable"))
        found.update((sid, (digest, bool(readable))) for sid, (digest, readable) in rows.items())
    return found


def _catalog_ids(workspace: Workspace, *, readable_only: bool) -> np.ndarray:
    """Every sample id in the catalog (or every readable one) as one bytes array, read in batches."""
    pieces = [np.zeros(0, dtype="S1")]
    for rows in workspace.catalog.samples_in_order(("sample_id", "readable"), batch=_LOOKUP_BATCH):
        pieces.append(encoded_ids([sid for sid, readable in rows if readable or not readable_only]))
    return np.concatenate(pieces)


def ingest(
    workspace: Workspace,
    source: str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    source_name: str | None = None,
    images_root: str | Path | None = None,
    root: str | Path | None = None,
    masks: str | Path | None = None,
    workers: int | None = None,
    chunk_size: int = 4096,
    progress: Progress = SILENT,
    engine: str = "local",
    address: str | None = None,
) -> IngestSummary:
    """Add (or refresh) the samples of ``source`` in ``workspace``.

    ``split`` overrides the split of every sample; ``source_name`` names where the samples came from
    (default: the source's file or folder name), used by ``curato bias --by source``; re-ingesting samples
    under another name is refused. ``root``: the folder every file must resolve inside (default: the
    manifest's folder, or the image folder; see :func:`read_source`). ``masks``: a folder of indexed-PNG label
    maps named by the images' file stems (:func:`curato.ingest.readers.read_mask_folder`), stored as imported
    semantic masks. ``engine``: ``"local"`` (processes on this machine) or ``"ray"`` (Ray Data tasks, on the
    cluster at ``address`` or a local Ray instance; :mod:`curato.scale.ray_engine`) for hashing and scanning
    images; both write the same rows.
    """
    check_engine(engine)
    path = Path(source)
    if (format or (readers.detect_format(path) if path.is_file() else None)) == "label-studio":
        from curato.commands.export_labelstudio import ingest_label_studio  # annotations back as human labels

        return ingest_label_studio(workspace, path)
    chosen, found = read_source(path, format=format, images_root=images_root, root=root)
    records = found.records
    validate_records(path, records)
    mask_found = None if masks is None else readers.read_mask_folder(Path(masks), records)
    origin = source_name or path.stem.split(".")[0] or path.name
    for record in records:
        if split is not None:
            record.split = split
    catalog = workspace.catalog
    summary = IngestSummary(source=str(path), format=chosen, samples=len(records), rows=found.rows,
                            skipped={reason: len(items) for reason, items in found.skipped.items()},
                            skipped_examples={reason: items[:_EXAMPLES] for reason, items in found.skipped.items()},
                            annotations_skipped=len(found.skipped_annotations))
    summary.sources_changed = _assign_sources(workspace, path, records, origin)
    if mask_found is not None:
        summary.masks, summary.mask_classes = len(mask_found.matched), mask_found.classes
        summary.masks_unmatched = mask_found.unmatched
    settings = {"format": chosen, "split": split, "source": origin,
                **({} if masks is None else {"masks": str(Path(masks).resolve())})}
    with catalog.recorded_run("ingest", str(Path(path).resolve()), settings) as run:
        known_before = catalog.sample_count()
        images = [r for r in records if r.kind == "image"]
        texts = [r for r in records if r.kind == "text"]
        _ingest_texts(workspace, texts, summary)
        with ray_session(address) if engine == "ray" and images else nullcontext():
            _ingest_images(workspace, images, summary, workers=workers, chunk_size=chunk_size,
                           progress=progress, engine=engine)
        del images, texts
        with catalog.transaction() as conn:
            for start in range(0, len(records), _LOOKUP_BATCH):  # one transaction, labels synced a batch at a time
                summary.labels_added += catalog.sync_imported_labels(
                    conn, {r.sample_id: r.label for r in records[start:start + _LOOKUP_BATCH] if r.label is not None}
                )
            annotated = [r for r in records if r.annotations]
            if annotated or chosen == "coco" or masks is not None:
                rows = [a for r in records for a in r.annotations]
                catalog.replace_imported_annotations(conn, [r.sample_id for r in records], rows)
                summary.annotations = len(rows)
        # every sample of the source that was in the catalog before was counted changed or unchanged once
        summary.not_in_source = known_before - summary.changed - summary.unchanged
        summary.label_counts = dict(Counter(r.label for r in records if r.label is not None).most_common())
        run.summary = {k: v for k, v in summary.__dict__.items() if k != "label_counts"}
    return summary


def _base_row(record: SampleRecord) -> dict[str, Any]:
    return {"sample_id": record.sample_id, "kind": record.kind, "uri": record.uri, "text": record.text,
            "split": record.split, "source": record.source, "meta": record.meta or None}


def _ingest_texts(workspace: Workspace, texts: list[SampleRecord], summary: IngestSummary) -> None:
    if not texts:
        return
    known = _known(workspace, [record.sample_id for record in texts])
    rows = []
    for record in texts:
        digest = text_hash(record.text or "")
        _count_change(summary, known.get(record.sample_id), digest)
        rows.append({**_base_row(record), "content_hash": digest, "readable": True, "error": None,
                     "bytes": len((record.text or "").encode("utf-8")), "format": "text"})
    meta = text_properties_meta()
    done = workspace.features.done_hashes(TEXT_PROPERTIES, meta=meta)
    todo = [(record, row["content_hash"]) for record, row in zip(texts, rows, strict=True)
            if done.get(record.sample_id) != row["content_hash"]]
    with workspace.catalog.transaction() as conn:
        workspace.catalog.upsert_samples(conn, rows)
    if todo:  # after the catalog rows, like image properties: a crash in between only leaves them to recompute
        workspace.features.write_part(TEXT_PROPERTIES, [record.sample_id for record, _ in todo],
                                      [digest for _, digest in todo], text_properties([r.text or "" for r, _ in todo]))
        workspace.features.finalize(TEXT_PROPERTIES, meta, keep_ids=_catalog_ids(workspace, readable_only=False))


def _count_change(summary: IngestSummary, previous: tuple | None, digest: str | None) -> None:
    if previous is None:
        summary.new += 1
    elif previous[0] != digest:
        summary.changed += 1
    else:
        summary.unchanged += 1


_WINDOW_CHUNKS = 16  # chunks of images hashed, looked up and scanned together


def _ingest_images(workspace: Workspace, images: list[SampleRecord], summary: IngestSummary, *,
                   workers: int | None, chunk_size: int, progress: Progress, engine: str = "local") -> None:
    """Hash, look up, scan and write the images a window of ``_WINDOW_CHUNKS`` chunks at a time: what is held
    for the whole run is the listing and the stored hashes as bytes, not per-image Python state of every image
    (1M images held ~2.4 GB that way). Each chunk's parts and rows are durable as before (resumable)."""
    if not images:
        return
    catalog, store = workspace.catalog, workspace.features
    meta = properties_meta()
    stored = store.done_lookup(PROPERTIES, meta=meta)
    thumbs = store.done_lookup(THUMBNAILS, meta=thumbnails_meta())
    progress.stage("scanning images", len(images))
    window = chunk_size * _WINDOW_CHUNKS
    for window_start in range(0, len(images), window):
        batch = images[window_start:window_start + window]
        uris = [r.uri for r in batch]
        if engine == "ray":
            digests = ray_hash(uris)
        else:
            digests = []
            for start in range(0, len(batch), chunk_size):
                digests += hash_uris(uris[start:start + chunk_size])
        ids = [r.sample_id for r in batch]
        known = _known(workspace, ids)
        done = stored.matches(ids, digests) & thumbs.matches(ids, digests)
        todo: list[int] = []
        untouched: list[dict[str, Any]] = []
        for index, (record, digest) in enumerate(zip(batch, digests, strict=True)):
            previous = known.get(record.sample_id)
            _count_change(summary, previous, digest)
            fresh = previous is not None and previous[0] == digest and digest is not None
            if fresh and (done[index] or not previous[1]):
                untouched.append(_base_row(record))
                summary.unreadable += not previous[1]
            else:
                todo.append(index)
        del known, ids, digests
        with catalog.transaction() as conn:
            catalog.upsert_samples(conn, untouched)
        progress.advance(len(untouched))
        del untouched
        summary.scanned += len(todo)
        _scan_window(workspace, [batch[i] for i in todo], summary, workers=workers, chunk_size=chunk_size,
                     progress=progress, engine=engine)
    del stored, thumbs
    readable_ids = _catalog_ids(workspace, readable_only=True)
    if store.pending_parts(PROPERTIES):
        store.finalize(PROPERTIES, meta, keep_ids=readable_ids)
    if store.pending_parts(THUMBNAILS):
        store.finalize(THUMBNAILS, thumbnails_meta(), keep_ids=readable_ids, dtype="uint8")


def _scan_window(workspace: Workspace, todo: list[SampleRecord], summary: IngestSummary, *, workers: int | None,
                 chunk_size: int, progress: Progress, engine: str) -> None:
    """Scan ``todo`` a chunk at a time; write each chunk's feature parts, then its catalog rows."""
    catalog, store = workspace.catalog, workspace.features
    uris = [record.uri for record in todo]
    tables = (ray_scan_chunks(uris, chunk_size=chunk_size) if engine == "ray" else
              (scan_images(uris[start:start + chunk_size], workers=workers, progress=progress.advance)
               for start in range(0, len(todo), chunk_size)))
    for start, table in zip(range(0, len(todo), chunk_size), tables, strict=True):
        chunk = todo[start:start + chunk_size]
        if engine == "ray":
            progress.advance(len(chunk))
        readable = np.flatnonzero(table.readable)
        summary.unreadable += len(chunk) - len(readable)
        if len(readable):
            chunk_ids = [chunk[i].sample_id for i in readable]
            store.write_part(PROPERTIES, chunk_ids, table.content_hash[readable].tolist(),
                             table.properties[readable])
            store.write_part(THUMBNAILS, chunk_ids, table.content_hash[readable].tolist(),
                             table.thumbnails[readable])
        with catalog.transaction() as conn:
            catalog.upsert_samples(conn, _scanned_rows(chunk, table))


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
