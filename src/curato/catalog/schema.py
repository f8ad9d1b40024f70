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
