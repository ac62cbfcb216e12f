"""Gateway: a reservation counts the steps recorded under its hold (at most its amount).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("steps", sa.Integer(), server_default=sa.text("0"), nullable=False))
    # Holds running during the upgrade keep the steps they already recorded (at most their amount).
    op.execute(
        """
        UPDATE reservations r
        SET steps = least(r.amount, (SELECT count(*) FROM request_logs l WHERE l.start_point = r.start_point))
        """
    )
    op.create_check_constraint(op.f("ck_reservations_steps"), "reservations", "steps >= 0 AND steps <= amount")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_reservations_steps"), "reservations", type_="check")
    op.drop_column("reservations", "steps")
