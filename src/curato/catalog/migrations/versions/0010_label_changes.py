"""Schema 10: the report's per-class property means kept up to date from a log of curated-label changes (issue 25).

The report's property table averages the properties of every labelled sample per curated label: a read of every
curated row and a lookup of each in the properties set (11.6 s of CPU at 7.1M samples). ``label_sums`` keeps the
sums and counts per label as of a change number, and ``label_changes`` (filled by triggers on ``curated_labels``,
only once ``label_sums`` holds a row) the changes since, so a later report reads only those. Both start empty: the
first report computes the sums once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from curato.catalog.schema import CHANGE_SEQ, drop_trigger_statements, label_change_trigger_statements

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create both tables (unless there) and the triggers."""
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "label_changes" not in present:
        op.create_table(
            "label_changes",
            sa.Column("seq", CHANGE_SEQ, primary_key=True, autoincrement=True),
            sa.Column("sample_id", sa.String(), nullable=False),
            sa.Column("old_label", sa.String()),
            sa.Column("new_label", sa.String()),
            sqlite_autoincrement=True,
        )
    if "label_sums" not in present:
        op.create_table(
            "label_sums",
            sa.Column("name", sa.String(), primary_key=True),
            sa.Column("store_key", sa.String(256), nullable=False),
            sa.Column("seq", CHANGE_SEQ, nullable=False),
            sa.Column("sums", sa.Text()),
        )
    bind = op.get_bind()
    for statement in label_change_trigger_statements(bind.dialect.name):
        bind.exec_driver_sql(statement)
    # a mark left by a downgraded schema 10 would refuse every sum until the new log's seqs passed it
    bind.execute(sa.text("DELETE FROM info WHERE key = 'label_changes_trimmed'"))


def downgrade() -> None:
    """Back to schema 9."""
    bind = op.get_bind()
    for statement in drop_trigger_statements(bind.dialect.name, "curated_labels", "label_changes"):
        bind.exec_driver_sql(statement)
    op.drop_table("label_sums")
    op.drop_table("label_changes")
    bind.execute(sa.text("DELETE FROM info WHERE key = 'label_changes_trimmed'"))
