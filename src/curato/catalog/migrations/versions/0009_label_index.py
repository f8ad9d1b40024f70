"""Schema 9: ``ix_labels_label`` on ``labels (label)`` (the labelling app's class list at 10M rows, issue 25).

The app offers every label any sample ever had; it asked for ``SELECT DISTINCT label FROM labels``, a read of every
label row (3.4 s of CPU at 10M samples, on every page and answer that needs the class list). With the index the
distinct labels are found by skipping from one label to the next (``Catalog.label_names``): a few index reads per
class. The index costs one more entry per label row written; measured in docs/benchmarks.md. Skipped where it
exists.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ix_labels_label"


def upgrade() -> None:
    """Create the index (unless there)."""
    if NAME not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("labels")}:
        op.create_index(NAME, "labels", ["label"])


def downgrade() -> None:
    """Back to schema 8."""
    op.drop_index(NAME, table_name="labels")
