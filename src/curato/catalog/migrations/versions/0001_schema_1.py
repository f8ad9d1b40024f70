"""Schema 1: the catalog as curato created it before the labelling app (samples, labels, annotations, runs, queue,
curve_points, info). Frozen here (not imported from curato.catalog.schema, which moves on).

Tables that already exist are left alone: early schema-1 catalogs lack ``queue`` and ``curve_points`` (curato
added them without a version bump), so an unversioned catalog can run this revision to fill them in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[sa.SchemaItem], list[tuple[str, list[str], bool]]]]:
    """Each schema-1 table: name, columns and constraints, indexes (name, columns, unique)."""
    return [
        ("info", [
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        ], []),
        ("samples", [
            sa.Column("sample_id", sa.String, primary_key=True),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("uri", sa.Text),
            sa.Column("text", sa.Text),
            sa.Column("split", sa.String(64)),
            sa.Column("source", sa.String(128)),
            sa.Column("width", sa.Integer),
            sa.Column("height", sa.Integer),
            sa.Column("format", sa.String(16)),
            sa.Column("bytes", sa.Integer),
            sa.Column("content_hash", sa.String(40)),
            sa.Column("phash", sa.String(16)),
            sa.Column("readable", sa.Boolean, nullable=False),
            sa.Column("error", sa.Text),
            sa.Column("meta", sa.JSON),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        ], [("ix_samples_split", ["split"], False), ("ix_samples_source", ["source"], False),
            ("ix_samples_hash", ["content_hash"], False)]),
        ("labels", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sample_id", sa.String, sa.ForeignKey("samples.sample_id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("label", sa.String, nullable=False),
            sa.Column("origin", sa.String(16), nullable=False),
            sa.Column("annotator", sa.String(128)),
            sa.Column("confidence", sa.Float),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        ], [("ix_labels_sample", ["sample_id"], False)]),
        ("annotations", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sample_id", sa.String, sa.ForeignKey("samples.sample_id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("category", sa.String),
            sa.Column("data", sa.JSON, nullable=False),
            sa.Column("area", sa.Float),
            sa.Column("origin", sa.String(16), nullable=False),
            sa.Column("annotator", sa.String(128)),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        ], [("ix_annotations_sample", ["sample_id"], False)]),
        ("runs", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("name", sa.String(128)),
            sa.Column("params", sa.JSON),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("summary", sa.JSON),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True)),
        ], []),
        ("queue", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("sample_id", sa.String, sa.ForeignKey("samples.sample_id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
            sa.Column("strategy", sa.String(64), nullable=False),
            sa.Column("rank", sa.Integer, nullable=False),
            sa.Column("score", sa.Float),
            sa.Column("reason", sa.Text),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        ], [("ix_queue_status", ["status"], False), ("ix_queue_run", ["run_id"], False)]),
        ("curve_points", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("settings_digest", sa.String(64), nullable=False),
            sa.Column("curve", sa.String(32), nullable=False),
            sa.Column("size", sa.Integer, nullable=False),
            sa.Column("seed", sa.Integer, nullable=False),
            sa.Column("scores", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        ], [("ix_curve_points_key", ["settings_digest", "curve", "size", "seed"], True)]),
    ]


TABLES = ("info", "samples", "labels", "annotations", "runs", "queue", "curve_points")


def upgrade() -> None:
    """Create the schema-1 tables and indexes that are missing."""
    present = set(sa.inspect(op.get_bind()).get_table_names())
    for name, items, indexes in _tables():
        if name in present:
            continue
        op.create_table(name, *items)
        for index, columns, unique in indexes:
            op.create_index(index, name, columns, unique=unique)


def downgrade() -> None:
    """Drop every schema-1 table (children first)."""
    for name, _items, _indexes in reversed(_tables()):
        op.drop_table(name)
