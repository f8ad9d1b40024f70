"""The catalog's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

docs/workspace.md describes every column; bump SCHEMA_VERSION when a table changes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
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
)

SCHEMA_VERSION = 1
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
Index("ix_samples_split", samples.c.split)
Index("ix_samples_source", samples.c.source)
Index("ix_samples_hash", samples.c.content_hash)

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
)
Index("ix_labels_sample", labels.c.sample_id)

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
QUEUE_STATUSES = ("queued", "labelled", "skipped")
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
    Column("status", String(16), nullable=False),  # queued | labelled | skipped
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_queue_status", queue.c.status)
Index("ix_queue_run", queue.c.run_id)

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
