"""Logs: API key scopes. Every key there is keeps what it could do (ADMIN).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{ADMIN}'"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_api_keys_scopes"), "api_keys", "scopes <@ ARRAY['INGEST', 'READ', 'ADMIN']::text[]"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_api_keys_scopes"), "api_keys", type_="check")
    op.drop_column("api_keys", "scopes")
