"""Vendors: billing status from the provider's signed webhook. A subscription may carry the
provider's own id (unique per provider) and the time of the event that set its status; each
webhook event is applied once (billing_events).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("external_id", sa.Text(), nullable=True))
    op.add_column("subscriptions", sa.Column("provider_updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "uq_subscriptions_provider_external_id",
        "subscriptions",
        ["provider", "external_id"],
        unique=True,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.create_table(
        "billing_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_events")),
    )


def downgrade() -> None:
    op.drop_table("billing_events")
    op.drop_index("uq_subscriptions_provider_external_id", table_name="subscriptions")
    op.drop_column("subscriptions", "provider_updated_at")
    op.drop_column("subscriptions", "external_id")
