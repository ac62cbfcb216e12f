"""Workflows: an index of the deleted files whose content is still stored, for the file sweeper.

Swept files keep `deleted_at` (their content is gone, `storage_key` is NULL): an index of every
deleted file would make each sweep walk all the files ever swept before the first one to sweep.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSWEPT = sa.text("deleted_at IS NOT NULL AND storage_key IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_files_content_to_sweep", "files", ["deleted_at"], postgresql_where=UNSWEPT)


def downgrade() -> None:
    op.drop_index("ix_files_content_to_sweep", table_name="files", postgresql_where=UNSWEPT)
