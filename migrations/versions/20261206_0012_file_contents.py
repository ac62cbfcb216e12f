"""Workflows: files keep their content (uploaded to a signed URL): where the storage keeps it and
when it arrived.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("storage_key", sa.Text(), nullable=True))
    op.add_column("files", sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "stored_at")
    op.drop_column("files", "storage_key")
