"""Projects, their API keys, and the logs ingested with them (DOMAIN.md: projects, api_keys, logs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKeyConstraint, Identity, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, timestamp, updated_at, uuid_fk, uuid_pk

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")


MAX_RETENTION_DAYS = 36_500


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint(f"log_retention_days BETWEEN 1 AND {MAX_RETENTION_DAYS}", name="log_retention_days"),
    )

    id: uuid.UUID = uuid_pk()
    name: str = text_col(nullable=False)
    description: str | None = text_col()
    owner_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    client_id: uuid.UUID | None = uuid_fk("clients.id", ondelete="SET NULL", nullable=True, index=True)
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    # Logs older than this many days (by when Lodge stored them) are deleted by the retention
    # sweeper; null keeps them for good.
    log_retention_days: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))


# What an API key may do (`ApiKey.scopes`).
INGEST, READ, ADMIN = "INGEST", "READ", "ADMIN"
SCOPES = (INGEST, READ, ADMIN)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (
        # A key's environment must be one of its project's.
        ForeignKeyConstraint(
            ["environment_id", "project_id"], ["environments.id", "environments.project_id"], ondelete="CASCADE"
        ),
        Index("ix_api_keys_environment_id", "environment_id"),
        CheckConstraint("scopes <@ ARRAY['INGEST', 'READ', 'ADMIN']::text[]", name="scopes"),
    )

    id: uuid.UUID = uuid_pk()
    project_id: uuid.UUID = uuid_fk("projects.id", ondelete="CASCADE", index=True)
    environment_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True), nullable=True))
    label: str = text_col(nullable=False)
    description: str | None = text_col()
    prefix: str = text_col(nullable=False)
    # SHA-256 of the secret; the secret itself is never stored.
    key_hash: str = text_col(nullable=False, unique=True)
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    last_used_at: datetime | None = timestamp()
    expires_at: datetime | None = timestamp()
    revoked_at: datetime | None = timestamp()
    # What it may do (SCOPES): INGEST logs, READ the project's logs and tail them, or ADMIN (both,
    # and everything a key could do before scopes existed, which is what older keys keep).
    scopes: list[str] = Field(
        default_factory=lambda: [ADMIN],
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{ADMIN}'")),
    )


def key_can(key: ApiKey, scope: str) -> bool:
    return ADMIN in key.scopes or scope in key.scopes


class Log(SQLModel, table=True):
    __tablename__ = "logs"
    __table_args__ = (
        CheckConstraint("level IN ('DEBUG', 'INFO', 'WARN', 'ERROR')", name="level"),
        # Keyset pages and live-tail catch-up read a project's logs in seq order.
        Index("ix_logs_project_id_seq", "project_id", "seq"),
        Index("ix_logs_api_key_id_seq", "api_key_id", "seq"),
        Index(
            "uq_logs_project_id_idempotency_key",
            "project_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    # Strictly increasing; commits of one project are serialised so seq order is commit order.
    seq: int = Field(default=None, sa_column=Column(BigInteger, Identity(always=True), nullable=False, unique=True))
    project_id: uuid.UUID = uuid_fk("projects.id", ondelete="CASCADE")
    api_key_id: uuid.UUID | None = uuid_fk("api_keys.id", ondelete="SET NULL", nullable=True)
    log: str = text_col(nullable=False)
    level: str = text_col(nullable=False)
    attributes: Any = Field(default=None, sa_column=Column(JSONB, nullable=True))
    idempotency_key: str | None = text_col()
    # When the event happened, as its sender says (null when it did not say); created_at is when
    # Lodge stored it.
    occurred_at: datetime | None = timestamp()
    created_at: datetime = created_at()
