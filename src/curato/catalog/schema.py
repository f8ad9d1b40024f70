"""The catalog's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

docs/workspace.md describes every column; bump SCHEMA_VERSION when a table changes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    literal_column,
)

SCHEMA_VERSION = 10
LABEL_ORIGINS = ("imported", "human", "model")
SAMPLE_KINDS = ("image", "text")

metadata = MetaData()

info = Table(
    "info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

samples = Table(
    "samples",
    metadata,
    Column("sample_id", String, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("uri", Text),
    Column("text", Text),
    Column("split", String(64)),
    Column("source", String(128)),
    Column("width", Integer),
    Column("height", Integer),
    Column("format", String(16)),
    Column("bytes", Integer),
    Column("content_hash", String(40)),
    Column("phash", String(16)),
    Column("readable", Boolean, nullable=False, default=True),
    Column("error", Text),
    Column("meta", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_samples_hash", samples.c.content_hash)
# schema 4: a GROUP BY of these columns (``curato check``'s recount, the masking app's count of readable images)
# reads this index, not the rows
Index("ix_samples_overview", samples.c.kind, samples.c.split, samples.c.source, samples.c.format, samples.c.readable)
# schema 7: only the unreadable samples (``info`` lists them); schema 4-6 indexed every sample's ``readable``, and
# split and source each had an index that no query used since the counts are maintained (schema 6)
Index("ix_samples_unreadable", samples.c.sample_id, sqlite_where=samples.c.readable.is_(False),
      postgresql_where=samples.c.readable.is_(False))

labels = Table(
    "labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), nullable=False),
    Column("label", String, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("annotator", String(128)),
    Column("confidence", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # schema 2: the review/labelling decision that wrote a human label, how long the person took, and when an
    # undo retracted it (the row stays: history is never destroyed; retracted labels do not count)
    Column("decision_id", Integer),
    Column("duration_ms", Integer),
    Column("retracted_at", DateTime(timezone=True)),
)
Index("ix_labels_sample", labels.c.sample_id)
Index("ix_labels_origin", labels.c.origin, labels.c.sample_id)  # schema 4: the few human and model labels
# schema 9: the distinct labels (the labelling app's class list) by a skip over this index, a few rows per class
# (``Catalog.label_names``), not a DISTINCT over every label row
Index("ix_labels_label", labels.c.label)
# schema 5: an undo finds its decision's labels without scanning every label (only the few with a decision)
Index("ix_labels_decision", labels.c.decision_id, sqlite_where=labels.c.decision_id.is_not(None),
      postgresql_where=labels.c.decision_id.is_not(None))

# schema 5: the label rule's result per sample (Catalog.curated_labels), written in the same transaction as every
# label, retraction, decision and split change by the Catalog methods that make them, so that counting the
# curated labels per (label, origin, split) reads one index instead of applying the rule to every sample. A sample
# without a label that counts has no row. ``how`` aggregated rows hold the Dawid-Skene aggregate of the answers
# whose token ``info.curated_fitted`` names; when ``info.curated_answers`` differs, the answers changed since and
# the aggregates are refitted on the next read (docs/workspace.md "Curated labels").
curated_labels = Table(
    "curated_labels",
    metadata,
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), primary_key=True),
    Column("label", String, nullable=False),
    Column("origin", String(16), nullable=False),  # human | model | imported
    Column("how", String(16), nullable=False),  # review | aggregated | annotator | routed | imported
    Column("split", String(64)),  # the sample's split, copied (kept equal by every split write)
)
# schema 7: only the multi-annotator rows a refit reads (queried with the literal, which a partial index needs);
# schema 5-6 indexed every row's ``how`` and (label, origin, split), which the maintained counts replaced
AGGREGATED = literal_column("'aggregated'")
Index("ix_curated_labels_aggregated", curated_labels.c.sample_id, sqlite_where=curated_labels.c.how == AGGREGATED,
      postgresql_where=curated_labels.c.how == AGGREGATED)
# schema 8: each label's samples in sample_id order, so the report's examples per class are a few index lookups per
# class (``Catalog.curated_examples``) instead of a walk over the samples that can read most of the catalog
Index("ix_curated_labels_label", curated_labels.c.label, curated_labels.c.sample_id)

# schema 6: counts maintained by triggers in the same transaction as every write of the counted table, so that
# ``curato info``, the report's overview and the app's status read a few hundred rows instead of grouping millions
# (docs/workspace.md, "maintained counts"). ``sample_counts``: samples per (kind, split, source, format, readable);
# ``curated_counts``: curated labels per (label, origin, split). A combination that drops to zero keeps its row
# (n = 0). ``curato check`` compares both with a recount (:meth:`Catalog.count_problems`).
COUNTED_SAMPLE_COLUMNS = ("kind", "split", "source", "format", "readable")
COUNTED_CURATED_COLUMNS = ("label", "origin", "split")
sample_counts = Table(
    "sample_counts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("split", String(64)),
    Column("source", String(128)),
    Column("format", String(16)),
    Column("readable", Boolean, nullable=False),
    Column("n", Integer, nullable=False),
)
Index("ix_sample_counts_key", *(sample_counts.c[name] for name in COUNTED_SAMPLE_COLUMNS), unique=True)

curated_counts = Table(
    "curated_counts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("split", String(64)),
    Column("n", Integer, nullable=False),
)
Index("ix_curated_counts_key", *(curated_counts.c[name] for name in COUNTED_CURATED_COLUMNS), unique=True)

# schema 7: what ``curato info`` needs to count stale feature vectors without reading every sample's hash.
# ``hash_changes``: one row per change of a sample's ``content_hash``, per deleted sample, and per sample inserted
# again after it was logged once (a trigger writes them in the same transaction; a first ingest writes none);
# ``feature_counts``: per feature set, its stale and present vectors as counted up to change ``seq``, for the
# store generation ``store_key`` (Workspace.feature_staleness applies the later changes and stores the result).
# a change's seq: 64-bit (BIGSERIAL on PostgreSQL: a busy catalog may log more than 2^31 changes); SQLite's
# INTEGER PRIMARY KEY is already 64-bit and must stay spelled INTEGER to be the rowid
CHANGE_SEQ = BigInteger().with_variant(Integer(), "sqlite")

hash_changes = Table(
    "hash_changes",
    metadata,
    Column("seq", CHANGE_SEQ, primary_key=True, autoincrement=True),
    Column("sample_id", String, nullable=False),
    Column("change", String(8), nullable=False),  # insert | update | delete | absent (missing at a full count)
    Column("old_hash", String(40)),
    Column("new_hash", String(40)),
    sqlite_autoincrement=True,  # a seq is never reused
)
Index("ix_hash_changes_sample", hash_changes.c.sample_id)

feature_counts = Table(
    "feature_counts",
    metadata,
    Column("name", String, primary_key=True),
    Column("store_key", String(128), nullable=False),
    Column("seq", CHANGE_SEQ, nullable=False),
    Column("stale", Integer, nullable=False),
    Column("present", Integer, nullable=False),
)

# schema 10: what the report's per-class property means need to stay up to date without reading every curated label.
# ``label_changes``: one row per change of a sample's curated label (insert, new label, delete), written by triggers
# in the same transaction, but only while ``label_sums`` holds a row (nothing is logged before the first report);
# ``label_sums``: per name (one per feature set), per curated label the sums and counts of the set's columns as of
# change ``seq``, for the store generation ``store_key`` (Workspace.label_property_sums applies the later changes).
label_changes = Table(
    "label_changes",
    metadata,
    Column("seq", CHANGE_SEQ, primary_key=True, autoincrement=True),
    Column("sample_id", String, nullable=False),
    Column("old_label", String),  # NULL: the sample had no curated label
    Column("new_label", String),  # NULL: it has none now
    sqlite_autoincrement=True,  # a seq is never reused
)

label_sums = Table(
    "label_sums",
    metadata,
    Column("name", String, primary_key=True),
    Column("store_key", String(256), nullable=False),  # "" while the first sums are being computed
    Column("seq", CHANGE_SEQ, nullable=False),
    Column("sums", Text),  # JSON {"labels": [...], "sums": [[...]], "counts": [[...]]}; NULL while pending
)

annotations = Table(
    "annotations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # bbox | polygon | rle
    Column("category", String),
    Column("data", JSON, nullable=False),
    Column("area", Float),
    Column("origin", String(16), nullable=False),
    Column("annotator", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_annotations_sample", annotations.c.sample_id)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # ingest | embed | properties | audit | ...
    Column("name", String(128)),
    Column("params", JSON),
    Column("version", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # running | done | failed | interrupted
    Column("summary", JSON),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

# Active learning: the batches `curato select` queues for the labelling app (curato.active).
# routed: a `curato route` rule accepted the model's label, so no person needs to see it.
QUEUE_STATUSES = ("queued", "labelled", "skipped", "routed")
queue = Table(
    "queue",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),  # the `select` run that queued it
    Column("strategy", String(64), nullable=False),
    Column("rank", Integer, nullable=False),  # 1 = label first
    Column("score", Float),
    Column("reason", Text),
    Column("status", String(16), nullable=False),  # queued | labelled | skipped | routed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("assigned", Integer, nullable=False, default=0, server_default="0"),  # live assignments (schema 2)
)
Index("ix_queue_status", queue.c.status)
Index("ix_queue_run", queue.c.run_id)
Index("ix_queue_next", queue.c.status, queue.c.assigned, queue.c.run_id, queue.c.rank)

# ---- sizing (curato size) ----
# One measured learning-curve point: the scores of a model trained on the nested subset of ``size``
# labelled samples drawn with ``seed``, for the run settings whose digest is ``settings_digest``.
# ``curve`` is baseline | augmentation | pseudo-labels. Stored as each point finishes (resumable).
curve_points = Table(
    "curve_points",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("settings_digest", String(64), nullable=False),
    Column("curve", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_curve_points_key", curve_points.c.settings_digest, curve_points.c.curve, curve_points.c.size,
      curve_points.c.seed, unique=True)


# ---- the labelling app (curato serve), schema 2 ----
ROLES = ("admin", "reviewer", "annotator")
LABELLING_QUEUE = "labelling"  # decisions.queue of the labelling queue; every other value is a review queue
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 of the random token, never the token
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
)

# A browser login: the cookie holds a random secret whose SHA-256 is the id; ``csrf`` must come back in the
# X-CSRF-Token header of every state-changing request made with the cookie.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# One human decision in the app: a review of an audit finding or a label in the labelling queue. ``effects``
# says what it changed (labels appended, samples excluded or marked ambiguous, splits moved from -> to) so that
# an undo can reverse exactly that; an undone decision keeps its row (``undone_at``, ``undone_by``).
decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),  # a finding kind (label_issues, near_duplicates...) or labelling
    Column("item", Text, nullable=False),  # the reviewed item's key: a sample id, or group:<members>
    Column("action", String(32), nullable=False),
    Column("sample_ids", JSON, nullable=False),
    Column("effects", JSON, nullable=False),
    Column("user", String(64), nullable=False),
    Column("source_run", Integer),  # the audit run (review) or select run (labelling) the item came from
    Column("duration_ms", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("undone_at", DateTime(timezone=True)),
    Column("undone_by", String(64)),
)
Index("ix_decisions_item", decisions.c.queue, decisions.c.item)

# Who labels which queue entry. ``slot`` numbers the live assignments of one entry (0..overlap-1) and is unique
# per entry, so two annotators never hold the same slot: the database, not a Python lock, enforces the overlap.
# An expired or skipped assignment frees its slot (NULL).
ASSIGNMENT_STATUSES = ("assigned", "labelled", "skipped", "unsure", "expired")
assignments = Table(
    "assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("queue_id", Integer, ForeignKey("queue.id", ondelete="CASCADE")),  # NULL for a gold item
    Column("sample_id", String, nullable=False),
    Column("annotator", String(64), nullable=False),
    Column("slot", Integer),
    Column("gold", Boolean, nullable=False, default=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Integer),
    Column("label", String),
    UniqueConstraint("queue_id", "slot", name="uq_assignments_slot"),
    UniqueConstraint("sample_id", "annotator", name="uq_assignments_annotator"),  # nobody sees an item twice
)
Index("ix_assignments_annotator", assignments.c.annotator, assignments.c.status)

# Items with a known answer, mixed into annotators' queues to measure their accuracy.
gold = Table(
    "gold",
    metadata,
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), primary_key=True),
    Column("label", String, nullable=False),
    Column("created_by", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Who is masking which image, since when: one row per image being masked. Claimed in one statement (insert, or
# take over a claim older than the lease), so the database, not a Python lock, keeps two people off one image.
mask_claims = Table(
    "mask_claims",
    metadata,
    Column("sample_id", String, ForeignKey("samples.sample_id", ondelete="CASCADE"), primary_key=True),
    Column("annotator", String(64), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)


# ---- schema 6: the triggers that keep sample_counts and curated_counts -------------------------------------------
_COUNTED = (("samples", "sample_counts", COUNTED_SAMPLE_COLUMNS, ("kind", "readable")),
            ("curated_labels", "curated_counts", COUNTED_CURATED_COLUMNS, ("label", "origin")))


def _pg_statement_triggers(table: str, name: str) -> list[str]:
    """PostgreSQL: (re)create the statement triggers ``<name>_insert|update|delete`` on ``table``, each running
    ``<name>_follow()`` over the transition tables its event has."""
    run = f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_follow()"
    return [*(f"DROP TRIGGER IF EXISTS {name}_{event} ON {table}" for event in ("insert", "update", "delete")),
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows {run}",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
            f"NEW TABLE AS new_rows {run}",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows {run}"]


def drop_trigger_statements(dialect: str, table: str, name: str) -> list[str]:
    """The SQL that drops the triggers ``<name>_insert|update|delete`` on ``table`` (and, on PostgreSQL, their
    function ``<name>_follow()``): a migration's downgrade."""
    on = f" ON {table}" if dialect == "postgresql" else ""
    statements = [f"DROP TRIGGER IF EXISTS {name}_{event}{on}" for event in ("insert", "update", "delete")]
    return statements + ([f"DROP FUNCTION IF EXISTS {name}_follow()"] if dialect == "postgresql" else [])


