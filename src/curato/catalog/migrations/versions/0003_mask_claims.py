"""Schema 3: table mask_claims (who is masking which image, since when), so two people never get the same image.

Skipped when the table is already there (curato creates missing tables of a new catalog with create_all).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add mask_claims when it is not there yet."""
    if "mask_claims" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "mask_claims",
        sa.Column("sample_id", sa.String, sa.ForeignKey("samples.sample_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("annotator", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Back to schema 2."""
    op.drop_table("mask_claims")
