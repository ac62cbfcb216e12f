"""The one `users` table every product shares (DOMAIN.md: Merges)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Column, Index, text
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, timestamp, updated_at, uuid_pk

EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(f"email IS NULL OR email ~* '{EMAIL_PATTERN}'", name="email_format"),
        # Emails are stored lower-cased, so a plain partial unique index is case-insensitive.
        CheckConstraint("email IS NULL OR email = lower(email)", name="email_lowercase"),
        CheckConstraint("email IS NOT NULL OR discord_id IS NOT NULL OR clerk_id IS NOT NULL", name="has_identity"),
        Index("uq_users_email_live", "email", unique=True, postgresql_where=text("deleted_at IS NULL")),
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