def count_trigger_statements(dialect: str) -> list[str]:
    """The SQL that (re)creates the triggers keeping ``sample_counts`` and ``curated_counts`` equal to a recount of
    ``samples`` and ``curated_labels``: every insert, update of a counted column and delete (cascades included)
    moves one count in the same transaction. Idempotent (drops the old triggers first); the catalog's creation and
    migration 0006 run it. Only the columns that are never NULL are compared with ``=`` (an index prefix). SQLite:
    row triggers; PostgreSQL: statement triggers over the statement's transition tables."""
    statements: list[str] = []
    for table, counts, columns, required in _COUNTED:
        names = ", ".join(columns)
        if dialect == "sqlite":
            def match(row: str, columns: tuple[str, ...] = columns, required: tuple[str, ...] = required) -> str:
                return " AND ".join(f"{c} = {row}.{c}" if c in required else f"{c} IS {row}.{c}" for c in columns)

            add = (f"UPDATE {counts} SET n = n + 1 WHERE {match('NEW')}; INSERT INTO {counts} ({names}, n) "
                   f"SELECT {', '.join(f'NEW.{c}' for c in columns)}, 1 WHERE NOT EXISTS "
                   f"(SELECT 1 FROM {counts} WHERE {match('NEW')});")
            remove = f"UPDATE {counts} SET n = n - 1 WHERE {match('OLD')};"
            changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
            statements += [f"DROP TRIGGER IF EXISTS {counts}_insert", f"DROP TRIGGER IF EXISTS {counts}_update",
                           f"DROP TRIGGER IF EXISTS {counts}_delete",
                           f"CREATE TRIGGER {counts}_insert AFTER INSERT ON {table} BEGIN {add} END",
                           f"CREATE TRIGGER {counts}_update AFTER UPDATE OF {names} ON {table} WHEN {changed} "
                           f"BEGIN {remove} {add} END",
                           f"CREATE TRIGGER {counts}_delete AFTER DELETE ON {table} BEGIN {remove} END"]
        elif dialect == "postgresql":
            # one UPDATE per statement, not per row: a row updated many times in one transaction leaves a chain of
            # versions that each later update walks (a 100k-sample batch would take minutes); the writers send
            # multi-row statements or, from 500 rows, COPY and one INSERT ... SELECT (Catalog.upsert_samples, the
            # curated rows' upsert): COPY fires the statement triggers once too
            def moved(rows: str, sign: int, names: str = names) -> str:
                return f"SELECT {names}, {sign} AS d FROM {rows}"

            def apply(part: str, counts: str = counts, columns: tuple[str, ...] = columns,
                      required: tuple[str, ...] = required, names: str = names) -> str:
                def match(row: str, other: str) -> str:
                    return " AND ".join(f"{row}.{c} = {other}.{c}" if c in required
                                        else f"{row}.{c} IS NOT DISTINCT FROM {other}.{c}" for c in columns)

                delta = f"SELECT {names}, sum(d) AS d FROM ({part}) moved GROUP BY {names} HAVING sum(d) <> 0"
                return (f"UPDATE {counts} c SET n = c.n + delta.d FROM ({delta}) delta WHERE {match('c', 'delta')}; "
                        f"INSERT INTO {counts} ({names}, n) SELECT {names}, d FROM ({delta}) delta WHERE NOT EXISTS "
                        f"(SELECT 1 FROM {counts} c WHERE {match('c', 'delta')});")

            statements += [
                f"""CREATE OR REPLACE FUNCTION {counts}_follow() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {apply(moved('new_rows', 1))}
  ELSIF TG_OP = 'DELETE' THEN
    {apply(moved('old_rows', -1))}
  ELSE
    {apply(moved('new_rows', 1) + ' UNION ALL ' + moved('old_rows', -1))}
  END IF;
  RETURN NULL;
END
$body$""",
                *_pg_statement_triggers(table, counts)]
        else:
            raise ValueError(f"no count triggers for database {dialect!r}")
    return statements


