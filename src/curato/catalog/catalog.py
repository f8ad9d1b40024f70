"""Catalog queries. SQLite by default (WAL, one transaction per write step); PostgreSQL by URL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, create_engine, delete, event, func, inspect, select, update
from sqlalchemy.engine import Engine

from curato.catalog import schema
from curato.catalog.schema import annotations, info, labels, runs, samples
from curato.errors import WorkspaceError
from curato.version import __version__

_LABEL_PRIORITY = {"human": 0, "imported": 1, "model": 2}


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


@dataclass
class RecordedRun:
    """The run row of a block of work (:meth:`Catalog.recorded_run`); set ``summary`` before the block ends."""

    id: int
    summary: dict[str, Any] = field(default_factory=dict)


class Catalog:
    """Samples, labels, annotations and runs of one workspace.

    ``url`` is any SQLAlchemy URL; SQLite files get WAL journaling and foreign keys.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    # ---- lifecycle -------------------------------------------------------------------------
    def create(self) -> None:
        """Create missing tables and record the schema version; refuse a newer schema."""
        with self.engine.begin() as conn:
            schema.metadata.create_all(conn)
            found = conn.execute(select(info.c.value).where(info.c.key == "schema_version")).scalar()
            if found is None:
                conn.execute(info.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
            elif int(found) > schema.SCHEMA_VERSION:
                raise WorkspaceError(
                    f"{self.url}: catalog schema {found} is newer than this curato ({schema.SCHEMA_VERSION});"
                    " upgrade curato"
                )

    def exists(self) -> bool:
        """Whether the catalog tables are present."""
        return inspect(self.engine).has_table("samples")

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
            return {row[0]: (row[1], row[2], bool(row[3])) for row in rows}

    def upsert_samples(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new samples and update changed ones (keyed by sample_id), inside ``conn``."""
        if not rows:
            return
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
        return {name: np.array([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)}

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
        latest = _latest_labels(conn, origin="imported")
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
        """sample_id -> the label that counts: latest human, else latest imported, else latest model."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(labels.c.sample_id, labels.c.label, labels.c.origin).order_by(labels.c.id)
            ).all()
        best: dict[str, tuple[int, str]] = {}
        for sample_id, label, origin in rows:
            rank = _LABEL_PRIORITY[origin]
            held = best.get(sample_id)
            if held is None or rank <= held[0]:
                best[sample_id] = (rank, label)
        return {sid: label for sid, (_, label) in best.items()}

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

    # ---- runs ------------------------------------------------------------------------------
    def start_run(self, kind: str, name: str | None = None, params: dict[str, Any] | None = None) -> int:
        """Record that a computation started; returns its run id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.insert().values(
                    kind=kind, name=name, params=params or {}, version=__version__,
                    status="running", started_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0])

    @contextmanager
    def recorded_run(self, kind: str, name: str | None = None,
                     params: dict[str, Any] | None = None) -> Iterator[RecordedRun]:
        """Record the work inside the ``with`` block as one run: ``done`` with ``run.summary`` when the block
        ends, ``failed`` or ``interrupted`` (with the error) when it raises -- the error is re-raised."""
        run = RecordedRun(self.start_run(kind, name, params))
        try:
            yield run
        except BaseException as error:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            self.finish_run(run.id, status, {"error": str(error)})
            raise
        self.finish_run(run.id, "done", run.summary)

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

    def delete_model_labels(self, conn: Connection, annotator: str) -> int:
        """Remove the model labels one routing run stored (reversal of ``curato route``); returns rows removed."""
        result = conn.execute(delete(labels).where(labels.c.origin == "model", labels.c.annotator == annotator))
        return int(result.rowcount or 0)

    def labeled_sample_ids(self, origins: Sequence[str]) -> set[str]:
        """Samples holding at least one label of the given origins (e.g. human and imported)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.sample_id).where(labels.c.origin.in_(list(origins))).distinct())
            return {row[0] for row in rows}

    def label_counts_by_annotator(self, origin: str) -> dict[str | None, int]:
        """Number of stored labels of one origin per annotator (e.g. model labels per routing run)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels.c.annotator, func.count()).where(labels.c.origin == origin)
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

def _latest_labels(conn: Connection, *, origin: str) -> dict[str, str]:
    rows = conn.execute(
        select(labels.c.sample_id, labels.c.label).where(labels.c.origin == origin).order_by(labels.c.id)
    )
    return {row[0]: row[1] for row in rows}


def _dialect_insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise WorkspaceError(f"catalog database {conn.dialect.name!r} is not supported; use SQLite or PostgreSQL")
    return insert


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
