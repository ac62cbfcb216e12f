"""Communities: guilds, memberships, club analyses with images and metrics, chat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# RFC 7396 JSON merge patch: objects merge key by key, recursively; a null removes its key; any
# other value replaces. One UPDATE applies it, so concurrent patches of different keys all survive.
JSONB_MERGE_PATCH = """
CREATE FUNCTION jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    merged jsonb;
    k text;
    v jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    merged := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR k, v IN SELECT key, value FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            merged := merged - k;
        ELSE
            merged := jsonb_set(merged, ARRAY[k], jsonb_merge_patch(merged -> k, v));
        END IF;
    END LOOP;
    RETURN merged;
END $$
"""

UPDATED_AT_TABLES = ("guilds", "user_guilds", "club_analyses", "chat_conversations")


def upgrade() -> None:
    # Trigram indexes make ILIKE '%text%' searches use an index.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(JSONB_MERGE_PATCH)
    op.create_table(
        "guilds",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("discord_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "settings", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("jsonb_typeof(settings) = 'object'", name=op.f("ck_guilds_settings_object")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guilds")),
        sa.UniqueConstraint("discord_id", name=op.f("uq_guilds_discord_id")),
    )
    op.create_index("ix_guilds_created_at", "guilds", ["created_at"], unique=False)
    op.create_index("ix_guilds_discord_id_created_at", "guilds", ["discord_id", "created_at"], unique=False)
    op.create_index("ix_guilds_name_id", "guilds", ["name", "id"], unique=False)
    op.create_index(
        "ix_guilds_name_trgm",
        "guilds",
        ["name"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )
    op.create_index("ix_guilds_updated_at", "guilds", ["updated_at"], unique=False)
    op.create_table(
        "chat_conversations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_conversations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_conversations")),
    )
    op.create_index("ix_chat_conversations_created_at", "chat_conversations", ["created_at"], unique=False)
    op.create_index("ix_chat_conversations_updated_at", "chat_conversations", ["updated_at"], unique=False)
    op.create_index(
        "ix_chat_conversations_user_id_created_at", "chat_conversations", ["user_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "club_analyses",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("guild_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name=op.f("ck_club_analyses_confidence_range")),
        sa.ForeignKeyConstraint(
            ["guild_id"], ["guilds.id"], name=op.f("fk_club_analyses_guild_id_guilds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_club_analyses_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_club_analyses")),
    )
    op.create_index("ix_club_analyses_confidence", "club_analyses", ["confidence"], unique=False)
    op.create_index("ix_club_analyses_created_at", "club_analyses", ["created_at"], unique=False)
    op.create_index(op.f("ix_club_analyses_guild_id"), "club_analyses", ["guild_id"], unique=False)
    op.create_index("ix_club_analyses_guild_id_confidence", "club_analyses", ["guild_id", "confidence"], unique=False)
    op.create_index(
        "ix_club_analyses_guild_id_created_at", "club_analyses", ["guild_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_club_analyses_summary_trgm",
        "club_analyses",
        ["summary"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"summary": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_club_analyses_title_trgm",
        "club_analyses",
        ["title"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.create_index("ix_club_analyses_updated_at", "club_analyses", ["updated_at"], unique=False)
    op.create_index(op.f("ix_club_analyses_user_id"), "club_analyses", ["user_id"], unique=False)
    op.create_index(
        "ix_club_analyses_user_id_created_at", "club_analyses", ["user_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "user_guilds",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("guild_id", sa.UUID(), nullable=False),
        sa.Column(
            "roles", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("jsonb_typeof(roles) = 'array'", name=op.f("ck_user_guilds_roles_array")),
        sa.ForeignKeyConstraint(
            ["guild_id"], ["guilds.id"], name=op.f("fk_user_guilds_guild_id_guilds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_guilds_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_guilds")),
        sa.UniqueConstraint("user_id", "guild_id", name=op.f("uq_user_guilds_user_id_guild_id")),
    )
    op.create_index("ix_user_guilds_guild_id_created_at", "user_guilds", ["guild_id", "created_at", "id"], unique=False)
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("guild_id", sa.UUID(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.CheckConstraint(
            "conversation_id IS NOT NULL OR guild_id IS NOT NULL", name=op.f("ck_chat_messages_has_place")
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat_conversations.id"],
            name=op.f("fk_chat_messages_conversation_id_chat_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["guild_id"], ["guilds.id"], name=op.f("fk_chat_messages_guild_id_guilds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chat_messages_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    op.create_index(op.f("ix_chat_messages_conversation_id"), "chat_messages", ["conversation_id"], unique=False)
    op.create_index(
        "ix_chat_messages_conversation_id_created_at",
        "chat_messages",
        ["conversation_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_chat_messages_created_at", "chat_messages", ["created_at"], unique=False)
    op.create_index(op.f("ix_chat_messages_guild_id"), "chat_messages", ["guild_id"], unique=False)
    op.create_index(
        "ix_chat_messages_guild_id_created_at", "chat_messages", ["guild_id", "created_at", "id"], unique=False
    )
    op.create_index(op.f("ix_chat_messages_user_id"), "chat_messages", ["user_id"], unique=False)
    op.create_table(
        "club_analysis_images",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("analysis_id", sa.UUID(), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=False),
        sa.Column("original_name", sa.Text(), nullable=True),
        sa.Column("file_size", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("file_size IS NULL OR file_size >= 0", name=op.f("ck_club_analysis_images_file_size")),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["club_analyses.id"],
            name=op.f("fk_club_analysis_images_analysis_id_club_analyses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_club_analysis_images")),
    )
    op.create_index(op.f("ix_club_analysis_images_analysis_id"), "club_analysis_images", ["analysis_id"], unique=False)
    op.create_table(
        "club_metrics",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("analysis_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["club_analyses.id"],
            name=op.f("fk_club_metrics_analysis_id_club_analyses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_club_metrics")),
    )
    op.create_index(op.f("ix_club_metrics_analysis_id"), "club_metrics", ["analysis_id"], unique=False)
    op.create_index("ix_club_metrics_category", "club_metrics", ["category"], unique=False)
    op.create_index("ix_club_metrics_name", "club_metrics", ["name"], unique=False)
    for table in UPDATED_AT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    op.drop_index("ix_club_metrics_name", table_name="club_metrics")
    op.drop_index("ix_club_metrics_category", table_name="club_metrics")
    op.drop_index(op.f("ix_club_metrics_analysis_id"), table_name="club_metrics")
    op.drop_table("club_metrics")
    op.drop_index(op.f("ix_club_analysis_images_analysis_id"), table_name="club_analysis_images")
    op.drop_table("club_analysis_images")
    op.drop_index(op.f("ix_chat_messages_user_id"), table_name="chat_messages")
    op.drop_index("ix_chat_messages_guild_id_created_at", table_name="chat_messages")
    op.drop_index(op.f("ix_chat_messages_guild_id"), table_name="chat_messages")
    op.drop_index("ix_chat_messages_created_at", table_name="chat_messages")
    op.drop_index("ix_chat_messages_conversation_id_created_at", table_name="chat_messages")
    op.drop_index(op.f("ix_chat_messages_conversation_id"), table_name="chat_messages")
    op.drop_table("chat_messages")
    op.drop_index("ix_user_guilds_guild_id_created_at", table_name="user_guilds")
    op.drop_table("user_guilds")
    op.drop_index("ix_club_analyses_user_id_created_at", table_name="club_analyses")
    op.drop_index(op.f("ix_club_analyses_user_id"), table_name="club_analyses")
    op.drop_index("ix_club_analyses_updated_at", table_name="club_analyses")
    op.drop_index(
        "ix_club_analyses_title_trgm",
        table_name="club_analyses",
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.drop_index(
        "ix_club_analyses_summary_trgm",
        table_name="club_analyses",
        postgresql_using="gin",
        postgresql_ops={"summary": "gin_trgm_ops"},
    )
    op.drop_index("ix_club_analyses_guild_id_created_at", table_name="club_analyses")
    op.drop_index("ix_club_analyses_guild_id_confidence", table_name="club_analyses")
    op.drop_index(op.f("ix_club_analyses_guild_id"), table_name="club_analyses")
    op.drop_index("ix_club_analyses_created_at", table_name="club_analyses")
    op.drop_index("ix_club_analyses_confidence", table_name="club_analyses")
    op.drop_table("club_analyses")
    op.drop_index("ix_chat_conversations_user_id_created_at", table_name="chat_conversations")
    op.drop_index("ix_chat_conversations_updated_at", table_name="chat_conversations")
    op.drop_index("ix_chat_conversations_created_at", table_name="chat_conversations")
    op.drop_table("chat_conversations")
    op.drop_index("ix_guilds_updated_at", table_name="guilds")
    op.drop_index(
        "ix_guilds_name_trgm", table_name="guilds", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}
    )
    op.drop_index("ix_guilds_name_id", table_name="guilds")
    op.drop_index("ix_guilds_discord_id_created_at", table_name="guilds")
    op.drop_index("ix_guilds_created_at", table_name="guilds")
    op.drop_table("guilds")
    op.execute("DROP FUNCTION jsonb_merge_patch(jsonb, jsonb)")
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")
