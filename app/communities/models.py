"""Discord communities (DOMAIN.md, seeds/slimy-communities.md): guilds, memberships, club
analyses with their images and metrics, and chat."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Column, DateTime, Double, Index, Integer, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, updated_at, uuid_fk, uuid_pk

# The message model has a column named `text`, which shadows sqlalchemy.text in its class body.
CLOCK = text("clock_timestamp()")


def _trigram(name: str, column: str) -> Index:
    return Index(name, column, postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"})


class Guild(SQLModel, table=True):
    __tablename__ = "guilds"
    __table_args__ = (
        Index("ix_guilds_created_at", "created_at"),
        Index("ix_guilds_updated_at", "updated_at"),
        Index("ix_guilds_discord_id_created_at", "discord_id", "created_at"),
        Index("ix_guilds_name_id", "name", "id"),
        _trigram("ix_guilds_name_trgm", "name"),
        CheckConstraint("jsonb_typeof(settings) = 'object'", name="settings_object"),
    )

    id: uuid.UUID = uuid_pk()
    discord_id: str = text_col(nullable=False, unique=True)
    name: str = text_col(nullable=False)
    settings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class UserGuild(SQLModel, table=True):
    __tablename__ = "user_guilds"
    __table_args__ = (
        UniqueConstraint("user_id", "guild_id"),
        # A guild's member list, in joining order.
        Index("ix_user_guilds_guild_id_created_at", "guild_id", "created_at", "id"),
        CheckConstraint("jsonb_typeof(roles) = 'array'", name="roles_array"),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    guild_id: uuid.UUID = uuid_fk("guilds.id", ondelete="CASCADE")
    roles: list[str] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    )
    created_at: datetime = created_at()  # joinedAt
    updated_at: datetime = updated_at()


class ClubAnalysis(SQLModel, table=True):
    __tablename__ = "club_analyses"
    __table_args__ = (
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        Index("ix_club_analyses_created_at", "created_at"),
        Index("ix_club_analyses_updated_at", "updated_at"),
        Index("ix_club_analyses_confidence", "confidence"),
        Index("ix_club_analyses_guild_id_confidence", "guild_id", "confidence"),
        Index("ix_club_analyses_guild_id_created_at", "guild_id", "created_at", "id"),
        Index("ix_club_analyses_user_id_created_at", "user_id", "created_at", "id"),
        # Case-insensitive substring search (ILIKE '%perf%') over title and summary.
        _trigram("ix_club_analyses_title_trgm", "title"),
        _trigram("ix_club_analyses_summary_trgm", "summary"),
    )

    id: uuid.UUID = uuid_pk()
    guild_id: uuid.UUID = uuid_fk("guilds.id", ondelete="CASCADE", index=True)
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    title: str | None = text_col()
    summary: str = text_col(nullable=False)
    confidence: float = Field(sa_column=Column(Double, nullable=False))
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class ClubAnalysisImage(SQLModel, table=True):
    __tablename__ = "club_analysis_images"
    __table_args__ = (CheckConstraint("file_size IS NULL OR file_size >= 0", name="file_size"),)

    id: uuid.UUID = uuid_pk()
    analysis_id: uuid.UUID = uuid_fk("club_analyses.id", ondelete="CASCADE", index=True)
    image_url: str = text_col(nullable=False)
    original_name: str | None = text_col()
    file_size: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    position: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))  # as sent
    created_at: datetime = created_at()


class ClubMetric(SQLModel, table=True):
    __tablename__ = "club_metrics"
    __table_args__ = (
        Index("ix_club_metrics_name", "name"),
        Index("ix_club_metrics_category", "category"),
    )

    id: uuid.UUID = uuid_pk()
    analysis_id: uuid.UUID = uuid_fk("club_analyses.id", ondelete="CASCADE", index=True)
    name: str = text_col(nullable=False)
    value: float = Field(sa_column=Column(Double, nullable=False))
    unit: str | None = text_col()
    category: str | None = text_col()
    position: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))  # as sent
    created_at: datetime = created_at()


class ChatConversation(SQLModel, table=True):
    __tablename__ = "chat_conversations"
    __table_args__ = (
        Index("ix_chat_conversations_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_chat_conversations_created_at", "created_at"),
        Index("ix_chat_conversations_updated_at", "updated_at"),
        Index("ix_chat_conversations_guild_id_created_at", "guild_id", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    # The guild it is about, if any (set when created, by a member of that guild).
    guild_id: uuid.UUID | None = uuid_fk("guilds.id", ondelete="SET NULL", nullable=True)
    title: str | None = text_col()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class ChatMessage(SQLModel, table=True):
    __tablename__ = "chat_messages"
    __table_args__ = (
        CheckConstraint("conversation_id IS NOT NULL OR guild_id IS NOT NULL", name="has_place"),
        Index("ix_chat_messages_created_at", "created_at"),
        # Chronological history of a conversation and of a guild (keyset over created_at, id).
        Index("ix_chat_messages_conversation_id_created_at", "conversation_id", "created_at", "id"),
        Index("ix_chat_messages_guild_id_created_at", "guild_id", "created_at", "id"),
    )

    id: uuid.UUID = uuid_pk()
    conversation_id: uuid.UUID | None = uuid_fk("chat_conversations.id", ondelete="CASCADE", nullable=True, index=True)
    # A guild message outlives its author's account; a conversation's messages go with it.
    user_id: uuid.UUID | None = uuid_fk("users.id", ondelete="SET NULL", nullable=True, index=True)
    guild_id: uuid.UUID | None = uuid_fk("guilds.id", ondelete="CASCADE", nullable=True, index=True)
    text: str = text_col(nullable=False)
    # clock_timestamp(): messages posted in one transaction keep their order.
    created_at: datetime = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=CLOCK),
    )
