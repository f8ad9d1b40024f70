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
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import (
    ARRAY,
    JSON,
    Connection,
    String,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from curato.catalog import schema
from curato.catalog.schema import (
    LABELLING_QUEUE,
    annotations,
    curated_counts,
    curated_labels,
    decisions,
    feature_counts,
    hash_changes,
    info,
    label_changes,
    label_sums,
    labels,
    runs,
    sample_counts,
    samples,
)
from curato.errors import WorkspaceBusyError, WorkspaceError, storage_error
from curato.masks import encode_rle, mask_bbox, merge_masks, segmentation_mask, split_label_map
from curato.version import __version__

WORKSPACE_PLACEHOLDER = "{workspace}"  # stands for the workspace folder in stored sample uris
_URI_PREFIXES = ("", "idx:")  # plain file paths and images inside IDX files (idx:<file>#<index>)
_LOW_SPACE = 1 << 20  # bytes: less free space than this makes an I/O error a full disk
MASK_KINDS = ("rle", "polygon")  # annotation kinds that are pixel masks
# info keys: a token that changes whenever the annotators' answers change, and the token of the answers the stored
# Dawid-Skene aggregates (curated_labels rows ``how`` aggregated) were fitted on; they differ while a refit is due
ANSWERS_TOKEN = "curated_answers"
FITTED_TOKEN = "curated_fitted"
# info key: the newest label_changes seq dropped (every stored label sum had applied it)
LABEL_CHANGES_TRIMMED = "label_changes_trimmed"
# PostgreSQL writes of at least this many rows go by COPY (and a staged INSERT ... SELECT for upserts); the app's
# writes of a few rows stay on the statements
PG_COPY_ROWS = 500
LABEL_CHANGES_TRIM_ROWS = 50_000  # logged changes dropped per transaction (docs/benchmarks.md "At 10M")
_CURATED_LOCK = 0x637573  # PostgreSQL advisory lock: one writer of curated rows at a time (SQLite: one writer anyway)


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
                init_answer_tokens(conn)
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
        now = utcnow()
        # the sample_counts triggers move shared count rows: PostgreSQL writers take them in one order, not
        # deadlocking on each other's rows (SQLite has one writer anyway)
        _lock_curated(conn)
        columns = list(rows[0])
        if conn.dialect.name == "sqlite":
            _sqlite_upsert(conn, samples, rows, columns, now)
        elif _copies(conn, rows, staged=True):
            columns = [name for name in columns if name not in ("created_at", "updated_at")]  # ours, as below
            written = [*columns, "created_at", "updated_at"]
            unique = list({row["sample_id"]: row for row in rows}.values())  # the last one wins, as row by row
            stage = _pg_staged(conn, samples, written, ((*(row[name] for name in columns), now, now) for row in unique))
            statement = _dialect_insert(conn)(samples).from_select(written, select(*stage.c))
            conn.execute(statement.on_conflict_do_update(
                index_elements=["sample_id"],
                set_={name: statement.excluded[name] for name in [*columns, "updated_at"] if name != "sample_id"}))
        else:
            insert = _dialect_insert(conn)
            statement = insert(samples)
            statement = statement.on_conflict_do_update(
                index_elements=["sample_id"],
                set_={name: statement.excluded[name] for name in [*columns, "updated_at"] if name != "sample_id"},
            )
            statement, rows = _multi_row(statement, samples, rows)
            for chunk in _chunks(rows):
                conn.execute(statement, [{**row, "created_at": now, "updated_at": now} for row in chunk])
        if "split" in columns:  # a re-ingest may move samples: their curated rows carry the split
            _copy_splits(conn, [row["sample_id"] for row in rows])

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

    def samples_of(self, sample_ids: Iterable[str], columns: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """sample_id -> the values of ``columns`` for these samples only (unknown ids are left out), found by the
        samples' index: what a page showing some samples needs, without reading every sample."""
        wanted = list(dict.fromkeys(sample_ids))
        chosen = [samples.c[name] for name in columns]
        found: dict[str, tuple[Any, ...]] = {}
        with self.engine.connect() as conn:
            query = select(samples.c.sample_id, *chosen).where(_in_ids(conn, samples.c.sample_id))
            for chunk in _chunks(wanted, _id_batch(conn)):
                for row in conn.execute(query, {"wanted_ids": _ids_value(conn, chunk)}):
                    found[row[0]] = tuple(row[1:])
        if "uri" in columns and self.root is not None:
            at = list(columns).index("uri")
            found = {sid: (*values[:at], self.loaded_uri(values[at]), *values[at + 1:])
                     for sid, values in found.items()}
        return found

    def samples_in_order(self, columns: Sequence[str], *, kind: str | None = None, batch: int = 10_000
                         ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of ``columns`` (the first should be ``sample_id``) in sample_id order, ``batch`` at a time, for a
        reader that stops early (the report's examples per class): the rows are fetched as it goes."""
        # the kind is filtered here, not in SQL: with ``WHERE kind = ?`` SQLite takes the kind index and sorts every
        # sample of that kind before the first row (minutes at 10M); without it, it walks the primary key in order
        query = select(*(samples.c[name] for name in columns), samples.c.kind).order_by(samples.c.sample_id)
        with self.engine.connect() as conn:
            for partition in conn.execute(query.execution_options(yield_per=batch)).partitions():
                rows = [tuple(row[:-1]) for row in partition if kind is None or row[-1] == kind]
                if rows:
                    yield rows

    def sample_count(self) -> int:
        """Number of samples in the catalog (from the maintained ``sample_counts``)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(sample_counts.c.n), 0))).scalar() or 0)

    def sample_kinds(self) -> dict[str, int]:
        """Number of samples per kind (image, text)."""
        return {kind: count for kind, count in self.group_counts("kind").items() if kind is not None}

    # ---- labels ----------------------------------------------------------------------------
    # Every write that can change a sample's curated label goes through the methods below, which update the
    # ``curated_labels`` table in the same transaction (docs/workspace.md "Curated labels").
    def sync_imported_labels(self, conn: Connection, new_labels: dict[str, str]) -> int:
        """Record imported labels that differ from the latest imported one; returns rows added."""
        latest = _latest_labels(conn, origin="imported", sample_ids=list(new_labels))
        now = utcnow()
        rows = [
            {"sample_id": sid, "label": label, "origin": "imported", "created_at": now}
            for sid, label in new_labels.items()
            if latest.get(sid) != label
        ]
        _insert_rows(conn, labels, rows)
        _machine_labels_written(conn, {row["sample_id"]: row["label"] for row in rows}, "imported")
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
        person. Human labels written here are annotators' answers (no decision)."""
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
        _insert_rows(conn, labels, rows)
        if origin == "human":
            _refresh_curated(conn, list(new_labels))
            if new_labels:
                _answers_changed(conn)
        else:
            _machine_labels_written(conn, new_labels, origin)
        if origin != "model":
            self.set_queue_status(conn, new_labels, "labelled")
        return len(rows)

    def record_decision(self, conn: Connection, *, queue: str, item: str, action: str, sample_ids: Sequence[str],
                        effects: Mapping[str, Any], user: str, source_run: int | None = None,
                        duration_ms: int | None = None) -> int:
        """Record a person's decision in the app and apply it inside ``conn``; returns its id. ``effects["labels"]``
        (sample_id -> label) are appended as human labels of this decision (a review when ``queue`` is not the
        labelling queue, else an annotator's answer), ``effects["splits"]`` (sample_id -> [from, to]) move samples;
        exclusions (``excluded``, ``ambiguous``, ``include``) live in the effects themselves
        (:meth:`sample_states`)."""
        now = utcnow()
        decision_id = int(conn.execute(decisions.insert().values(
            queue=queue, item=item, action=action, sample_ids=list(sample_ids), effects=dict(effects), user=user,
            source_run=source_run, duration_ms=duration_ms, created_at=now)).inserted_primary_key[0])
        new_labels = effects.get("labels") or {}
        if new_labels:
            conn.execute(labels.insert(), [{"sample_id": sid, "label": label, "origin": "human", "annotator": user,
                                            "decision_id": decision_id, "duration_ms": duration_ms,
                                            "created_at": now} for sid, label in new_labels.items()])
            _refresh_curated(conn, list(new_labels))
            if queue == LABELLING_QUEUE:
                _answers_changed(conn)
        for sid, (_, new_split) in (effects.get("splits") or {}).items():
            _move_split(conn, sid, new_split, now)
        return decision_id

    def undo_decision(self, conn: Connection, decision_id: int, *, undone_by: str) -> dict[str, Any]:
        """Undo a decision inside ``conn``: marked undone (the row stays), its labels retracted, samples it moved
        put back in their split when nobody moved them since. Returns the decision row as it was; WorkspaceError
        when there is none (callers check ownership and whether it was undone already first)."""
        row = conn.execute(select(decisions).where(decisions.c.id == decision_id)).first()
        if row is None:
            raise WorkspaceError(f"{self.where}: decision {decision_id} does not exist")
        found = dict(row._mapping)
        now = utcnow()
        conn.execute(update(decisions).where(decisions.c.id == decision_id).values(undone_at=now,
                                                                                   undone_by=undone_by))
        retracted = _retract(conn, (labels.c.decision_id == decision_id,), now)
        if retracted and found["queue"] == LABELLING_QUEUE:
            _answers_changed(conn)
        effects = found["effects"] if isinstance(found["effects"], dict) else {}
        for sid, (old_split, new_split) in (effects.get("splits") or {}).items():
            _move_split(conn, sid, old_split, now, only_from=new_split)
        return found

    def current_labels(self) -> dict[str, str]:
        """sample_id -> the curated label every downstream step uses (:meth:`curated_labels`)."""
        return {sid: curated.label for sid, curated in self.curated_labels().items()}

    def curated_labels(self, sample_ids: Iterable[str] | None = None) -> dict[str, CuratedLabel]:
        """sample_id -> the label that counts and where it came from, by THE rule every command uses
        (:func:`rule_labels`), in the table's order (look samples up by id); ``sample_ids``: only these (the
        ones without a label are left out).

        Read from the ``curated_labels`` table, which the label writers keep equal to the rule; when annotators'
        answers changed since the stored Dawid-Skene aggregates were fitted, they are refitted first
        (:meth:`_aggregate_changes`). Samples share one CuratedLabel per (label, origin, how)."""
        changes = self._aggregate_changes()
        shared: dict[tuple[str, str, str], CuratedLabel] = {}
        result: dict[str, CuratedLabel] = {}
        # no ORDER BY: in SQLite the sample_id order is an index walk with a row lookup per sample (1.5-2x the
        # time of reading the table in its own order)
        query = select(curated_labels.c.sample_id, curated_labels.c.label, curated_labels.c.origin,
                       curated_labels.c.how)
        with self.engine.connect() as conn:
            if sample_ids is None:
                parts = [conn.execute(query.execution_options(yield_per=100_000))]
            else:
                parts = [conn.execute(query.where(curated_labels.c.sample_id.in_(chunk)))
                         for chunk in _chunks(sorted(set(sample_ids)), 900)]
            for rows in parts:
                for sid, label, origin, how in rows:
                    if how == "aggregated" and sid in changes and changes[sid][0] == label:
                        label = changes[sid][1]
                    key = (label, origin, how)
                    found = shared.get(key)
                    if found is None:
                        found = shared[key] = CuratedLabel(label, origin, how)
                    result[sid] = found
        return result

    def curated_label_counts(self, column: str | None = "split") -> dict[tuple[str, str, Any], int]:
        """(curated label, origin, the sample's ``column`` value) -> number of samples, by the rule of
        :meth:`curated_labels`, counted in the database: per split (or with ``column=None``: per label and origin
        only) on the ``curated_labels`` table's own index, per any other samples column through a join. Samples
        without any label are not counted."""
        changes = self._aggregate_changes()
        if column in (None, "split"):  # the maintained counts: a few hundred rows, whatever the catalog's size
            table = curated_counts
            grouped = [table.c.label, table.c.origin] + ([table.c.split] if column else [])
            query = select(*grouped, func.sum(table.c.n)).group_by(*grouped)
        else:
            table = curated_labels
            grouped = [table.c.label, table.c.origin, samples.c[column]]
            query = (select(*grouped, func.count()).group_by(*grouped)
                     .select_from(table.join(samples, samples.c.sample_id == table.c.sample_id)))
        counts: Counter[tuple[str, str, Any]] = Counter()
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                counts[row[0], row[1], row[2] if column is not None else None] += int(row[-1])
            values: dict[str, Any] = {sid: split for sid, (_, _, split) in changes.items()} if column == "split" \
                else dict.fromkeys(changes)
            if changes and column not in (None, "split"):
                for chunk in _chunks(list(changes), 900):
                    values.update(conn.execute(select(samples.c.sample_id, samples.c[column])
                                               .where(samples.c.sample_id.in_(chunk))).all())
        for sid, (old, new, _) in changes.items():
            counts[old, "human", values[sid]] -= 1
            counts[new, "human", values[sid]] += 1
        return {key: count for key, count in counts.items() if count}

    def curated_examples(self, per_class: int, *, kind: str = "image") -> dict[str, list[str]]:
        """Curated label -> its first ``per_class`` readable samples of ``kind`` in sample_id order (labels without
        one are left out), by the rule of :meth:`curated_labels`: the report's examples per class.

        One ordered read of ``ix_curated_labels_label`` per label (schema 8), joined to the samples by primary
        key: it stops at the ``per_class``-th readable sample of ``kind``, so its cost is the label's rows up to
        that one -- a few rows for a label of readable images, but every row of a label made mostly of other
        kinds or unreadable samples (one primary-key lookup each). The labels come from the maintained counts
        (``curated_counts``): a label whose counts drifted to 0 (``count_problems`` reports it) is left out.
        Multi-annotator samples whose refit could not be stored (a read-only catalog) are moved to their fitted
        label here, in batches of ids (a bound-parameter limit on PostgreSQL)."""
        moved_out, moved_in = self._unstored_moves()
        table = curated_labels
        query = (select(table.c.sample_id)
                 .select_from(table.join(samples, samples.c.sample_id == table.c.sample_id))
                 .where(table.c.label == bindparam("label"), samples.c.kind == kind, samples.c.readable.is_(True))
                 .order_by(table.c.sample_id).limit(bindparam("limit")))
        eligible = {sid for sid, (sample_kind, ok) in
                    self.samples_of([sid for ids in moved_in.values() for sid in ids], ("kind", "readable")).items()
                    if sample_kind == kind and ok}
        found: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            labelled = conn.execute(select(curated_counts.c.label).group_by(curated_counts.c.label)
                                    .having(func.sum(curated_counts.c.n) > 0)).scalars().all()
            first = (select(samples.c.sample_id).where(_in_ids(conn, samples.c.sample_id))
                     .order_by(samples.c.sample_id).limit(per_class))
            for label in sorted(set(labelled) | set(moved_in)):
                leaving = moved_out.get(label, set())
                ids = [sid for sid in conn.execute(query, {"label": label, "limit": per_class + len(leaving)})
                       .scalars() if sid not in leaving][:per_class]
                arriving = [sid for sid in moved_in.get(label, []) if sid in eligible]
                # in the database's order of sample ids, as the index gives the others: the first per_class of
                # each batch of arriving ids joined to those kept so far
                for chunk in _chunks(arriving, _id_batch(conn)):
                    ids = conn.execute(first, {"wanted_ids": _ids_value(conn, [*ids, *chunk])}).scalars().all()
                if ids:
                    found[label] = list(ids)
        return found

    def _unstored_moves(self) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
        """Per label, the samples an unstored refit moves out of it and into it (empty unless the refit of the
        multi-annotator aggregates could not be stored, as on a read-only catalog)."""
        moved_out: dict[str, set[str]] = {}
        moved_in: dict[str, list[str]] = {}
        for sid, (old, new) in self.unstored_label_moves().items():
            moved_out.setdefault(old, set()).add(sid)
            moved_in.setdefault(new, []).append(sid)
        return moved_out, moved_in

    def unstored_label_moves(self) -> dict[str, tuple[str, str]]:
        """sample_id -> (stored curated label, fitted label) of the multi-annotator samples that a refit moves
        but could not store (a read-only catalog): readers of the stored rows apply these themselves."""
        return {sid: (old, new) for sid, (old, new, _) in self._aggregate_changes().items()}

    def curated_snapshot(self, batch: int = 200_000) -> Iterator[tuple[int, list[str], list[str]]]:
        """(seq, sample ids, their curated labels), up to ``batch`` rows at a time: every stored ``curated_labels``
        row once, in no particular order, read by ONE statement, so all come from one snapshot, with the newest
        change seq that snapshot holds (the newest ``label_changes`` row, or the last one dropped when the log is
        empty; later changes have a greater seq). For a reader joining every
        labelled sample with arrays (the report's per-class property sums) without a dict of every sample. A refit
        that could not be stored is not in it (:meth:`unstored_label_moves`).

        Through the driver's own cursor (server-side on PostgreSQL, fetched ``batch`` rows at a time; psycopg's
        plain cursor would hold every row in the client at execute): at millions of rows SQLAlchemy's row
        objects cost 3-4x the CPU of the driver's tuples (docs/benchmarks.md)."""
        newest = select(func.coalesce(func.max(label_changes.c.seq), 0)).scalar_subquery()
        trimmed = select(info.c.value).where(info.c.key == LABEL_CHANGES_TRIMMED).scalar_subquery()
        query = select(curated_labels.c.sample_id, curated_labels.c.label, newest, trimmed)
        with self.engine.connect() as conn:
            compiled = query.compile(dialect=conn.dialect)
            params: Any = compiled.construct_params()
            if compiled.positiontup:
                params = tuple(params[name] for name in compiled.positiontup)
            dbapi = conn.connection.dbapi_connection
            cursor = dbapi.cursor(name="curato_curated") if conn.dialect.name == "postgresql" else dbapi.cursor()
            try:
                cursor.execute(compiled.string, params)
                while rows := cursor.fetchmany(batch):
                    # an emptied log: the snapshot holds every change up to the last one dropped
                    seq = max(int(rows[0][2]), int(rows[0][3] or 0))
                    yield seq, [row[0] for row in rows], [row[1] for row in rows]
                    if len(rows) < batch:  # the last rows: no further FETCH (a round trip on PostgreSQL)
                        break
            finally:
                cursor.close()

    def label_changes_trimmed(self) -> int:
        """The newest ``label_changes`` seq dropped from the log (0 when none was): sums kept as of an older seq
        cannot be brought up to date from the log any more."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(info.c.value).where(info.c.key == LABEL_CHANGES_TRIMMED)).scalar() or 0)

    def label_changes_beyond(self, seq: int, count: int) -> bool:
        """Whether more than ``count`` changes were logged after ``seq`` (one primary-key seek, whatever the count)."""
        with self.engine.connect() as conn:
            return conn.execute(select(label_changes.c.seq).where(label_changes.c.seq > seq)
                                .order_by(label_changes.c.seq).offset(count).limit(1)).first() is not None

    def label_changes_since(self, seq: int, *, limit: int | None = None
                            ) -> list[tuple[int, str, str | None, str | None]]:
        """(seq, sample_id, old label, new label) of the logged curated-label changes after ``seq``, oldest first,
        at most ``limit`` of them (a primary-key range: as many rows as changes, whatever the catalog's size)."""
        table = label_changes
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(  # type: ignore[misc]
                select(table.c.seq, table.c.sample_id, table.c.old_label, table.c.new_label)
                .where(table.c.seq > seq).order_by(table.c.seq).limit(limit))]

    def label_sums(self, name: str) -> dict[str, Any] | None:
        """The stored per-label sums called ``name`` (``store_key``, ``seq``, ``sums``: JSON text, None while
        pending), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(select(label_sums).where(label_sums.c.name == name)).first()
        return None if row is None else dict(row._mapping)

    def begin_label_sums(self, name: str) -> bool:
        """Make sure ``label_sums`` holds a row called ``name`` BEFORE a first computation of its sums reads the
        curated labels: from its commit on, every change of a curated label is logged (the triggers log only while
        the table holds a row), so the changes after the computation's snapshot can be applied later. A pending
        row (empty ``store_key``) is kept until :meth:`store_label_sums` replaces it. False when the catalog cannot
        be written now (the sums are then computed, not stored)."""
        def write(conn: Connection) -> bool:
            conn.execute(_dialect_insert(conn)(label_sums).values(name=name, store_key="", seq=0, sums=None)
                         .on_conflict_do_nothing(index_elements=["name"]))
            return True

        return self._write_label_sums(write)

    def store_label_sums(self, name: str, *, store_key: str, base: int, seq: int, sums: str) -> bool:
        """Store per-label sums that hold every change up to ``seq``, computed from sums as of ``base`` (or from a
        snapshot: ``base`` = ``seq``) plus the logged changes after it, then drop the logged changes every stored
        sum has applied (:func:`_trim_label_changes`, in chunks). Refused (False) when changes after ``base`` may
        have been dropped meanwhile (another reader stored newer sums and trimmed the log: these sums could miss
        them), or when the stored sums of the same ``store_key`` are newer; False too when the catalog cannot be
        written now. Nothing is lost by a refusal: the sums are computed again next time."""
        def write(conn: Connection) -> bool:
            trimmed = int(conn.execute(select(info.c.value).where(info.c.key == LABEL_CHANGES_TRIMMED)).scalar()
                          or 0)
            if base < trimmed:
                return False
            values = {"store_key": store_key, "seq": seq, "sums": sums}
            statement = _dialect_insert(conn)(label_sums).values(name=name, **values)
            newer = ((label_sums.c.seq <= statement.excluded.seq)
                     | (label_sums.c.store_key != statement.excluded.store_key))
            return conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_=values, where=newer)
                                .returning(label_sums.c.name)).first() is not None

        stored = self._write_label_sums(write)
        if stored:
            while self._write_label_sums(_trim_label_changes):
                pass
        return stored

    def forget_label_sums(self, keep: Callable[[str], bool]) -> None:
        """Drop the kept sums whose name ``keep`` rejects (a feature set that no longer exists): their old seq
        would stop the log from ever being trimmed. Silently nothing when the catalog cannot be written now."""
        with self.engine.connect() as conn:
            names = conn.execute(select(label_sums.c.name)).scalars().all()
        gone = [name for name in names if not keep(name)]

        def write(conn: Connection) -> bool:
            conn.execute(delete(label_sums).where(label_sums.c.name.in_(gone)))
            return True

        if gone:
            self._write_label_sums(write)

    def _write_label_sums(self, write: Callable[[Connection], bool]) -> bool:
        """Run ``write`` in a transaction holding the curated-rows lock, waiting at most ~2 s for it (a report
        does not wait for a whole ingest's commit: it stores next time); False when ``write`` refused or the
        catalog cannot be written (read-only, busy)."""
        try:
            with self.engine.begin() as conn:
                driver = conn.connection.driver_connection if self.engine.dialect.name == "sqlite" else None
                if driver is not None:
                    driver.execute("PRAGMA busy_timeout=2000")
                else:
                    conn.execute(sql_text("SET LOCAL lock_timeout = '2s'"))
                try:
                    _lock_curated(conn)
                    return bool(write(conn))
                finally:
                    if driver is not None:
                        driver.execute("PRAGMA busy_timeout=30000")
        except (WorkspaceError, SQLAlchemyError):  # e.g. a SELECT-only role, a read-only standby, a busy catalog
            return False

    def _aggregate_changes(self, *, persist: bool = True) -> dict[str, tuple[str, str, str | None]]:
        """Refit the multi-annotator aggregates when the answers changed since they were fitted: sample_id ->
        (stored label, fitted label, split) of the ``aggregated`` rows whose label changes, left to the caller to
        apply only when they could not be stored (``persist`` False, a read-only catalog, or answers changed
        again meanwhile); empty when nothing is due.

        Why lazily: Dawid-Skene is fitted on every answer at once (each annotator's confusion matrix comes from
        all their answers), so one new answer can change any multi-annotator sample's aggregate, and the fit
        costs seconds at scale. Fitting in each write's transaction would make every answer in the app cost the
        fit under the write lock; instead a write only changes the answers token, and the first read after it
        pays the fit once for every process (stored with the token it was fitted on)."""
        table = curated_labels
        with self.engine.connect() as conn:
            tokens = dict(conn.execute(select(info.c.key, info.c.value)
                                       .where(info.c.key.in_((ANSWERS_TOKEN, FITTED_TOKEN)))).all())
            if tokens.get(ANSWERS_TOKEN) == tokens.get(FITTED_TOKEN):
                return {}
            stored = {sid: (label, split) for sid, label, split in conn.execute(
                select(table.c.sample_id, table.c.label, table.c.split).where(table.c.how == schema.AGGREGATED))}
            if not stored:
                return {}  # no multi-annotator sample: nothing depends on the fit
            _, answers = _human_rows(conn)
        fitted = _fit_answers(answers)
        changes = {sid: (label, fitted[sid], split) for sid, (label, split) in stored.items()
                   if sid in fitted and fitted[sid] != label}
        if not persist:
            return changes
        try:
            with self.engine.begin() as conn:
                _lock_curated(conn)
                current = select(info.c.value).where(info.c.key == ANSWERS_TOKEN)
                if conn.execute(current).scalar() != tokens.get(ANSWERS_TOKEN):
                    return changes  # answers changed while fitting: use this fit now, refit on the next read
                for sid, (old, new, _) in changes.items():
                    conn.execute(update(table).where(table.c.sample_id == sid, table.c.how == "aggregated",
                                                     table.c.label == old).values(label=new))
                _set_token(conn, FITTED_TOKEN, tokens.get(ANSWERS_TOKEN))
        except WorkspaceError:  # read-only or busy catalog: the caller applies the fit without storing it
            return changes
        return {}

    def curated_label_problems(self) -> list[dict[str, Any]]:
        """Where the ``curated_labels`` table disagrees with the rule recomputed from the label history
        (:func:`rule_labels`): ``[{"sample_id", "stored": [label, origin, how, split] | None, "expected": ...}]``,
        sorted by sample_id; empty when they agree. Reads only (a due refit is applied in memory); the stored rows
        are streamed beside their samples' splits, so it holds the rule's result and little more."""
        changes = self._aggregate_changes(persist=False)
        table = curated_labels
        problems: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            expected = rule_labels(conn)
            rows = conn.execute(select(table.c.sample_id, table.c.label, table.c.origin, table.c.how, table.c.split,
                                       samples.c.split)
                                .select_from(table.join(samples, samples.c.sample_id == table.c.sample_id))
                                .execution_options(yield_per=100_000))
            for sid, label, origin, how, split, actual in rows:
                if how == "aggregated" and sid in changes and changes[sid][0] == label:
                    label = changes[sid][1]
                wanted = expected.pop(sid, None)
                if wanted is None or (label, origin, how, split) != (wanted.label, wanted.origin, wanted.how,
                                                                     actual):
                    problems.append({"sample_id": sid, "stored": [label, origin, how, split], "expected": None
                                     if wanted is None else [wanted.label, wanted.origin, wanted.how, actual]})
            splits = _splits_of(conn, list(expected))  # labelled samples without a stored row
        problems.extend({"sample_id": sid, "stored": None,
                         "expected": [value.label, value.origin, value.how, splits.get(sid)]}
                        for sid, value in expected.items())
        return sorted(problems, key=lambda problem: problem["sample_id"])

    def rebuild_curated_labels(self) -> int:
        """Rewrite the ``curated_labels`` table from the label history by the rule (the repair for what
        :meth:`curated_label_problems` finds); returns the samples with a label."""
        with self.engine.begin() as conn:
            _lock_curated(conn)
            # a rewrite of every row: kept sums must be summed afresh anyway, so they go first (then nothing is
            # logged: two changes per row otherwise), and the log is marked dropped up to a new seq, so that sums a
            # reader computed before the rewrite are refused when it stores them
            conn.execute(delete(label_sums))
            written = fill_curated_labels(conn)
            _mark_label_changes_dropped(conn)
            return written

    def count_problems(self) -> list[str]:
        """Where the maintained counts (``sample_counts``, ``curated_counts``) disagree with a recount of the rows
        they count: one line per table naming a few differing groups; empty when they agree. Reads only (one
        GROUP BY over each counted table: seconds per million rows)."""
        problems = []
        for counted, counts, columns in ((samples, sample_counts, schema.COUNTED_SAMPLE_COLUMNS),
                                         (curated_labels, curated_counts, schema.COUNTED_CURATED_COLUMNS)):
            keys = [counted.c[name] for name in columns]
            stored_keys = [counts.c[name] for name in columns]
            with self.engine.connect() as conn:
                recount = {tuple(row[:-1]): int(row[-1])
                           for row in conn.execute(select(*keys, func.count()).group_by(*keys))}
                stored: Counter[tuple[Any, ...]] = Counter()
                for row in conn.execute(select(*stored_keys, counts.c.n)):
                    stored[tuple(row[:-1])] += int(row[-1])
            wrong = sorted((key for key in set(recount) | set(stored) if recount.get(key, 0) != stored.get(key, 0)),
                           key=str)
            if wrong:
                shown = "; ".join(f"{dict(zip(columns, key, strict=True))}: stored {stored.get(key, 0)}, "
                                  f"counted {recount.get(key, 0)}" for key in wrong[:3])
                problems.append(f"{counts.name} disagrees with a recount of {counted.name} in {len(wrong)} "
                                f"group(s) ({shown}{'; ...' if len(wrong) > 3 else ''})")
        return problems

    def rebuild_counts(self) -> None:
        """Rewrite ``sample_counts`` and ``curated_counts`` from a recount (the repair for what
        :meth:`count_problems` finds), under the write lock the count triggers' writers take."""
        with self.engine.begin() as conn:
            _lock_curated(conn)
            for statement in schema.count_fill_statements():
                conn.exec_driver_sql(statement)

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
        """Number of samples per value of a samples column (split, source, format, kind), ordered by value; the
        counted columns (``schema.COUNTED_SAMPLE_COLUMNS``) from the maintained ``sample_counts``."""
        if column in schema.COUNTED_SAMPLE_COLUMNS:
            col = sample_counts.c[column]
            query = select(col, func.sum(sample_counts.c.n)).group_by(col).having(func.sum(sample_counts.c.n) > 0)
        else:
            col = samples.c[column]
            query = select(col, func.count()).group_by(col)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(col))
            return {row[0]: int(row[1]) for row in rows}

    def sample_overview(self) -> dict[str, Any]:
        """Numbers of samples per kind, split, source and format, and of readable samples per kind, from the
        maintained ``sample_counts`` (a few rows, whatever the catalog's size): each margin is summed from that
        small table, ordered by value as the database orders it (as :meth:`group_counts` does).
        ``{"samples": n, "kinds", "splits", "sources", "formats", "readable": {kind: n}}``."""
        margins = ("kind", "split", "source", "format")
        combos = select(sample_counts).where(sample_counts.c.n > 0).cte("combos")
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

    def content_hashes(self) -> tuple[int, dict[str, str | None]]:
        """(the newest ``hash_changes`` seq, sample_id -> content_hash of every sample), read by one statement, so
        both come from one snapshot: later hash changes are exactly those with a greater seq."""
        newest = select(func.coalesce(func.max(hash_changes.c.seq), 0)).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(select(samples.c.sample_id, samples.c.content_hash, newest)
                                .execution_options(yield_per=100_000))
            found: dict[str, str | None] = {}
            seq = None
            for partition in rows.partitions():
                if seq is None:
                    seq = int(partition[0][2])
                found.update((sid, digest) for sid, digest, _ in partition)
            if seq is None:  # no samples
                seq = int(conn.execute(select(newest)).scalar() or 0)
        return seq, found

    def hash_changes_since(self, seq: int, *, limit: int | None = None
                           ) -> list[tuple[int, str, str, str | None, str | None]]:
        """(seq, sample_id, change, old_hash, new_hash) of the logged hash changes, deletions and re-insertions
        after ``seq``, oldest first, at most ``limit`` of them (an index range: as many rows as changes, whatever
        the catalog's size)."""
        table = hash_changes
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(  # type: ignore[misc]
                select(table.c.seq, table.c.sample_id, table.c.change, table.c.old_hash, table.c.new_hash)
                .where(table.c.seq > seq).order_by(table.c.seq).limit(limit))]

    def feature_count(self, name: str) -> dict[str, Any] | None:
        """The stored staleness count of a feature set (``store_key``, ``seq``, ``stale``, ``present``), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(select(feature_counts).where(feature_counts.c.name == name)).first()
        return None if row is None else dict(row._mapping)

    def store_feature_count(self, name: str, *, store_key: str, seq: int, stale: int, present: int,
                            absent: Sequence[str] = ()) -> bool:
        """Store a feature set's staleness count; False when the catalog cannot be written (read-only, busy):
        the count is then recomputed next time, nothing is wrong.

        ``absent``: ids the set holds that the catalog does not (deleted before anything was logged of them): an
        ``absent`` marker is logged for each not logged yet, so that the insert trigger logs their return."""
        values = {"store_key": store_key, "seq": seq, "stale": stale, "present": present}
        try:
            with self.engine.begin() as conn:
                # SQLite: a reader does not wait for an ingest's write lock to store a count (it counts again)
                driver = conn.connection.driver_connection if self.engine.dialect.name == "sqlite" else None
                if driver is not None:
                    driver.execute("PRAGMA busy_timeout=200")
                try:  # one upsert: two first counts at once do not both insert
                    statement = _dialect_insert(conn)(feature_counts).values(name=name, **values)
                    conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_=values))
                    if absent:
                        marker = sql_text("INSERT INTO hash_changes (sample_id, change) SELECT "
                                          "CAST(:sid AS VARCHAR), 'absent' WHERE NOT EXISTS "
                                          "(SELECT 1 FROM hash_changes WHERE sample_id = :sid)")
                        for chunk in _chunks([{"sid": sid} for sid in absent]):
                            conn.execute(marker, chunk)
                finally:
                    if driver is not None:
                        driver.execute("PRAGMA busy_timeout=30000")
        except (WorkspaceError, SQLAlchemyError):  # e.g. a SELECT-only role, a read-only standby, a busy file
            return False
        return True

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
        queue = schema.queue
        # nothing queued (a plain ingest): no statement per batch of ids (the queue has no sample index)
        if conn.execute(select(queue.c.id).where(queue.c.status == "queued").limit(1)).first() is None:
            return 0
        changed = 0
        statement = update(queue).where(_in_ids(conn, queue.c.sample_id), queue.c.status == "queued") \
            .values(status=status)
        for chunk in _chunks(list(sample_ids), _id_batch(conn)):
            changed += int(conn.execute(statement, {"wanted_ids": _ids_value(conn, chunk)}).rowcount or 0)
        return changed

    def retract_model_labels(self, conn: Connection, annotator: str) -> int:
        """Retract the model labels one routing run stored (reversal of ``curato route``): the rows stay as history
        but no longer count; their samples' ``routed`` queue entries are queued again. Returns rows retracted."""
        retracted = select(labels.c.sample_id).where(labels.c.origin == "model", labels.c.annotator == annotator,
                                                     labels.c.retracted_at.is_(None))
        conn.execute(update(schema.queue).where(schema.queue.c.status == "routed",
                                                schema.queue.c.sample_id.in_(retracted)).values(status="queued"))
        return _retract(conn, (labels.c.origin == "model", labels.c.annotator == annotator), utcnow())

    def label_names(self) -> list[str]:
        """Every distinct label any sample ever had (any origin, retracted ones too), sorted: the labelling app's
        class list. Found by skipping along ``ix_labels_label`` (schema 9) from each label to the next, one index
        seek per label, instead of a DISTINCT over every label row."""
        following = (select(labels.c.label).where(labels.c.label > literal_column("names.label"))
                     .order_by(labels.c.label).limit(1).scalar_subquery())
        first = select(labels.c.label).order_by(labels.c.label).limit(1).scalar_subquery()
        names = select(first.label("label")).cte("names", recursive=True)
        names = names.union_all(select(following).select_from(names).where(names.c.label.is_not(None)))
        with self.engine.connect() as conn:
            found = conn.execute(select(names.c.label).where(names.c.label.is_not(None))).scalars().all()
        return sorted(found)

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
    for chunk in _chunks(sample_ids, _id_batch(conn)):
        found.update(iter(conn.execute(*_labels_of(conn, chunk, (labels.c.sample_id, labels.c.label),
                                                   labels.c.origin == origin))))
    return found


def _labels_of(conn: Connection, sample_ids: Sequence[str], columns: Sequence[Any], *where: Any
               ) -> tuple[Any, dict[str, Any]]:
    """The statement (and its parameters) reading ``columns`` of these samples' label rows matching ``where``, in
    id order, by the samples' index. PostgreSQL joins the ids as an array: its planner took ``sample_id IN (900
    ids)`` for a scan of every label once the table had ~100k rows (seconds per query at millions, minutes per
    ingest batch), and a join over the unnested ids stays index lookups."""
    if conn.dialect.name != "postgresql":
        return (select(*columns).where(_in_ids(conn, labels.c.sample_id), *where).order_by(labels.c.id),
                {"wanted_ids": _ids_value(conn, sample_ids)})
    wanted = func.unnest(bindparam("wanted_ids", type_=ARRAY(String))).table_valued("sid").render_derived()
    query = (select(*columns).select_from(wanted).join(labels, labels.c.sample_id == wanted.c.sid).where(*where)
             .order_by(labels.c.id))
    return query, {"wanted_ids": list(sample_ids)}


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


def _human_rows(conn: Connection) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(sample_id -> its latest review label, (sample_id, annotator) -> the annotator's latest answer) of the
    human labels that count: a label of a review decision (any queue but the labelling queue) is a review, every
    other human label an annotator's answer (an unnamed annotator is "")."""
    rows = conn.execute(
        select(labels.c.sample_id, labels.c.label, labels.c.annotator, labels.c.decision_id)
        .where(labels.c.origin == "human", labels.c.retracted_at.is_(None)).order_by(labels.c.id)
    ).all()
    reviewed: dict[str, str] = {}
    answers: dict[tuple[str, str], str] = {}
    if rows:
        review_decisions = set(conn.execute(select(decisions.c.id)
                                            .where(decisions.c.queue != LABELLING_QUEUE)).scalars())
        for sample_id, label, annotator, decision_id in rows:
            if decision_id is not None and decision_id in review_decisions:
                reviewed[sample_id] = label
            else:
                answers.pop((sample_id, annotator or ""), None)  # re-insert: the latest answer goes last
                answers[sample_id, annotator or ""] = label
    return reviewed, answers


def _fit_answers(answers: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """sample_id -> the aggregate of its annotators' answers (:func:`aggregate_answers` over all of them)."""
    if not answers:
        return {}
    keys = list(answers)
    return aggregate_answers([sid for sid, _ in keys], [who for _, who in keys], list(answers.values()))


def _human_curated(conn: Connection) -> dict[str, CuratedLabel]:
    """sample_id -> CuratedLabel of every sample with a human label that counts: the latest review decision
    (``how`` review), else the annotators' answers (one annotator's latest, or their aggregate)."""
    reviewed, answers = _human_rows(conn)
    per_sample = Counter(sid for sid, _ in answers)
    result = {sid: CuratedLabel(label, "human", "aggregated" if per_sample[sid] > 1 else "annotator")
              for sid, label in _fit_answers(answers).items()}
    result.update({sid: CuratedLabel(label, "human", "review") for sid, label in reviewed.items()})
    return result


def rule_labels(conn: Connection) -> dict[str, CuratedLabel]:
    """sample_id -> the label that counts and where it came from, computed from the whole label history: THE rule
    every command uses (the ``curated_labels`` table stores its result).

    1. a reviewer's decision in the app (the latest one not undone) -- a review is final;
    2. else the human annotators' labels: one annotator's latest answer, or, when several annotators
       labelled the sample, their aggregate (:func:`curato.crowd.aggregate_labels`: Dawid-Skene, majority
       vote as fallback);
    3. else the latest model label a ``curato route`` rule accepted;
    4. else the latest imported label.
    Retracted (undone) labels never count; the history stays in the ``labels`` table.
    """
    shared: dict[tuple[str, str, str], CuratedLabel] = {}

    def one(label: str, origin: str, how: str) -> CuratedLabel:
        found = shared.get((label, origin, how))
        if found is None:
            found = shared[label, origin, how] = CuratedLabel(label, origin, how)
        return found

    result = {sid: one(label, "imported", "imported") for sid, label in _latest_per_sample(conn, "imported").items()}
    result.update((sid, one(label, "model", "routed")) for sid, label in _latest_per_sample(conn, "model").items())
    result.update(_human_curated(conn))
    return result


def _sample_rules(conn: Connection, sample_ids: Sequence[str]) -> dict[str, tuple[str, str, str] | None]:
    """The rule of :func:`rule_labels` for these samples only, from their own label rows (index lookups):
    sample_id -> (label, origin, how), None without a label that counts. A multi-annotator sample gets its
    latest answer as the label: its aggregate is global (:meth:`Catalog._aggregate_changes`)."""
    found: dict[str, tuple[str, str, str] | None] = dict.fromkeys(sample_ids)
    for chunk in _chunks(list(found), _id_batch(conn)):
        rows = conn.execute(*_labels_of(conn, chunk, (labels.c.sample_id, labels.c.label, labels.c.origin,
                                                      labels.c.annotator, labels.c.decision_id),
                                        labels.c.retracted_at.is_(None))).all()
        asked = {row[4] for row in rows if row[2] == "human" and row[4] is not None}
        reviews = set(conn.execute(select(decisions.c.id).where(decisions.c.id.in_(asked),
                                                                decisions.c.queue != LABELLING_QUEUE)).scalars()) \
            if asked else set()
        latest: dict[tuple[str, str], str] = {}  # (sample, origin) -> latest label
        answered: dict[str, set[str]] = {}
        for sid, label, origin, annotator, decision_id in rows:
            if origin == "human":
                if decision_id is not None and decision_id in reviews:
                    latest[sid, "review"] = label
                else:
                    latest[sid, "answer"] = label
                    answered.setdefault(sid, set()).add(annotator or "")
            else:
                latest[sid, origin] = label
        for sid in chunk:
            if (sid, "review") in latest:
                found[sid] = (latest[sid, "review"], "human", "review")
            elif (sid, "answer") in latest:
                how = "aggregated" if len(answered[sid]) > 1 else "annotator"
                found[sid] = (latest[sid, "answer"], "human", how)
            elif (sid, "model") in latest:
                found[sid] = (latest[sid, "model"], "model", "routed")
            elif (sid, "imported") in latest:
                found[sid] = (latest[sid, "imported"], "imported", "imported")
    return found


def _stored_curated(conn: Connection, sample_ids: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """sample_id -> (label, origin, how) as the ``curated_labels`` table holds it, for these samples."""
    table = curated_labels
    found: dict[str, tuple[str, str, str]] = {}
    query = select(table.c.sample_id, table.c.label, table.c.origin, table.c.how).where(
        _in_ids(conn, table.c.sample_id))
    for chunk in _chunks(list(sample_ids), _id_batch(conn)):
        for sid, label, origin, how in conn.execute(query, {"wanted_ids": _ids_value(conn, chunk)}):
            found[sid] = (label, origin, how)
    return found


def _store_curated(conn: Connection, wanted: Mapping[str, tuple[str, str, str] | None]) -> None:
    """Make the ``curated_labels`` rows of these samples what ``wanted`` says (None: no row), writing only what
    changes; the split is copied from the sample. An ``aggregated`` row keeps its stored aggregate when it was
    aggregated already (its answers changed only if the answers token did too); a sample that becomes
    aggregated gets its latest answer for now and marks the aggregates due for a refit."""
    stored = _stored_curated(conn, list(wanted))
    gone = [sid for sid, rule in wanted.items() if rule is None and sid in stored]
    rows: list[dict[str, str]] = []
    refit = False
    for sid, rule in wanted.items():
        if rule is None:
            continue
        before = stored.get(sid)
        if rule[2] == "aggregated":
            if before is not None and before[2] == "aggregated":
                rule = before
            else:
                refit = True
        if rule != before:
            rows.append({"sid": sid, "new_label": rule[0], "new_origin": rule[1], "new_how": rule[2]})
    for chunk in _chunks(gone, 900):
        conn.execute(delete(curated_labels).where(curated_labels.c.sample_id.in_(chunk)))
    _upsert_curated(conn, rows)
    if refit:
        _answers_changed(conn)


def _upsert_curated(conn: Connection, rows: Sequence[dict[str, str]], *, outranking: Sequence[str] = ()) -> None:
    """Insert or replace ``curated_labels`` rows (``sid``, ``new_label``, ``new_origin``, ``new_how``), each with
    its sample's split (looked up), by one prepared statement executed many times. ``outranking``: a stored row
    whose origin is one of these is kept (the conflict's WHERE decides, so the writer reads no stored rows first),
    and so is a stored row equal to the new one (no write, no count moved)."""
    if not rows:
        return
    table = curated_labels
    if conn.dialect.name == "sqlite":
        kept = ""
        if outranking:
            kept = (f" WHERE curated_labels.origin NOT IN ({', '.join('?' * len(outranking))}) AND "
                    "(curated_labels.label IS NOT excluded.label OR curated_labels.origin IS NOT excluded.origin "
                    "OR curated_labels.how IS NOT excluded.how)")
        sql = ("INSERT INTO curated_labels (sample_id, label, origin, how, split) VALUES (?, ?, ?, ?, "
               "(SELECT split FROM samples WHERE sample_id = ?)) ON CONFLICT(sample_id) DO UPDATE SET "
               "label = excluded.label, origin = excluded.origin, how = excluded.how, split = excluded.split" + kept)
        extra = tuple(outranking)
        values = [(row["sid"], row["new_label"], row["new_origin"], row["new_how"], row["sid"], *extra)
                  for row in rows]
        for chunk in _chunks(values, _SQLITE_BATCH):
            conn.exec_driver_sql(sql, list(chunk))
        return
    def upsert(statement: Any) -> Any:
        excluded = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=["sample_id"], set_={name: excluded[name] for name in ("label", "origin", "how", "split")},
            where=and_(*(table.c.origin != literal(name) for name in outranking),
                       or_(table.c.label != excluded.label, table.c.origin != excluded.origin,
                           table.c.how != excluded.how))
            if outranking else None)

    if _copies(conn, rows, staged=True):
        unique = {row["sid"]: row for row in rows}  # the last one wins, as row by row
        staged = ((sid, row["new_label"], row["new_origin"], row["new_how"]) for sid, row in unique.items())
        stage = _pg_staged(conn, table, ["sample_id", "label", "origin", "how"], staged)
        split = select(samples.c.split).where(samples.c.sample_id == stage.c.sample_id).scalar_subquery()
        conn.execute(upsert(_dialect_insert(conn)(table).from_select(
            ["sample_id", "label", "origin", "how", "split"], select(*stage.c, split))))
        return
    split = select(samples.c.split).where(samples.c.sample_id == bindparam("sid")).scalar_subquery()
    statement = upsert(_dialect_insert(conn)(table).values(
        sample_id=bindparam("sid"), label=bindparam("new_label"), origin=bindparam("new_origin"),
        how=bindparam("new_how"), split=split))
    statement, rows = _multi_row(statement, table, rows, key="sid")
    for chunk in _chunks(rows):
        conn.execute(statement, list(chunk))


_SQLITE_BATCH = 50_000  # SQLite: rows per executemany, ids per JSON list (no bound-variable limit to respect)


def _id_batch(conn: Connection) -> int:
    """Ids per statement of :func:`_in_ids`: one JSON array in SQLite; PostgreSQL binds each id."""
    return _SQLITE_BATCH if conn.dialect.name == "sqlite" else 900


def _in_ids(conn: Connection, column: Any) -> Any:
    """``column IN`` the ids bound as the parameter ``wanted_ids`` (:func:`_ids_value`). SQLite reads them from
    one JSON array (``json_each``): one statement prepared once, whatever the number of ids, where an expanded
    ``IN (?, ?, ...)`` is compiled again for every list (milliseconds each in SQLAlchemy)."""
    if conn.dialect.name == "sqlite":
        listed = func.json_each(bindparam("wanted_ids", type_=String)).table_valued("value")
        return column.in_(select(listed.c.value))
    return column.in_(bindparam("wanted_ids", expanding=True))


def _ids_value(conn: Connection, sample_ids: Sequence[str]) -> Any:
    """The ``wanted_ids`` parameter of :func:`_in_ids` for these ids."""
    return json.dumps(list(sample_ids)) if conn.dialect.name == "sqlite" else list(sample_ids)


def _sqlite_values(conn: Connection, table: Any, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                   stamps: Sequence[str] = (), now: dt.datetime | None = None) -> tuple[list[str], list[tuple]]:
    """SQLite: the column names and plain value tuples that insert ``rows`` into ``table``, each value through its
    column's own bind processor (JSON, booleans, times), so what is stored is what SQLAlchemy would store; a
    column missing from the rows that has a scalar default gets it, as SQLAlchemy does; ``stamps`` columns get
    ``now`` (converted once)."""
    dialect = conn.dialect

    def processor(name: str) -> Callable[[Any], Any] | None:
        return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

    defaults = {column.name: column.default.arg for column in table.columns
                if column.name not in columns and column.name not in stamps and not column.primary_key
                and column.default is not None and column.default.is_scalar}
    values: list[Any] = []
    for name in columns:
        given = [row[name] for row in rows]
        convert = processor(name)
        values.append(given if convert is None else [convert(value) for value in given])
    for name, value in [*defaults.items(), *((name, now) for name in stamps)]:
        convert = processor(name)
        values.append(repeat(convert(value) if convert else value))
    return [*columns, *defaults, *stamps], list(zip(*values, strict=False))  # the repeats are endless


def _sqlite_upsert(conn: Connection, table: Any, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                   now: dt.datetime) -> None:
    """SQLite: insert ``rows`` of ``table`` (keyed by ``sample_id``), updating ``columns`` and ``updated_at`` of
    the existing ones, by one prepared statement executed over plain tuples (the driver's executemany):
    SQLAlchemy's per-row parameter handling cost as much as SQLite's own work (:func:`_sqlite_values`)."""
    names, tuples = _sqlite_values(conn, table, rows, columns, ("created_at", "updated_at"), now)
    updated = [name for name in [*columns, "updated_at"] if name != "sample_id"]
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
           f"ON CONFLICT(sample_id) DO UPDATE SET {', '.join(f'{name} = excluded.{name}' for name in updated)}")
    for chunk in _chunks(tuples, _SQLITE_BATCH):
        conn.exec_driver_sql(sql, list(chunk))


def _insert_rows(conn: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table``: on SQLite by the driver's executemany over plain
    tuples (:func:`_sqlite_values`), on PostgreSQL by COPY from ``PG_COPY_ROWS`` rows (:func:`_pg_copy`), else by
    SQLAlchemy's executemany."""
    if not rows:
        return
    if _copies(conn, rows):
        names = list(rows[0])
        _pg_copy(conn, table.name, table, names, (tuple(row[name] for name in names) for row in rows))
        return
    if conn.dialect.name != "sqlite":
        for chunk in _chunks(rows):
            conn.execute(table.insert(), list(chunk))
        return
    names, tuples = _sqlite_values(conn, table, rows, list(rows[0]))
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    for chunk in _chunks(tuples, _SQLITE_BATCH):
        conn.exec_driver_sql(sql, list(chunk))


def _copies(conn: Connection, rows: Sequence[Any], *, staged: bool = False) -> bool:
    """Whether this write goes by COPY (:func:`_pg_copy`): PostgreSQL through psycopg 3 (whose cursors copy; a
    ``postgresql://`` URL may mean psycopg2, which keeps the multi-row statements), ``PG_COPY_ROWS`` rows or more;
    an upsert (``staged``) also needs the right to create temporary tables, which a hardened role may lack (then
    the multi-row statements, as before)."""
    if not (conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg" and len(rows) >= PG_COPY_ROWS):
        return False
    if not staged:
        return True
    known = conn.connection.info  # per database connection: the role does not change under it
    if "curato_temp_allowed" not in known:
        known["curato_temp_allowed"] = bool(conn.execute(
            sql_text("SELECT has_database_privilege(current_database(), 'TEMPORARY')")).scalar())
    return bool(known["curato_temp_allowed"])


def _pg_copy(conn: Connection, target: str, table: Any, names: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL: ``rows`` (values of ``names``, columns of ``table``) into the table called ``target`` by the
    driver's COPY, inside ``conn``'s transaction: a bulk write costs a fraction of the client CPU of SQLAlchemy's
    multi-row statements (docs/benchmarks.md, "PostgreSQL bulk writes by COPY"). COPY fires the statement triggers
    once, with every row in the transition table, as one INSERT would. JSON values are written as JSON text (None as
    JSON null, as SQLAlchemy's JSON type writes it). The driver's errors are raised as SQLAlchemy's, as the
    statements' would be."""
    encoded = [isinstance(table.c[name].type, JSON) for name in names]
    dbapi = conn.connection.dbapi_connection
    sql = f"COPY {target} ({', '.join(names)}) FROM STDIN"
    try:
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([json.dumps(value) if wrapped else value
                                for value, wrapped in zip(row, encoded, strict=True)])
    except conn.dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(sql, None, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from error


def _pg_staged(conn: Connection, table: Any, names: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> Any:
    """PostgreSQL: ``rows`` COPYed (:func:`_pg_copy`) into a temporary table of these columns of ``table`` (their
    types, no constraints), returned for one ``INSERT ... SELECT ... ON CONFLICT``. One table per column set and
    connection, emptied before each use and at commit: a table created and dropped per call would hold its locks
    until the transaction ends (a long import would pile them up)."""
    columns = ", ".join(f"{column} {table.c[column].type.compile(dialect=conn.dialect)}" for column in names)
    name = f"curato_staged_{hashlib.sha1(f'{table.name}:{columns}'.encode()).hexdigest()[:16]}"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns}) ON COMMIT DELETE ROWS")
    conn.exec_driver_sql(f"TRUNCATE {name}")
    _pg_copy(conn, name, table, names, rows)
    return sql_table(name, *(sql_column(column) for column in names))


def _multi_row(statement: Any, table: Any, rows: Sequence[dict[str, Any]], *, key: str = "sample_id"
               ) -> tuple[Any, list[dict[str, Any]]]:
    """PostgreSQL: the upsert with RETURNING, which SQLAlchemy sends as one statement per 1,000 rows instead of
    one per row, so the count triggers (statement triggers) run once per 1,000 rows; ``rows`` with one row per
    sample (the last one wins, as row-by-row upserts would leave it: one multi-row upsert cannot touch a row
    twice)."""
    return statement.returning(table.c.sample_id), list({row[key]: row for row in rows}.values())


def _trim_label_changes(conn: Connection) -> bool:
    """Drop up to ``LABEL_CHANGES_TRIM_ROWS`` of the logged changes that every stored sum has applied (seq up to
    the lowest stored seq), oldest first, and record the newest dropped; True when more are left to drop. In
    chunks, each its own transaction, so that a bulk import's millions of logged rows never hold the curated-rows
    lock for long: rows older than the lowest stored seq are harmless until then (readers read after their seq)."""
    trimmed = int(conn.execute(select(info.c.value).where(info.c.key == LABEL_CHANGES_TRIMMED)).scalar() or 0)
    lowest = int(conn.execute(select(func.min(label_sums.c.seq))).scalar() or 0)
    if lowest <= trimmed:
        return False
    chunk_end = conn.execute(select(label_changes.c.seq).where(label_changes.c.seq <= lowest)
                             .order_by(label_changes.c.seq).offset(LABEL_CHANGES_TRIM_ROWS - 1).limit(1)).scalar()
    upto = lowest if chunk_end is None else int(chunk_end)
    conn.execute(delete(label_changes).where(label_changes.c.seq <= upto))
    statement = _dialect_insert(conn)(info).values(key=LABEL_CHANGES_TRIMMED, value=str(upto))
    conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": str(upto)}))
    return upto < lowest


def _mark_label_changes_dropped(conn: Connection) -> None:
    """Empty ``label_changes`` and record a new seq as the newest dropped (``info.label_changes_trimmed``), inside
    ``conn``'s transaction: sums computed as of any earlier seq are refused when stored (they cannot be brought up to
    date), and a snapshot taken after it counts as holding every change up to that seq."""
    seq = conn.execute(insert(label_changes).values(sample_id="", old_label=None, new_label=None)
                       .returning(label_changes.c.seq)).scalar_one()
    conn.execute(delete(label_changes))
    statement = _dialect_insert(conn)(info).values(key=LABEL_CHANGES_TRIMMED, value=str(seq))
    conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": str(seq)}))


def _lock_curated(conn: Connection) -> None:
    """Take the curated-rows write lock until ``conn``'s transaction ends (PostgreSQL; SQLite has one writer).

    Each writer reads the label rows and stored curated rows it decides from and then writes: two concurrent
    transactions on one sample (two annotators answering it, a route beside an answer) would each decide without
    the other's uncommitted rows and the later write would win, stale. Taken before those reads, the lock makes
    the second transaction wait for the first's commit, and its reads (each statement sees what is committed
    when it starts) then include it. One lock, not one per sample: a bulk import cannot hold 100k row or
    advisory locks, and the app's writes hold it for milliseconds."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_CURATED_LOCK)))
    else:  # SQLite begins its write transaction at the first write: a no-op one takes the lock before the reads
        conn.execute(update(info).where(false()).values(value=info.c.value))


def _refresh_curated(conn: Connection, sample_ids: Sequence[str]) -> None:
    """Recompute the curated rows of these samples from their label history (after any change to their labels)."""
    if sample_ids:
        _lock_curated(conn)
        _store_curated(conn, _sample_rules(conn, sample_ids))


def _machine_labels_written(conn: Connection, new_labels: Mapping[str, str], origin: str) -> None:
    """Curated rows after appending imported or model labels (each now its sample's latest of that origin): it
    counts unless a label of a higher rank (human; for imported ones also model) counts already -- decided by
    the upsert's conflict clause, row by row inside the database."""
    if not new_labels:
        return
    outranking = ("human",) if origin == "model" else ("human", "model")
    how = "routed" if origin == "model" else "imported"
    _lock_curated(conn)
    _upsert_curated(conn, [{"sid": sid, "new_label": label, "new_origin": origin, "new_how": how}
                           for sid, label in new_labels.items()], outranking=outranking)


def _retract(conn: Connection, where: Sequence[Any], now: dt.datetime) -> int:
    """Retract the labels that count and match ``where`` (the rows stay as history) and recompute their samples'
    curated rows; returns rows retracted."""
    counting = (*where, labels.c.retracted_at.is_(None))
    _lock_curated(conn)
    touched = list(conn.execute(select(labels.c.sample_id).where(*counting).distinct()).scalars())
    result = conn.execute(update(labels).where(*counting).values(retracted_at=now))
    _refresh_curated(conn, touched)
    return int(result.rowcount or 0)


def _move_split(conn: Connection, sample_id: str, split: str | None, now: dt.datetime, *,
                only_from: str | None = None) -> None:
    """Move a sample to ``split`` (only when it is in ``only_from``, if given), its curated row with it."""
    _lock_curated(conn)  # a concurrent label write copies the sample's split into its curated row
    moved = update(samples).where(samples.c.sample_id == sample_id)
    if only_from is not None:
        moved = moved.where(samples.c.split == only_from)
    if conn.execute(moved.values(split=split, updated_at=now)).rowcount:
        conn.execute(update(curated_labels).where(curated_labels.c.sample_id == sample_id).values(split=split))


def _copy_splits(conn: Connection, sample_ids: Sequence[str]) -> None:
    """Copy the samples' split into their curated rows where it differs (after samples were written)."""
    table = curated_labels
    _lock_curated(conn)
    split = select(samples.c.split).where(samples.c.sample_id == table.c.sample_id).scalar_subquery()
    statement = update(table).where(_in_ids(conn, table.c.sample_id), table.c.split.is_distinct_from(split)) \
        .values(split=split)
    for chunk in _chunks(sample_ids, _id_batch(conn)):
        conn.execute(statement, {"wanted_ids": _ids_value(conn, chunk)})


def _splits_of(conn: Connection, sample_ids: Sequence[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    query = select(samples.c.sample_id, samples.c.split).where(_in_ids(conn, samples.c.sample_id))
    for chunk in _chunks(list(sample_ids), _id_batch(conn)):
        found.update(conn.execute(query, {"wanted_ids": _ids_value(conn, chunk)}).all())
    return found


def _set_token(conn: Connection, key: str, value: str | None) -> None:
    """Store an answers token in ``info`` (an UPDATE of the existing row, so concurrent writers queue on it)."""
    if value is None:
        conn.execute(delete(info).where(info.c.key == key))
    elif not conn.execute(update(info).where(info.c.key == key).values(value=value)).rowcount:
        conn.execute(info.insert().values(key=key, value=value))


def _answers_changed(conn: Connection) -> None:
    """The annotators' answers changed in this transaction: the stored aggregates are due for a refit."""
    _set_token(conn, ANSWERS_TOKEN, uuid.uuid4().hex)


def init_answer_tokens(conn: Connection) -> None:
    """Give a catalog both answers tokens, equal (nothing due), unless it has them: writers then only update."""
    present = set(conn.execute(select(info.c.key).where(info.c.key.in_((ANSWERS_TOKEN, FITTED_TOKEN)))).scalars())
    if not present:
        token = uuid.uuid4().hex
        conn.execute(info.insert(), [{"key": ANSWERS_TOKEN, "value": token}, {"key": FITTED_TOKEN, "value": token}])


def fill_curated_labels(conn: Connection) -> int:
    """Write the whole ``curated_labels`` table from the label history by :func:`rule_labels` (aggregates fitted
    now, so the fitted token is the answers token), inside ``conn``; returns the rows written. Migration 0005 and
    :meth:`Catalog.rebuild_curated_labels` call it."""
    _lock_curated(conn)
    init_answer_tokens(conn)
    token = conn.execute(select(info.c.value).where(info.c.key == ANSWERS_TOKEN)).scalar()
    expected = rule_labels(conn)
    conn.execute(delete(curated_labels))
    rows = [{"sid": sid, "new_label": value.label, "new_origin": value.origin, "new_how": value.how}
            for sid, value in expected.items()]
    _upsert_curated(conn, rows)
    _set_token(conn, FITTED_TOKEN, token)
    return len(rows)


_AGGREGATED: dict[str, dict[str, str]] = {}  # digest of the answers -> their aggregate (the newest few)
_AGGREGATED_KEPT = 8  # a few MB each at 40k answers


def aggregate_answers(items: list[str], annotators: list[str], answers: list[str]) -> dict[str, str]:
    """:func:`curato.crowd.aggregate_labels` of these answers, remembered by a digest of all of them: fitting
    Dawid-Skene costs seconds whatever the catalog's size, and a server asks for the same answers again on
    every status or review page until someone labels something. The same answers give the same aggregate.
    Answers without an item answered twice are not remembered: nothing is fitted for them (majority vote), and
    they would push out fits that cost seconds."""
    from curato.crowd import aggregate_labels

    if len(set(items)) == len(items):
        return aggregate_labels(items, annotators, answers)
    digest = hashlib.sha256(json.dumps([items, annotators, answers]).encode()).hexdigest()
    found = _AGGREGATED.get(digest)
    if found is None:
        found = aggregate_labels(items, annotators, answers)
        while len(_AGGREGATED) >= _AGGREGATED_KEPT:
            _AGGREGATED.pop(next(iter(_AGGREGATED)), None)
        _AGGREGATED[digest] = found
    return dict(found)


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
    # up to 64 MiB of pages per connection (allocated as used; SQLite's default is 2 MiB): at millions of samples
    # the writers' index lookups and inserts otherwise go through the OS cache page by page
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()
