"""Communities: a conversation may be about a guild.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chat_conversations", sa.Column("guild_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_chat_conversations_guild_id_guilds"),
        "chat_conversations",
        "guilds",
        ["guild_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_chat_conversations_guild_id_created_at", "chat_conversations", ["guild_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_chat_conversations_guild_id_created_at", table_name="chat_conversations")
    op.drop_constraint(op.f("fk_chat_conversations_guild_id_guilds"), "chat_conversations", type_="foreignkey")
    op.drop_column("chat_conversations", "guild_id")
