"""The one `users` table every product shares (DOMAIN.md: Merges)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, Index, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, timestamp, updated_at, uuid_fk, uuid_pk

EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"email IS NULL OR email ~* '{EMAIL_PATTERN}'", name="email_format"),
        # Emails are stored lower-cased, so a plain partial unique index is case-insensitive.
        CheckConstraint("email IS NULL OR email = lower(email)", name="email_lowercase"),
        CheckConstraint("email IS NOT NULL OR discord_id IS NOT NULL OR clerk_id IS NOT NULL", name="has_identity"),
        Index("uq_users_email_live", "email", unique=True, postgresql_where=text("deleted_at IS NULL")),
        Index("ix_users_created_at", "created_at"),
        Index("ix_users_updated_at", "updated_at"),
        Index("ix_users_discord_id_created_at", "discord_id", "created_at"),
    )

    id: uuid.UUID = uuid_pk()
    email: str | None = text_col()
    password_hash: str | None = text_col()
    name: str | None = text_col()
    first_name: str | None = text_col()
    last_name: str | None = text_col()
    username: str | None = text_col()
    global_name: str | None = text_col()
    discord_id: str | None = text_col(unique=True)
    clerk_id: str | None = text_col(unique=True)
    avatar_url: str | None = text_col()
    is_active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    email_verified_at: datetime | None = timestamp()
    last_login_at: datetime | None = timestamp()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    deleted_at: datetime | None = timestamp()


class Role(SQLModel, table=True):
    __tablename__ = "roles"

    id: uuid.UUID = uuid_pk()
    name: str = text_col(nullable=False, unique=True)
    description: str | None = text_col()
    permissions: list[str] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    )
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class UserRole(SQLModel, table=True):
    __tablename__ = "user_roles"
    __table_args__ = (UniqueConstraint("user_id", "role_id"),)

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    role_id: uuid.UUID = uuid_fk("roles.id", ondelete="CASCADE", index=True)
    assigned_at: datetime = created_at()
    assigned_by: uuid.UUID | None = uuid_fk("users.id", ondelete="SET NULL", nullable=True)


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_tokens"

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    # Every token rotated out of one login shares its family; reusing a rotated token revokes it.
    family_id: uuid.UUID = Field(default=None, sa_column=Column(UUID(as_uuid=True), nullable=False, index=True))
    token_hash: str = text_col(nullable=False, unique=True)
    expires_at: datetime = timestamp(nullable=False)
    created_at: datetime = created_at()
    revoked_at: datetime | None = timestamp()


class EmailVerification(SQLModel, table=True):
    """A token sent to an address to prove the user reads it (requestEmailVerification); stored
    only as its SHA-256, spent once, and good only while the user's email is still this one."""

    __tablename__ = "email_verifications"

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    email: str = text_col(nullable=False)
    token_hash: str = text_col(nullable=False, unique=True)
    expires_at: datetime = timestamp(nullable=False)
    created_at: datetime = created_at()
    used_at: datetime | None = timestamp()


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id_expires_at", "user_id", "expires_at"),)

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    token_hash: str = text_col(nullable=False, unique=True)
    expires_at: datetime = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    created_at: datetime = created_at()
