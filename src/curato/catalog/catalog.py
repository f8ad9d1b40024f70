"""Catalog queries. SQLite by default (WAL, one transaction per write step); PostgreSQL by URL.

Opening a catalog never creates one: a SQLite file is opened in ``mode=rw`` so a deleted catalog is an error,
not a new empty one; only :meth:`Catalog.create` (a new workspace) makes the file. Database errors the user
can cause (disk full, read-only, damaged file, missing tables) surface as one-line WorkspaceErrors naming the
catalog and what to do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import (
    Connection,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    inspect,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url

from curato.catalog import schema
from curato.catalog.schema import LABELLING_QUEUE, annotations, decisions, info, labels, runs, samples
from curato.errors import WorkspaceBusyError, WorkspaceError, storage_error
from curato.masks import encode_rle, mask_bbox, merge_masks, segmentation_mask, split_label_map
from curato.version import __version__

WORKSPACE_PLACEHOLDER = "{workspace}"  # stands for the workspace folder in stored sample uris
_URI_PREFIXES = ("", "idx:")  # plain file paths and images inside IDX files (idx:<file>#<index>)
_LOW_SPACE = 1 << 20  # bytes: less free space than this makes an I/O error a full disk
MASK_KINDS = ("rle", "polygon")  # annotation kinds that are pixel masks



def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass
class SampleRecord:
    """One sample as an ingest reader sees it, before files are scanned."""

    sample_id: str
    kind: str = "image"
    uri: str | None = None
    text: str | None = None
    split: str | None = None
    source: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _chunks(items: Sequence[Any], size: int = 5000) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True)
class CuratedLabel:
    """The label that counts for one sample (:meth:`Catalog.curated_labels`): ``origin`` human | model | imported,
    ``how`` review | aggregated | annotator | routed | imported."""

    label: str
    origin: str
    how: str


@dataclass
class RecordedRun:
    """The run row of a block of work (:meth:`Catalog.recorded_run`); set ``summary`` before the block ends."""

    id: int
    summary: dict[str, Any] = field(default_factory=dict)


class Catalog:
    """Samples, labels, annotations and runs of one workspace.

    ``url`` is any SQLAlchemy URL (or ``URL``); SQLite files get WAL journaling and foreign keys. ``root``: the
    workspace folder; sample files inside it are stored relative to it (``{workspace}/...``), so moving the
    folder with its data keeps them.
    """

    def __init__(self, url: str | URL, *, root: str | Path | None = None) -> None:
        parsed = make_url(url) if isinstance(url, str) else url
        self.url = url if isinstance(url, str) else parsed.render_as_string(hide_password=True)
        self._shown = parsed.render_as_string(hide_password=True)  # for messages: never the password
        self.root = None if root is None else str(Path(root).resolve())
        self.path: Path | None = None  # the SQLite file, when the catalog is one
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not parsed.database.startswith("file:"):
            self.path = Path(parsed.database).resolve()
            # mode=rw: a missing file is an error, never silently a new empty catalog
            parsed = parsed.set(database=f"file:{quote(str(self.path))}",
                                query={**parsed.query, "mode": "rw", "uri": "true"})
        self.engine: Engine = create_engine(parsed)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "handle_error", self._translate_error)

    @property
    def where(self) -> str:
        """The catalog as the user knows it: its file, else its URL (password hidden)."""
        return str(self.path) if self.path is not None else self._shown

    # ---- lifecycle -------------------------------------------------------------------------
    def create(self) -> None:
        """Create the catalog (its file, when SQLite) with every table, stamped at the newest migration and
        schema version; refuse a newer schema. Only for a new workspace: :meth:`verify` opens an existing one
        (a database that already holds a catalog is migrated like :meth:`verify` does, never re-created)."""
        from curato.catalog import migrate

        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab"):
                    pass
            except OSError as error:
                raise storage_error(error, "cannot create the catalog") from error
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        with self.engine.begin() as conn:
            existing = inspect(conn).has_table("samples")
            if not existing:
                schema.metadata.create_all(conn)
                migrate.stamp_head(conn)
            if self._check_version(conn) is None and not existing:
                conn.execute(info.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
            behind = existing and migrate.needs_upgrade(conn)
        if behind:
            migrate.upgrade(self.engine, where=self.where)

    def verify(self) -> None:
        """Check that an existing catalog is there, holds curato's tables and is not from a newer curato.

        Raises WorkspaceError naming the catalog and what to do; never creates the catalog. A catalog from an
        older curato is migrated to this schema (:func:`curato.catalog.migrate.upgrade`, which needs alembic);
        a current one is only read, so a read-only workspace stays readable.
        """
        from curato.catalog import migrate

        fix = ("restore it from a backup, or move the workspace aside and re-create it with `curato ingest SOURCE "
               "-w NEW_DIR` (its features and reports cannot be used without their catalog)")
        if self.path is not None:
            if not self.path.exists():
                raise WorkspaceError(f"{self.path}: the catalog is missing; {fix}")
            if self.path.stat().st_size == 0:
                raise WorkspaceError(f"{self.path}: the catalog is empty (0 bytes); {fix}")
        present = set(inspect(self.engine).get_table_names())
        core = {"info", "samples", "labels", "runs"}
        if not core <= present:
            missing = ", ".join(sorted(core - present))
            what = "holds no curato tables" if not present & core else f"lacks table(s) {missing}"
            raise WorkspaceError(f"{self.where}: the catalog {what}; {fix}")
        with self.engine.connect() as conn:
            self._check_version(conn)
            behind = migrate.needs_upgrade(conn)
        if behind:
            migrate.upgrade(self.engine, where=self.where)

    def _check_version(self, conn: Connection) -> int | None:
        """The catalog's ``info.schema_version`` (None when absent), read only; WorkspaceError when it is not a
        number or newer than this curato's: a newer catalog is never opened, let alone migrated."""
        found = conn.execute(select(info.c.value).where(info.c.key == "schema_version")).scalar()
        if found is None:
            return None
        try:
            version = int(found)
        except ValueError:
            raise WorkspaceError(f"{self.where}: catalog schema version {found!r} is not a number; the catalog is "
                                 "damaged: restore it from a backup") from None
        if version > schema.SCHEMA_VERSION:
            raise WorkspaceError(
                f"{self.where}: catalog schema {found} is newer than this curato ({schema.SCHEMA_VERSION});"
                " upgrade curato"
            )
        return version

    def integrity_problems(self) -> list[str]:
        """What SQLite's ``PRAGMA quick_check`` finds wrong in the file (empty when sound; PostgreSQL: empty)."""
        if self.engine.dialect.name != "sqlite":
            return []
        try:
            with self.engine.connect() as conn:
                rows = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check").all()]
        except WorkspaceError as error:
            return [str(error)]
        return [] if rows == ["ok"] else rows

    def exists(self) -> bool:
        """Whether the catalog tables are present."""
        return inspect(self.engine).has_table("samples")

    def _translate_error(self, context: Any) -> None:
        """SQLAlchemy ``handle_error`` hook: database errors a user can cause become one-line WorkspaceErrors."""
        original = context.original_exception
        if not isinstance(original, sqlite3.Error):
            return
        message = str(original).lower()
        where = self.where
        if "disk i/o error" in message and not self._low_on_space():
            raise WorkspaceError(f"{where}: I/O error on the catalog ({original}): a failing disk or a dropped network"
                                 " mount; check the disk, then run the same command again (`curato check` tells "
                                 "whether anything was damaged)") from original
        if "database or disk is full" in message or "disk i/o error" in message:
            raise WorkspaceError(f"{where}: disk full while writing the catalog; free some space and run the same "
                                 "command again (finished work is kept)") from original
        if "readonly database" in message or "read-only" in message:
            raise WorkspaceError(f"{where}: the catalog is read-only for this user, and SQLite writes its journal "
                                 "beside it even to read; make the workspace folder writable by this user (or copy "
                                 "it somewhere writable)") from original
        if "database is locked" in message or "database is busy" in message:
            raise WorkspaceBusyError(f"{where}: the catalog stayed locked by another process for 30 s; wait for it "
                                     "to finish, then run the command again") from original
        if "unable to open database file" in message:
            state = "is missing" if self.path is not None and not self.path.exists() else "cannot be opened"
            raise WorkspaceError(f"{where}: the catalog {state}; check that the workspace folder is there and "
                                 "readable, or restore the catalog from a backup") from original
        if "not a database" in message or "malformed" in message or "no such table" in message:
            raise WorkspaceError(f"{where}: the catalog is damaged ({original}); restore it from a backup, or move "
                                 "the workspace aside and re-create it with `curato ingest SOURCE -w NEW_DIR`") \
                from original

    def _low_on_space(self) -> bool:
        """Whether the catalog's disk is (nearly) full: SQLite reports some failed writes as I/O errors."""
        if self.path is None:
            return False
        try:
            return shutil.disk_usage(self.path.parent).free < _LOW_SPACE
        except OSError:
            return False

    # ---- sample uris: files inside the workspace are stored relative to it ---------------------------
    def _stored_uri(self, uri: str | None) -> str | None:
        if uri is None or self.root is None:
            return uri
        for prefix in _URI_PREFIXES:
            head = prefix + self.root + os.sep
            if uri.startswith(head):
                return prefix + WORKSPACE_PLACEHOLDER + os.sep + uri[len(head):]
        return uri

    def loaded_uri(self, uri: str | None) -> str | None:
        """A stored uri as a path on this machine (``{workspace}`` replaced by the workspace folder)."""
        if uri is None or self.root is None:
            return uri
        for prefix in _URI_PREFIXES:
            head = prefix + WORKSPACE_PLACEHOLDER + os.sep
            if uri.startswith(head):
                return prefix + self.root + os.sep + uri[len(head):]
        return uri

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    # ---- samples ---------------------------------------------------------------------------
    def known_samples(self) -> dict[str, tuple[str | None, str | None, bool]]:
        """sample_id -> (uri, content_hash, readable) for every sample in the catalog."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(samples.c.sample_id, samples.c.uri, samples.c.content_hash, samples.c.readable)
            )
            return {row[0]: (self.loaded_uri(row[1]), row[2], bool(row[3])) for row in rows}

    def upsert_samples(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new samples and update changed ones (keyed by sample_id), inside ``conn``."""
        if not rows:
            return
        if self.root is not None and "uri" in rows[0]:
            rows = [{**row, "uri": self._stored_uri(row["uri"])} for row in rows]
        insert = _dialect_insert(conn)
        now = utcnow()
        # executemany with one cached statement: compiling a multi-row VALUES clause per chunk is far slower
        columns = list(rows[0])
        statement = insert(samples)
        statement = statement.on_conflict_do_update(
            index_elements=["sample_id"],
            set_={name: statement.excluded[name] for name in [*columns, "updated_at"] if name != "sample_id"},
        )
        for chunk in _chunks(rows):
            conn.execute(statement, [{**row, "created_at": now, "updated_at": now} for row in chunk])

    def samples(
        self, columns: Sequence[str] = ("sample_id", "uri", "split", "source"), *, kind: str | None = None
    ) -> dict[str, np.ndarray]:
        """Columns of the samples table as arrays, ordered by sample_id."""
        chosen = [samples.c[name] for name in columns]
        query = select(*chosen).order_by(samples.c.sample_id)
        if kind is not None:
            query = query.where(samples.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        result = {name: np.array([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)}
        if "uri" in result and self.root is not None:
            result["uri"] = np.array([self.loaded_uri(uri) for uri in result["uri"].tolist()], dtype=object)
        return result

    def sample_count(self) -> int:
        """Number of samples in the catalog."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(samples)).scalar() or 0)

    def sample_kinds(self) -> dict[str, int]:
        """Number of samples per kind (image, text)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(samples.c.kind, func.count()).group_by(samples.c.kind))
            return {row[0]: int(row[1]) for row in rows}

    # ---- labels ----------------------------------------------------------------------------
    def sync_imported_labels(self, conn: Connection, new_labels: dict[str, str]) -> int:
        """Record imported labels that differ from the latest imported one; returns rows added."""
        latest = _latest_labels(conn, origin="imported", sample_ids=list(new_labels))
        now = utcnow()
        rows = [
            {"sample_id": sid, "label": label, "origin": "imported", "created_at": now}
            for sid, label in new_labels.items()
            if latest.get(sid) != label
        ]
        for chunk in _chunks(rows):
            conn.execute(labels.insert(), list(chunk))
        # Labelled elsewhere and re-imported: the loop closes.
        self.set_queue_status(conn, [row["sample_id"] for row in rows], "labelled")
        return len(rows)

    def add_labels(
        self,
        conn: Connection,
        new_labels: dict[str, str],
        *,
        origin: str,
        annotator: str | None = None,
        confidence: dict[str, float] | None = None,
    ) -> int:
        """Append labels of one origin (``schema.LABEL_ORIGINS``); history is kept, the latest one counts. Human
        and imported labels close the samples' open queue entries (``labelled``); model labels leave them for a
        person."""
        if origin not in schema.LABEL_ORIGINS:
            raise ValueError(f"origin must be one of {schema.LABEL_ORIGINS}, not {origin!r}")
        now = utcnow()
        rows = [
            {
                "sample_id": sid,
                "label": label,
                "origin": origin,
                "annotator": annotator,
                "confidence": None if confidence is None else confidence.get(sid),
                "created_at": now,
            }
            for sid, label in new_labels.items()
        ]
        for chunk in _chunks(rows):
            conn.execute(labels.insert(), list(chunk))
        if origin != "model":
            self.set_queue_status(conn, new_labels, "labelled")
        return len(rows)

    def current_labels(self) -> dict[str, str]:
        """sample_id -> the curated label every downstream step uses (:meth:`curated_labels`)."""
        return {sid: curated.label for sid, curated in self.curated_labels().items()}

    def curated_labels(self) -> dict[str, CuratedLabel]:
        """sample_id -> the label that counts and where it came from: THE rule every command uses.

        1. a reviewer's decision in the app (the latest one not undone) -- a review is final;
        2. else the human annotators' labels: one annotator's latest answer, or, when several annotators
           labelled the sample, their aggregate (:func:`curato.crowd.aggregate_labels`: Dawid-Skene, majority
           vote as fallback);
        3. else the latest model label a ``curato route`` rule accepted;
        4. else the latest imported label.
        Retracted (undone) labels never count; the history stays in the ``labels`` table.

        The imported and model labels (nearly every row at scale) are read in id order straight into dicts,
        whose last write per sample is the latest label; only the human rows go through the rule in Python.
        Samples share one CuratedLabel per (label, origin, how).
        """
        with self.engine.connect() as conn:
            imported = _latest_per_sample(conn, "imported")
            routed = _latest_per_sample(conn, "model")
            human = _human_curated(conn)
        shared: dict[tuple[str, str, str], CuratedLabel] = {}

        def one(label: str, origin: str, how: str) -> CuratedLabel:
            found = shared.get((label, origin, how))
            if found is None:
                found = shared[label, origin, how] = CuratedLabel(label, origin, how)
            return found

        result = {sid: one(label, "imported", "imported") for sid, label in imported.items()}
        result.update((sid, one(label, "model", "routed")) for sid, label in routed.items())
        result.update(human)
        return result

    def curated_label_counts(self, column: str | None = "split") -> dict[tuple[str, str, Any], int]:
        """(curated label, origin, the sample's ``column`` value) -> number of samples, by the rule of
        :meth:`curated_labels`, without loading every sample: the imported and model labels of samples without
        a human label are counted by one GROUP BY in the database; the few human-labelled samples go through the
        rule in Python. ``column=None``: the value is None (counts per label and origin). Samples without any
        label are not counted."""
        with self.engine.connect() as conn:
            human = _human_curated(conn)
            counts: Counter[tuple[str, str, Any]] = Counter()
            for row in conn.execute(_machine_counts_query(column)):
                counts[row[0], row[1], row[2] if column is not None else None] += int(row[-1])
            wanted = [samples.c.sample_id, samples.c[column] if column is not None else null()]
            for chunk in _chunks(list(human), 900):
                for sid, value in conn.execute(select(*wanted).where(samples.c.sample_id.in_(chunk))):
                    counts[human[sid].label, "human", value] += 1
        return dict(counts)

    def original_labels(self) -> dict[str, str]:
        """sample_id -> the first label ever imported for it (what the dataset came with)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.sample_id, labels.c.label).where(labels.c.origin == "imported")
                                .order_by(labels.c.id.desc())).all()
        return {sid: label for sid, label in rows}  # descending ids: the first import is written last

    def sample_states(self) -> dict[str, str]:
        """sample_id -> ``excluded`` or ``ambiguous`` for samples people took out of the dataset in the app
        (decisions not undone, applied in order: a later decision on the same sample wins)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(decisions.c.effects).where(decisions.c.undone_at.is_(None))
                                .order_by(decisions.c.id)).all()
        states: dict[str, str] = {}
        for (effects,) in rows:
            effects = effects if isinstance(effects, dict) else {}
            for sid in effects.get("include", []):
                states.pop(sid, None)
            for state in ("excluded", "ambiguous"):
                for sid in effects.get(state, []):
                    states[sid] = state
        return states

    # ---- annotations -----------------------------------------------------------------------
    def replace_imported_annotations(
        self, conn: Connection, sample_ids: Iterable[str], rows: Sequence[dict[str, Any]]
    ) -> None:
        """Swap the imported annotations of ``sample_ids`` for ``rows`` (human ones are kept)."""
        ids = list(sample_ids)
        for chunk in _chunks(ids, 900):
            conn.execute(
                delete(annotations).where(
                    annotations.c.sample_id.in_(chunk), annotations.c.origin == "imported"
                )
            )
        now = utcnow()
        for chunk in _chunks(list(rows)):
            conn.execute(annotations.insert(), [{**row, "origin": "imported", "created_at": now} for row in chunk])

    def object_boxes(self) -> dict[str, dict[str, Any]]:
        """Per annotated sample: total bbox ``area`` (pixels) and the union ``box`` [x0, y0, x1, y1] of its bboxes."""
        result: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotations.c.sample_id, annotations.c.kind, annotations.c.data,
                                       annotations.c.area))
            for sample_id, kind, data, area in rows:
                entry = result.setdefault(sample_id, {"area": 0.0, "box": None})
                if kind == "bbox":  # masks of the same object repeat its area; count each object once
                    entry["area"] += float(area or 0.0)
                    x, y, w, h = (float(v) for v in (data or {}).get("bbox", (0, 0, 0, 0)))
                    box = entry["box"]
                    entry["box"] = [x, y, x + w, y + h] if box is None else [
                        min(box[0], x), min(box[1], y), max(box[2], x + w), max(box[3], y + h)]
        return result

    def annotation_count(self) -> dict[str, int]:
        """Number of annotations per kind."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotations.c.kind, func.count()).group_by(annotations.c.kind))
            return {row[0]: int(row[1]) for row in rows}

    # ---- pixel masks (curato.masks; docs/workspace.md "Masks") --------------------------------------
    def masks(self, sample_id: str) -> list[dict[str, Any]]:
        """Every mask row (kind rle or polygon) of one sample, oldest first, superseded ones included (their
        ``data`` holds ``superseded_by``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotations).where(annotations.c.sample_id == sample_id,
                                                          annotations.c.kind.in_(MASK_KINDS))
                                .order_by(annotations.c.id))
            return [dict(row._mapping) for row in rows]

    def mask_classes(self) -> list[str]:
        """The class names of the workspace's semantic masks, by the class index they were stored with (the
        ingested ``classes.txt`` order), then by name; label map value i + 1 is class i."""
        order: dict[str, int] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotations.c.category, annotations.c.data)
                                .where(annotations.c.kind == "rle", annotations.c.category.is_not(None)))
            for category, data in rows:
                if isinstance(data, dict) and data.get("semantic"):
                    index = data.get("index")
                    index = int(index) if isinstance(index, int) else 1 << 30
                    order[category] = min(order.get(category, 1 << 30), index)
        return sorted(order, key=lambda name: (order[name], name))

    def mask_sample_ids(self) -> list[str]:
        """Samples holding at least one mask (semantic or instance), sorted."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotations.c.sample_id).where(annotations.c.kind.in_(MASK_KINDS))
                                .distinct().order_by(annotations.c.sample_id))
            return [row[0] for row in rows]

    def setting(self, key: str) -> str | None:
        """A workspace setting kept in the ``info`` table (the labelling app's settings, the report's title)."""
        with self.engine.connect() as conn:
            return conn.execute(select(info.c.value).where(info.c.key == key)).scalar()

    def set_setting(self, conn: Connection, key: str, value: str) -> None:
        """Store a workspace setting inside ``conn`` (replacing the old value)."""
        conn.execute(info.delete().where(info.c.key == key))
        conn.execute(info.insert().values(key=key, value=value))

    def claim_mask(self, conn: Connection, sample_id: str, annotator: str, *, now: dt.datetime,
                   expired_before: dt.datetime) -> bool:
        """Claim ``sample_id`` for masking by ``annotator`` in one statement, inside ``conn``: a new claim, the
        annotator's own (renewed), or one older than ``expired_before`` (taken over). False when someone
        else's claim is current."""
        insert = _dialect_insert(conn)
        claims = schema.mask_claims
        statement = insert(claims).values(sample_id=sample_id, annotator=annotator, claimed_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=["sample_id"], set_={"annotator": annotator, "claimed_at": now},
            where=(claims.c.annotator == annotator) | (claims.c.claimed_at < expired_before))
        return conn.execute(statement.returning(claims.c.sample_id)).first() is not None

    def mask_claims(self, *, current_after: dt.datetime) -> dict[str, str]:
        """sample_id -> annotator of every mask claim made after ``current_after`` (the lease's start)."""
        claims = schema.mask_claims
        with self.engine.connect() as conn:
            return dict(conn.execute(select(claims.c.sample_id, claims.c.annotator).where(
                claims.c.claimed_at >= current_after)).all())

    def release_mask_claims(self, conn: Connection, annotator: str, sample_ids: Iterable[str]) -> None:
        """Drop ``annotator``'s claims on ``sample_ids`` (saved or skipped), inside ``conn``."""
        wanted = list(sample_ids)
        if wanted:
            claims = schema.mask_claims
            conn.execute(delete(claims).where(claims.c.annotator == annotator, claims.c.sample_id.in_(wanted)))

    def semantic_masks(self) -> SemanticMasks:
        """Every sample's current mask, read lazily: a Mapping sample_id -> :meth:`semantic_mask` with the
        workspace's :meth:`mask_classes`, then the other mask categories (COCO instances) by name."""
        classes = self.mask_classes()
        with self.engine.connect() as conn:
            others = {row[0] for row in conn.execute(select(annotations.c.category).where(
                annotations.c.kind.in_(MASK_KINDS), annotations.c.category.is_not(None)).distinct())}
        return SemanticMasks(self, self.mask_sample_ids(), classes + sorted(others - set(classes)))

    def semantic_mask(self, sample_id: str, classes: Sequence[str] | None = None
                      ) -> tuple[np.ndarray, list[str]] | None:
        """(label map, class names) of a sample's current semantic mask, or None without masks.

        The current mask is the newest set of rows of the first origin that has one: human, then model, then
        imported (superseded rows never count). A sample with only instance masks (COCO) gets them merged into
        a label map (later instances over earlier ones). Label value i + 1 is ``class_names[i]``: ``classes``
        when given (names the sample uses beyond them are appended), else :meth:`mask_classes`."""
        rows = [row for row in self.masks(sample_id) if not (row["data"] or {}).get("superseded_by")]
        semantic = [row for row in rows if row["kind"] == "rle" and (row["data"] or {}).get("semantic")]
        chosen = next(([row for row in semantic if row["origin"] == origin] for origin in ("human", "model",
                                                                                             "imported")
                       if any(row["origin"] == origin for row in semantic)), [])
        if not chosen:
            chosen = [row for row in rows if row["origin"] == "imported" and row["category"] is not None]
        if not chosen:
            return None
        names = list(classes) if classes is not None else self.mask_classes()
        for row in chosen:
            if row["category"] is not None and row["category"] not in names:
                names.append(row["category"])
        shape = self._mask_shape(sample_id, chosen)
        binaries = [segmentation_mask(row["data"]["segmentation"], shape) for row in chosen]
        keep = [i for i, row in enumerate(chosen) if row["category"] is not None]
        label_map = merge_masks([binaries[i] for i in keep], [names.index(chosen[i]["category"]) + 1 for i in keep],
                                shape)
        return label_map, names

    def _mask_shape(self, sample_id: str, rows: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
        for row in rows:
            segmentation = (row["data"] or {}).get("segmentation")
            if isinstance(segmentation, dict) and "size" in segmentation:
                return int(segmentation["size"][0]), int(segmentation["size"][1])
        with self.engine.connect() as conn:
            found = conn.execute(select(samples.c.height, samples.c.width)
                                 .where(samples.c.sample_id == sample_id)).first()
        return None if found is None or not found[0] else (int(found[0]), int(found[1]))

    def save_semantic_mask(self, conn: Connection, sample_id: str, label_map: np.ndarray,
                           class_names: Sequence[str], origin: str = "human",
                           annotator: str | None = None) -> list[int]:
        """Append a sample's semantic mask inside ``conn``: one ``rle`` row per class present (compressed counts,
        ``index`` = its label value), or one row with no category for an all-background mask. Earlier current
        rows of the same origin stay as history with ``superseded_by`` (the first new row's id) in their data.
        Returns the new rows' ids."""
        if origin not in schema.LABEL_ORIGINS:
            raise ValueError(f"origin must be one of {schema.LABEL_ORIGINS}, not {origin!r}")
        rows = mask_rows(sample_id, label_map, class_names)
        now = utcnow()
        previous = conn.execute(select(annotations.c.id, annotations.c.data).where(
            annotations.c.sample_id == sample_id, annotations.c.kind == "rle", annotations.c.origin == origin)).all()
        ids = [int(conn.execute(annotations.insert().values(**row, origin=origin, annotator=annotator,
                                                            created_at=now)).inserted_primary_key[0])
               for row in rows]
        for row_id, data in previous:
            if isinstance(data, dict) and data.get("semantic") and not data.get("superseded_by"):
                conn.execute(update(annotations).where(annotations.c.id == row_id)
                             .values(data={**data, "superseded_by": ids[0]}))
        return ids

    # ---- runs ------------------------------------------------------------------------------
    def start_run(self, kind: str, name: str | None = None, params: dict[str, Any] | None = None) -> int:
        """Record that a computation started; returns its run id. While it runs, its ``summary`` holds the
        ``pid`` and ``host`` of the process, so that a later command can tell a dead run
        (:meth:`interrupt_dead_runs`)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.insert().values(
                    kind=kind, name=name, params=params or {}, version=__version__,
                    status="running", summary={"pid": os.getpid(), "host": socket.gethostname()},
                    started_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0])

    @contextmanager
    def recorded_run(self, kind: str, name: str | None = None,
                     params: dict[str, Any] | None = None) -> Iterator[RecordedRun]:
        """Record the work inside the ``with`` block as one run: ``done`` with ``run.summary`` when the block
        ends, ``failed`` or ``interrupted`` (with the error) when it raises -- the error is re-raised.

        When recording the failure fails too (the disk that broke the work is still full), the original error
        is raised with a note, and the run stays ``running`` until a later command marks it ``interrupted``.
        """
        run = RecordedRun(self.start_run(kind, name, params))
        try:
            yield run
        except BaseException as error:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            try:
                self.finish_run(run.id, status, {"error": str(error)})
            except Exception as second:  # never let the bookkeeping mask what went wrong
                error.add_note(f"(run {run.id} could not be marked {status}: {second})")
            raise
        self.finish_run(run.id, "done", run.summary)

    def interrupt_dead_runs(self, alive: Callable[[int], bool], host: str) -> list[int]:
        """Mark ``interrupted`` every ``running`` run whose process is gone: recorded on ``host`` with a pid
        for which ``alive`` is False, or recorded without a pid (an older curato). Returns their ids.

        Call it only while holding the workspace's writer lock: then no other writer's run can be mistaken.
        """
        dead = []
        for row in self.runs():
            if row["status"] != "running":
                continue
            summary = row["summary"] if isinstance(row["summary"], dict) else {}
            pid, where = summary.get("pid"), summary.get("host")
            if isinstance(pid, int) and (where != host or alive(pid)):
                continue
            dead.append(int(row["id"]))
        for run_id in dead:
            self.finish_run(run_id, "interrupted",
                            {"error": "the process running it ended before it finished (crash, kill or full disk); "
                                      "run the same command again to resume"})
        return dead

    def finish_run(self, run_id: int, status: str = "done", summary: dict[str, Any] | None = None) -> None:
        """Mark a run done, failed or interrupted, with a summary of what it produced."""
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status, summary=summary or {}, finished_at=utcnow())
            )

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All runs (optionally of one kind), oldest first."""
        query = select(runs).order_by(runs.c.id)
        if kind is not None:
            query = query.where(runs.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # ---- summaries -------------------------------------------------------------------------
    def group_counts(self, column: str) -> dict[str | None, int]:
        """Number of samples per value of a samples column (split, source, format, kind)."""
        col = samples.c[column]
        with self.engine.connect() as conn:
            rows = conn.execute(select(col, func.count()).group_by(col).order_by(col))
            return {row[0]: int(row[1]) for row in rows}

    def sample_overview(self) -> dict[str, Any]:
        """Numbers of samples per kind, split, source and format, and of readable samples per kind, in ONE pass
        over the samples table: the combinations are grouped once (``combos``) and each margin is summed from
        that small table, ordered by value as the database orders it (as :meth:`group_counts` does).
        ``{"samples": n, "kinds", "splits", "sources", "formats", "readable": {kind: n}}``."""
        margins = ("kind", "split", "source", "format")
        combos = (select(*(samples.c[name] for name in margins), samples.c.readable, func.count().label("n"))
                  .group_by(*(samples.c[name] for name in margins), samples.c.readable).cte("combos"))
        if self.engine.dialect.name == "sqlite":
            combos = combos.prefix_with("MATERIALIZED")
        parts = [select(literal(part).label("part"), combos.c[name].label("value"), func.sum(combos.c.n))
                 .group_by(combos.c[name]) for part, name in enumerate(margins)]
        parts.append(select(literal(len(margins)).label("part"), combos.c.kind.label("value"), func.sum(combos.c.n))
                     .where(combos.c.readable.is_(True)).group_by(combos.c.kind))
        query = union_all(*parts).order_by("part", "value")
        found: list[dict[Any, int]] = [{} for _ in range(len(margins) + 1)]
        with self.engine.connect() as conn:
            for part, value, count in conn.execute(query):
                found[int(part)][value] = int(count)
        return {"samples": sum(found[0].values()), "kinds": found[0], "splits": found[1], "sources": found[2],
                "formats": found[3], "readable": found[4]}

    def unreadable(self) -> list[tuple[str, str]]:
        """(sample_id, error) of every sample whose file could not be decoded."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(samples.c.sample_id, samples.c.error)
                .where(samples.c.readable.is_(False))
                .order_by(samples.c.sample_id)
            )
            return [(row[0], row[1]) for row in rows]

    # ---- active learning queue and model labels (curato.active) --------------------------------
    def queue_batch(self, conn: Connection, run_id: int, strategy: str, rows: Sequence[dict[str, Any]]) -> int:
        """Queue a batch for labelling (``rows``: sample_id, rank, score, reason), inside ``conn``."""
        now = utcnow()
        entries = [{"sample_id": row["sample_id"], "run_id": run_id, "strategy": strategy, "rank": int(row["rank"]),
                    "score": row.get("score"), "reason": row.get("reason"), "status": "queued", "created_at": now}
                   for row in rows]
        for chunk in _chunks(entries):
            conn.execute(schema.queue.insert(), list(chunk))
        return len(entries)

    def queued(self, status: str | None = "queued") -> list[dict[str, Any]]:
        """Queue entries (all when ``status`` is None), oldest batch first, by rank."""
        query = select(schema.queue).order_by(schema.queue.c.run_id, schema.queue.c.rank)
        if status is not None:
            query = query.where(schema.queue.c.status == status)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def set_queue_status(self, conn: Connection, sample_ids: Iterable[str], status: str) -> int:
        """Mark the queued entries of ``sample_ids`` labelled or skipped; returns entries changed."""
        if status not in schema.QUEUE_STATUSES:
            raise ValueError(f"status must be one of {schema.QUEUE_STATUSES}, not {status!r}")
        changed = 0
        for chunk in _chunks(list(sample_ids), 900):
            result = conn.execute(update(schema.queue).where(schema.queue.c.sample_id.in_(chunk),
                                                              schema.queue.c.status == "queued").values(status=status))
            changed += int(result.rowcount or 0)
        return changed

    def retract_model_labels(self, conn: Connection, annotator: str) -> int:
        """Retract the model labels one routing run stored (reversal of ``curato route``): the rows stay as history
        but no longer count; their samples' ``routed`` queue entries are queued again. Returns rows retracted."""
        retracted = select(labels.c.sample_id).where(labels.c.origin == "model", labels.c.annotator == annotator,
                                                     labels.c.retracted_at.is_(None))
        conn.execute(update(schema.queue).where(schema.queue.c.status == "routed",
                                                schema.queue.c.sample_id.in_(retracted)).values(status="queued"))
        result = conn.execute(update(labels).where(labels.c.origin == "model", labels.c.annotator == annotator,
                                                   labels.c.retracted_at.is_(None)).values(retracted_at=utcnow()))
        return int(result.rowcount or 0)

    def labeled_sample_ids(self, origins: Sequence[str]) -> set[str]:
        """Samples holding at least one label of the given origins (e.g. human and imported)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.sample_id).where(labels.c.origin.in_(list(origins)),
                                                                 labels.c.retracted_at.is_(None)).distinct())
            return {row[0] for row in rows}

    def label_counts_by_annotator(self, origin: str) -> dict[str | None, int]:
        """Number of labels of one origin per annotator that still count (e.g. model labels per routing run)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.annotator, func.count())
                                .where(labels.c.origin == origin, labels.c.retracted_at.is_(None))
                                .group_by(labels.c.annotator))
            return {row[0]: int(row[1]) for row in rows}


    # ---- sizing curve points (curato.sizing) ---------------------------------------------------
    def curve_points(self, settings_digest: str) -> list[dict[str, Any]]:
        """Stored learning-curve points of one settings digest: curve, size, seed, scores."""
        table = schema.curve_points
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.c.curve, table.c.size, table.c.seed, table.c.scores)
                                .where(table.c.settings_digest == settings_digest).order_by(table.c.id))
            return [{"curve": row[0], "size": int(row[1]), "seed": int(row[2]), "scores": row[3]} for row in rows]

    def add_curve_point(self, settings_digest: str, curve: str, size: int, seed: int, scores: dict[str, Any]) -> None:
        """Store one finished learning-curve point in its own transaction (a re-run skips it)."""
        table = schema.curve_points
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.settings_digest == settings_digest, table.c.curve == curve,
                                             table.c.size == int(size), table.c.seed == int(seed)))
            conn.execute(table.insert().values(settings_digest=settings_digest, curve=curve, size=int(size),
                                               seed=int(seed), scores=scores, created_at=utcnow()))

