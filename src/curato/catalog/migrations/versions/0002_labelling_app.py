"""Schema 2, the labelling app: tables users, sessions, decisions, assignments, gold; columns
labels.decision_id/duration_ms/retracted_at and queue.assigned (existing rows get 0); index ix_queue_next.

Steps already done are skipped: curato between schema 2's tables and this migration created missing tables with
create_all, so an unversioned schema-1 catalog may already hold some of them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LABEL_COLUMNS = ("decision_id", "duration_ms", "retracted_at")


def _new_tables() -> list[tuple[str, list[sa.SchemaItem], list[tuple[str, list[str]]]]]:
    """Each schema-2 table in creation order: name, columns and constraints, indexes (name, columns)."""
    return [
        ("users", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(64), nullable=False, unique=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("disabled_at", sa.DateTime(timezone=True)),
        ], []),
        ("sessions", [
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
            sa.Column("csrf", sa.String(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        ], []),
        ("decisions", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("queue", sa.String(64), nullable=False),
            sa.Column("item", sa.Text, nullable=False),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("sample_ids", sa.JSON, nullable=False),
            sa.Column("effects", sa.JSON, nullable=False),
            sa.Column("user", sa.String(64), nullable=False),
            sa.Column("source_run", sa.Integer),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("undone_at", sa.DateTime(timezone=True)),
            sa.Column("undone_by", sa.String(64)),
        ], [("ix_decisions_item", ["queue", "item"])]),
        ("assignments", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("queue_id", sa.Integer, sa.ForeignKey("queue.id", ondelete="CASCADE")),
            sa.Column("sample_id", sa.String, nullable=False),
            sa.Column("annotator", sa.String(64), nullable=False),
            sa.Column("slot", sa.Integer),
            sa.Column("gold", sa.Boolean, nullable=False, server_default="0"),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True)),
            sa.Column("duration_ms", sa.Integer),
            sa.Column("label", sa.String),
            sa.UniqueConstraint("queue_id", "slot", name="uq_assignments_slot"),
            sa.UniqueConstraint("sample_id", "annotator", name="uq_assignments_annotator"),
        ], [("ix_assignments_annotator", ["annotator", "status"])]),
        ("gold", [
            sa.Column("sample_id", sa.String, sa.ForeignKey("samples.sample_id", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("label", sa.String, nullable=False),
            sa.Column("created_by", sa.String(64)),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        ], []),
    ]


def upgrade() -> None:
    """Add what schema 2 adds and is not there yet; existing queue rows get ``assigned`` = 0."""
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    label_columns = {column["name"] for column in inspector.get_columns("labels")}
    queue_columns = {column["name"] for column in inspector.get_columns("queue")}
    queue_indexes = {index["name"] for index in inspector.get_indexes("queue")}
    # batch mode: SQLite adds these columns in place (ALTER TABLE ADD COLUMN), other databases ignore the batch
    with op.batch_alter_table("labels") as batch:
        if "decision_id" not in label_columns:
            batch.add_column(sa.Column("decision_id", sa.Integer))
        if "duration_ms" not in label_columns:
            batch.add_column(sa.Column("duration_ms", sa.Integer))
        if "retracted_at" not in label_columns:
            batch.add_column(sa.Column("retracted_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("queue") as batch:
        if "assigned" not in queue_columns:
            batch.add_column(sa.Column("assigned", sa.Integer, nullable=False, server_default="0"))
    if "ix_queue_next" not in queue_indexes:
        op.create_index("ix_queue_next", "queue", ["status", "assigned", "run_id", "rank"])
    for name, items, indexes in _new_tables():
        if name in present:
            continue
        op.create_table(name, *items)
        for index, columns in indexes:
            op.create_index(index, name, columns)


def downgrade() -> None:
    """Back to schema 1: drop the schema-2 tables, index and columns."""
    for name, _items, _indexes in reversed(_new_tables()):
        op.drop_table(name)
    op.drop_index("ix_queue_next", table_name="queue")
    with op.batch_alter_table("queue") as batch:
        batch.drop_column("assigned")
    with op.batch_alter_table("labels") as batch:
        for name in reversed(LABEL_COLUMNS):
            batch.drop_column(name)
