"""Schema 8: ``ix_curated_labels_label`` on ``curated_labels (label, sample_id)`` (the report at 10M rows, issue 25).

The report shows each class's first readable images in sample_id order. Without an index by label it walked the
samples in id order with their curated labels until every class had its examples: with ids grouped by split and
class folder that read most of the catalog (a class present in one split only is found after every split before
it). With the index, each class is one index range read of a few rows (``Catalog.curated_examples``). The index
costs one more entry per curated row written; measured in docs/benchmarks.md. Skipped where it exists.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = "ix_curated_labels_label"


def upgrade() -> None:
    """Create the index (unless there)."""
    if NAME not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("curated_labels")}:
        op.create_index(NAME, "curated_labels", ["label", "sample_id"])


def downgrade() -> None:
    """Back to schema 7."""
    op.drop_index(NAME, table_name="curated_labels")
