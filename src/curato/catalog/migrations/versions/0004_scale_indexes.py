"""Schema 4, the catalog at 10M rows: indexes for ``curato info`` and the label rule.

``ix_samples_overview`` (kind, split, source, format, readable) lets the overview's one GROUP BY read an index
instead of every row; ``ix_samples_readable`` finds the unreadable samples without a scan; ``ix_labels_origin``
(origin, sample_id) finds the few human and model labels among millions of imported ones, and one sample's
labels of one origin (a sample-only index would then compete with an origin-only one, which SQLite, without
statistics, may pick to scan every imported label). Indexes already
there are skipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_samples_overview", "samples", ["kind", "split", "source", "format", "readable"]),
    ("ix_samples_readable", "samples", ["readable"]),
    ("ix_labels_origin", "labels", ["origin", "sample_id"]),
)


def upgrade() -> None:
    """Create the indexes that are not there yet."""
    inspector = sa.inspect(op.get_bind())
    for name, table, columns in INDEXES:
        if name not in {index["name"] for index in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)


def downgrade() -> None:
    """Back to schema 3."""
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