HASH_CHANGE_LOCK = 0x637573  # the catalog's curated-rows advisory lock (PostgreSQL): changes commit in seq order


def hash_change_trigger_statements(dialect: str) -> list[str]:
    """The SQL that (re)creates the triggers logging into ``hash_changes`` every change of a sample's
    ``content_hash``, every deleted sample, and every insert of a sample id logged before (deleted, then ingested
    again). Idempotent. SQLite: row triggers; PostgreSQL: statement triggers over the transition tables, which
    take the catalog's write lock first, so that changes commit in the order of their ``seq`` (a reader that saw
    change n has seen every change before it)."""
    columns = "sample_id, change, old_hash, new_hash"
    if dialect == "sqlite":
        return ["DROP TRIGGER IF EXISTS hash_changes_insert", "DROP TRIGGER IF EXISTS hash_changes_update",
                "DROP TRIGGER IF EXISTS hash_changes_delete",
                f"CREATE TRIGGER hash_changes_insert AFTER INSERT ON samples WHEN EXISTS (SELECT 1 FROM hash_changes "
                f"WHERE sample_id = NEW.sample_id) BEGIN INSERT INTO hash_changes ({columns}) "
                f"VALUES (NEW.sample_id, 'insert', NULL, NEW.content_hash); END",
                f"CREATE TRIGGER hash_changes_update AFTER UPDATE OF content_hash ON samples WHEN OLD.content_hash "
                f"IS NOT NEW.content_hash BEGIN INSERT INTO hash_changes ({columns}) "
                f"VALUES (NEW.sample_id, 'update', OLD.content_hash, NEW.content_hash); END",
                f"CREATE TRIGGER hash_changes_delete AFTER DELETE ON samples BEGIN INSERT INTO hash_changes "
                f"({columns}) VALUES (OLD.sample_id, 'delete', OLD.content_hash, NULL); END"]
    if dialect == "postgresql":
        return [f"""CREATE OR REPLACE FUNCTION hash_changes_follow() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  PERFORM pg_advisory_xact_lock({HASH_CHANGE_LOCK});
  IF TG_OP = 'INSERT' THEN
    INSERT INTO hash_changes ({columns}) SELECT n.sample_id, 'insert', NULL, n.content_hash FROM new_rows n
      WHERE EXISTS (SELECT 1 FROM hash_changes h WHERE h.sample_id = n.sample_id);
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO hash_changes ({columns}) SELECT o.sample_id, 'delete', o.content_hash, NULL FROM old_rows o;
  ELSE
    INSERT INTO hash_changes ({columns}) SELECT n.sample_id, 'update', o.content_hash, n.content_hash
      FROM new_rows n JOIN old_rows o ON o.sample_id = n.sample_id
      WHERE o.content_hash IS DISTINCT FROM n.content_hash;
  END IF;
  RETURN NULL;
END
$body$""",
                *_pg_statement_triggers("samples", "hash_changes")]
    raise ValueError(f"no hash-change triggers for database {dialect!r}")


