"""Workflows: the runner protocol. An execution remembers the runner that claimed it, until when
its lease runs without a heartbeat, and how many claims it has had.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("runner", sa.Text(), nullable=True))
    op.add_column("executions", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("executions", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_index(
        "ix_executions_pending", "executions", ["created_at", "id"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index(
        "ix_executions_lease", "executions", ["lease_expires_at"], postgresql_where=sa.text("status = 'running'")
    )


def downgrade() -> None:
    op.drop_index("ix_executions_lease", table_name="executions")
    op.drop_index("ix_executions_pending", table_name="executions")
    op.drop_column("executions", "attempts")
    op.drop_column("executions", "lease_expires_at")
    op.drop_column("executions", "runner")