class SemanticMasks(Mapping[str, tuple[np.ndarray, list[str]]]):
    """sample_id -> (label map, class names) of the samples with masks, each decoded when asked for
    (:meth:`Catalog.semantic_masks`)."""

    def __init__(self, catalog: Catalog, sample_ids: Sequence[str], classes: Sequence[str]) -> None:
        self._catalog, self._ids, self.classes = catalog, list(sample_ids), list(classes)
        self._known = set(self._ids)

    def __getitem__(self, sample_id: str) -> tuple[np.ndarray, list[str]]:
        found = self._catalog.semantic_mask(sample_id, self.classes) if sample_id in self._known else None
        if found is None:
            raise KeyError(sample_id)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._known


def mask_rows(sample_id: str, label_map: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Annotation rows (no origin) of a semantic label map: one ``rle`` row per class present, data
    ``{"segmentation": {"size", "counts"}, "semantic": true, "index": value, "bbox": [x, y, w, h]}``, or one
    row without a category for an all-background map (so an empty mask is kept, not lost)."""
    present, binaries = split_label_map(label_map)
    if present.size and int(present.max()) > len(class_names):
        raise ValueError(f"{sample_id}: label value {int(present.max())} but only {len(class_names)} class names")
    if not present.size:
        empty = np.zeros(np.shape(label_map), dtype=bool)
        return [{"sample_id": sample_id, "kind": "rle", "category": None, "area": 0.0,
                 "data": {"segmentation": encode_rle(empty), "semantic": True, "index": 0}}]
    return [{"sample_id": sample_id, "kind": "rle", "category": str(class_names[int(value) - 1]),
             "area": float(np.count_nonzero(binary)),
             "data": {"segmentation": encode_rle(binary), "semantic": True, "index": int(value),
                      "bbox": mask_bbox(binary)}}
            for value, binary in zip(present.tolist(), binaries, strict=True)]


def _latest_labels(conn: Connection, *, origin: str, sample_ids: Sequence[str]) -> dict[str, str]:
    """sample_id -> its latest label of ``origin`` (retracted ones included), for ``sample_ids`` only: looked up
    by index chunk by chunk, so syncing one ingest batch costs the batch, not the whole labels table."""
    found: dict[str, str] = {}
    for chunk in _chunks(sample_ids, 900):
        found.update(iter(conn.execute(select(labels.c.sample_id, labels.c.label)
                                       .where(labels.c.origin == origin, labels.c.sample_id.in_(chunk))
                                       .order_by(labels.c.id))))
    return found


def _latest_per_sample(conn: Connection, origin: str) -> dict[str, str]:
    """sample_id -> its latest label of ``origin`` that still counts (not retracted): the rows in id order go
    straight into a dict (the last write per sample wins), fetched 100k rows at a time."""
    # coalesce(origin): not the origin index, whose order is not the id order (SQLite would sort every row);
    # the table itself is read in id order
    query = (select(labels.c.sample_id, labels.c.label)
             .where(func.coalesce(labels.c.origin, "") == origin, labels.c.retracted_at.is_(None))
             .order_by(labels.c.id))
    found: dict[str, str] = {}
    result = conn.execute(query.execution_options(yield_per=100_000))
    for partition in result.partitions():
        found.update(partition)
    return found


def _human_curated(conn: Connection) -> dict[str, CuratedLabel]:
    """sample_id -> CuratedLabel of every sample with a human label that counts: the latest review decision
    (``how`` review), else the annotators' answers (one annotator's latest, or their aggregate)."""
    rows = conn.execute(
        select(labels.c.sample_id, labels.c.label, labels.c.annotator, labels.c.decision_id)
        .where(labels.c.origin == "human", labels.c.retracted_at.is_(None)).order_by(labels.c.id)
    ).all()
    reviewed: dict[str, str] = {}
    answers: dict[tuple[str, str], str] = {}  # (sample, annotator) -> latest answer
    if rows:
        review_decisions = set(conn.execute(select(decisions.c.id)
                                            .where(decisions.c.queue != LABELLING_QUEUE)).scalars())
        for sample_id, label, annotator, decision_id in rows:
            if decision_id is not None and decision_id in review_decisions:
                reviewed[sample_id] = label
            else:
                answers.pop((sample_id, annotator or ""), None)  # re-insert: the latest answer goes last
                answers[sample_id, annotator or ""] = label
    result: dict[str, CuratedLabel] = {}
    if answers:
        keys = list(answers)
        per_sample = Counter(sid for sid, _ in keys)
        aggregated = _aggregated([sid for sid, _ in keys], [who for _, who in keys], list(answers.values()))
        result.update({sid: CuratedLabel(label, "human", "aggregated" if per_sample[sid] > 1 else "annotator")
                       for sid, label in aggregated.items()})
    result.update({sid: CuratedLabel(label, "human", "review") for sid, label in reviewed.items()})
    return result


_AGGREGATED: dict[str, dict[str, str]] = {}  # digest of the answers -> their aggregate (the newest few)
_AGGREGATED_KEPT = 4


def _aggregated(items: list[str], annotators: list[str], answers: list[str]) -> dict[str, str]:
    """:func:`curato.crowd.aggregate_labels` of these answers, remembered by a digest of all of them: fitting
    Dawid-Skene costs seconds whatever the catalog's size, and a server asks for the same answers again on
    every status or review page until someone labels something. The same answers give the same aggregate."""
    from curato.crowd import aggregate_labels

    digest = hashlib.sha256(json.dumps([items, annotators, answers]).encode()).hexdigest()
    found = _AGGREGATED.get(digest)
    if found is None:
        found = aggregate_labels(items, annotators, answers)
        while len(_AGGREGATED) >= _AGGREGATED_KEPT:
            _AGGREGATED.pop(next(iter(_AGGREGATED)), None)
        _AGGREGATED[digest] = found
    return dict(found)


def _machine_counts_query(column: str | None) -> Any:
    """(label, origin, [samples.<column>,] count) of the samples without a human label that counts, by
    their latest model label, else their latest imported label (retracted rows never count): one GROUP BY."""
    picked = (select(labels.c.sample_id.label("sample_id"),
                     func.coalesce(func.max(case((labels.c.origin == "model", labels.c.id))),
                                   func.max(labels.c.id)).label("id"))
              .where(labels.c.retracted_at.is_(None), labels.c.origin.in_(("imported", "model")))
              .group_by(labels.c.sample_id).subquery("picked"))
    chosen = labels.alias("chosen")
    human = labels.alias("human")
    grouped = [chosen.c.label, chosen.c.origin, *([samples.c[column]] if column is not None else [])]
    has_human = exists().where(human.c.sample_id == picked.c.sample_id, human.c.origin == "human",
                               human.c.retracted_at.is_(None))
    return (select(*grouped, func.count())
            .select_from(picked.join(chosen, chosen.c.id == picked.c.id)
                         .join(samples, samples.c.sample_id == picked.c.sample_id))
            .where(~has_human).group_by(*grouped))


def _dialect_insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise WorkspaceError(f"catalog database {conn.dialect.name!r} is not supported; use SQLite or PostgreSQL")
    return insert


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # journal_mode=WAL is set once, by Catalog.create (it stays in the file): setting it on every connection
    # would be a write, and a read-only workspace could not even be read.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
