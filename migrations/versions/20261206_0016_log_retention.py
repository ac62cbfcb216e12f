"""Logs: a per-project retention period (days; null keeps logs for good).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("log_retention_days", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_projects_log_retention_days"), "projects", "log_retention_days BETWEEN 1 AND 36500"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_projects_log_retention_days"), "projects", type_="check")
    op.drop_column("projects", "log_retention_days")
