"""Vendors: hidden from public lists once their owner is deleted.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("vendors", sa.Column("hidden_at", sa.DateTime(timezone=True), nullable=True))
    # Vendors of users deleted before this: hidden as a deletion now hides them.
    op.execute(
        "UPDATE vendors v SET hidden_at = u.deleted_at FROM users u WHERE u.id = v.user_id AND u.deleted_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("vendors", "hidden_at")
