"""Schema 7: fewer index entries per written row (the catalog at 10M rows, issue 25).

Since schema 6 the counts per split, source and origin come from the maintained count tables, so four indexes
no longer answer any query and only cost every bulk write (a few microseconds per row each, measured: a 10M
ingest spent minutes in them): ``ix_samples_split`` and ``ix_samples_source`` (one entry per sample), and
``ix_curated_labels_counts`` (one per curated row; ``curato check``'s recount now reads the table). Two indexes
become partial, holding only the rows their queries look for: ``ix_samples_unreadable`` (the unreadable samples
``info`` lists; was ``ix_samples_readable`` over every sample) and ``ix_curated_labels_aggregated`` (the
multi-annotator rows a refit reads; was ``ix_curated_labels_how``). Indexes already gone are skipped.

Also the tables that let ``curato info`` count stale feature vectors without reading every sample's hash:
``hash_changes`` (with its triggers) and ``feature_counts``, both empty at first (the first ``info`` counts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from curato.catalog.schema import CHANGE_SEQ, drop_trigger_statements, hash_change_trigger_statements

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DROPPED = (("ix_samples_split", "samples", ["split"]), ("ix_samples_source", "samples", ["source"]),
           ("ix_samples_readable", "samples", ["readable"]),
           ("ix_curated_labels_counts", "curated_labels", ["label", "origin", "split"]),
           ("ix_curated_labels_how", "curated_labels", ["how"]))


def _partial_indexes() -> tuple[tuple[str, str, list[str], sa.ColumnElement], ...]:
    return (("ix_samples_unreadable", "samples", ["sample_id"], sa.column("readable").is_(False)),
            ("ix_curated_labels_aggregated", "curated_labels", ["sample_id"],
             sa.column("how") == sa.literal_column("'aggregated'")))


def upgrade() -> None:
    """Drop the indexes no query uses; create the partial ones."""
    inspector = sa.inspect(op.get_bind())
    for name, table, _columns in DROPPED:
        if name in {index["name"] for index in inspector.get_indexes(table)}:
            op.drop_index(name, table_name=table)
    for name, table, columns, where in _partial_indexes():
        if name not in {index["name"] for index in inspector.get_indexes(table)}:
            op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)
    present = set(inspector.get_table_names())
    if "hash_changes" not in present:
        op.create_table(
            "hash_changes",
            sa.Column("seq", CHANGE_SEQ, primary_key=True, autoincrement=True),
            sa.Column("sample_id", sa.String(), nullable=False),
            sa.Column("change", sa.String(8), nullable=False),
            sa.Column("old_hash", sa.String(40)),
            sa.Column("new_hash", sa.String(40)),
            sqlite_autoincrement=True,
        )
        op.create_index("ix_hash_changes_sample", "hash_changes", ["sample_id"])
    if "feature_counts" not in present:
        op.create_table(
            "feature_counts",
            sa.Column("name", sa.String(), primary_key=True),
            sa.Column("store_key", sa.String(128), nullable=False),
            sa.Column("seq", CHANGE_SEQ, nullable=False),
            sa.Column("stale", sa.Integer(), nullable=False),
            sa.Column("present", sa.Integer(), nullable=False),
        )
    bind = op.get_bind()
    for statement in hash_change_trigger_statements(bind.dialect.name):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    """Back to schema 6."""
    bind = op.get_bind()
    for statement in drop_trigger_statements(bind.dialect.name, "samples", "hash_changes"):
        bind.exec_driver_sql(statement)
    op.drop_table("feature_counts")
    op.drop_index("ix_hash_changes_sample", table_name="hash_changes")
    op.drop_table("hash_changes")
    for name, table, _columns, _where in _partial_indexes():
        op.drop_index(name, table_name=table)
    for name, table, columns in DROPPED:
        op.create_index(name, table, columns)
