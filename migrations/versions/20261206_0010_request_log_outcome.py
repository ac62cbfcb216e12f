"""Gateway: request logs record refused requests too (outcome, reason), and belong to their
environment and service rather than to the quota row, so they outlive a service disabled or
detached later.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("request_logs", sa.Column("outcome", sa.Text(), server_default=sa.text("'accepted'"), nullable=False))
    op.add_column("request_logs", sa.Column("reason", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_request_logs_outcome"), "request_logs", "outcome IN ('accepted', 'refused')")
    op.drop_constraint(
        op.f("fk_request_logs_environment_id_service_id_environment_services"), "request_logs", type_="foreignkey"
    )
    op.create_foreign_key(
        op.f("fk_request_logs_environment_id_environments"),
        "request_logs",
        "environments",
        ["environment_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_request_logs_service_id_services"),
        "request_logs",
        "services",
        ["service_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(op.f("ix_request_logs_service_id"), "request_logs", ["service_id"])


def downgrade() -> None:
    # Logs of quota rows that are gone (and refused requests of services never enabled) cannot
    # point at environment_services again.
    op.execute(
        """
        DELETE FROM request_logs l WHERE NOT EXISTS (
            SELECT 1 FROM environment_services es
            WHERE es.environment_id = l.environment_id AND es.service_id = l.service_id
        )
        """
    )
    op.drop_index(op.f("ix_request_logs_service_id"), table_name="request_logs")
    op.drop_constraint(op.f("fk_request_logs_service_id_services"), "request_logs", type_="foreignkey")
    op.drop_constraint(op.f("fk_request_logs_environment_id_environments"), "request_logs", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_request_logs_environment_id_service_id_environment_services"),
        "request_logs",
        "environment_services",
        ["environment_id", "service_id"],
        ["environment_id", "service_id"],
        ondelete="CASCADE",
    )
    op.drop_constraint(op.f("ck_request_logs_outcome"), "request_logs", type_="check")
    op.drop_column("request_logs", "reason")
    op.drop_column("request_logs", "outcome")
