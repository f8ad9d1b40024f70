"""Schema 5: the ``curated_labels`` table, the label rule's result per sample, filled from the label history.

``curato info``, the report's overview and the labelling app's status count the curated labels per (label,
origin, split); with the rule stored, that is one GROUP BY over ``ix_curated_labels_counts`` instead of the rule
applied to every sample (a Dawid-Skene fit and a join per sample: ~30-60 s per million samples). The Catalog's
label writers keep the table equal to the rule from now on (docs/workspace.md "Curated labels"). Filling it runs
the rule once over the whole history: minutes per million samples. ``ix_labels_decision`` (partial: only labels
with a decision) lets an undo find its decision's labels without scanning every label.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from curato.catalog.catalog import fill_curated_labels

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its indexes (unless there), then fill it by the rule."""
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("curated_labels"):
        op.create_table(
            "curated_labels",
            sa.Column("sample_id", sa.String(), sa.ForeignKey("samples.sample_id", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("label", sa.String(), nullable=False),
            sa.Column("origin", sa.String(16), nullable=False),
            sa.Column("how", sa.String(16), nullable=False),
            sa.Column("split", sa.String(64)),
        )
        op.create_index("ix_curated_labels_counts", "curated_labels", ["label", "origin", "split"])
        op.create_index("ix_curated_labels_how", "curated_labels", ["how"])
    if "ix_labels_decision" not in {index["name"] for index in sa.inspect(bind).get_indexes("labels")}:
        condition = sa.text("decision_id IS NOT NULL")
        op.create_index("ix_labels_decision", "labels", ["decision_id"], sqlite_where=condition,
                        postgresql_where=condition)
    fill_curated_labels(bind)


def downgrade() -> None:
    """Back to schema 4."""
    op.drop_index("ix_labels_decision", table_name="labels")
    op.drop_index("ix_curated_labels_how", table_name="curated_labels")
    op.drop_index("ix_curated_labels_counts", table_name="curated_labels")
    op.drop_table("curated_labels")