def label_change_trigger_statements(dialect: str) -> list[str]:
    """The SQL that (re)creates the triggers logging into ``label_changes`` every insert, change of label and
    delete of a ``curated_labels`` row (cascades included; the rows' sample_id is never updated) while
    ``label_sums`` holds any row. Idempotent. SQLite: row triggers; PostgreSQL: statement triggers over the
    transition tables, which take the curated-rows lock first, so that changes commit in the order of their
    ``seq`` (a snapshot that holds change n holds every change before it)."""
    columns = "sample_id, old_label, new_label"
    active = "EXISTS (SELECT 1 FROM label_sums)"
    if dialect == "sqlite":
        return ["DROP TRIGGER IF EXISTS label_changes_insert", "DROP TRIGGER IF EXISTS label_changes_update",
                "DROP TRIGGER IF EXISTS label_changes_delete",
                f"CREATE TRIGGER label_changes_insert AFTER INSERT ON curated_labels WHEN {active} "
                f"BEGIN INSERT INTO label_changes ({columns}) VALUES (NEW.sample_id, NULL, NEW.label); END",
                f"CREATE TRIGGER label_changes_update AFTER UPDATE OF label ON curated_labels WHEN "
                f"OLD.label IS NOT NEW.label AND {active} BEGIN INSERT INTO label_changes ({columns}) "
                f"VALUES (NEW.sample_id, OLD.label, NEW.label); END",
                f"CREATE TRIGGER label_changes_delete AFTER DELETE ON curated_labels WHEN {active} "
                f"BEGIN INSERT INTO label_changes ({columns}) VALUES (OLD.sample_id, OLD.label, NULL); END"]
    if dialect == "postgresql":
        return [f"""CREATE OR REPLACE FUNCTION label_changes_follow() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  -- the lock first: a first report's pending row (Catalog.begin_label_sums) takes it too, so a writer either
  -- sees that row here or has committed before the report's snapshot
  PERFORM pg_advisory_xact_lock({HASH_CHANGE_LOCK});
  IF NOT {active} THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO label_changes ({columns}) SELECT n.sample_id, NULL, n.label FROM new_rows n;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO label_changes ({columns}) SELECT o.sample_id, o.label, NULL FROM old_rows o;
  ELSE
    INSERT INTO label_changes ({columns}) SELECT n.sample_id, o.label, n.label
      FROM new_rows n JOIN old_rows o ON o.sample_id = n.sample_id WHERE o.label IS DISTINCT FROM n.label;
  END IF;
  RETURN NULL;
END
$body$""",
                *_pg_statement_triggers("curated_labels", "label_changes")]
    raise ValueError(f"no label-change triggers for database {dialect!r}")


def count_fill_statements() -> list[str]:
    """SQL that rewrites both count tables from a recount (migration 0006, and the repair of a damaged count)."""
    statements = []
    for table, counts, columns, _ in _COUNTED:
        names = ", ".join(columns)
        statements += [f"DELETE FROM {counts}",
                       f"INSERT INTO {counts} ({names}, n) SELECT {names}, count(*) FROM {table} GROUP BY {names}"]
    return statements


def _create_count_triggers(target: MetaData, connection: Any, **_: Any) -> None:
    """After ``metadata.create_all`` made every table: the count triggers (a new catalog)."""
    if {"samples", "sample_counts", "curated_labels", "curated_counts"} <= set(target.tables):
        for statement in count_trigger_statements(connection.dialect.name):
            connection.exec_driver_sql(statement)
    if {"samples", "hash_changes"} <= set(target.tables):
        for statement in hash_change_trigger_statements(connection.dialect.name):
            connection.exec_driver_sql(statement)
    if {"curated_labels", "label_changes", "label_sums"} <= set(target.tables):
        for statement in label_change_trigger_statements(connection.dialect.name):
            connection.exec_driver_sql(statement)


event.listen(metadata, "after_create", _create_count_triggers)
