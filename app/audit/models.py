"""The one append-only `audit_logs` table (DOMAIN.md: Merges). PostgreSQL refuses UPDATE and DELETE."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, Index, text
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, uuid_fk, uuid_pk


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_created_at", "created_at"),
        Index("ix_audit_logs_user_id_created_at", "user_id", "created_at"),
        Index("ix_audit_logs_action_created_at", "action", "created_at"),
        Index("ix_audit_logs_resource_type_resource_id", "resource_type", "resource_id"),
        Index("ix_audit_logs_resource_id", "resource_id"),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID | None = uuid_fk("users.id", ondelete="SET NULL", nullable=True)
    action: str = text_col(nullable=False)
    resource_type: str | None = text_col()
    resource_id: str | None = text_col()
    details: Any = Field(default=None, sa_column=Column(JSONB))
    changes: Any = Field(default=None, sa_column=Column(JSONB))
    ip_address: str | None = Field(default=None, sa_column=Column(INET))
    user_agent: str | None = text_col()
    session_id: str | None = text_col()
    request_id: str | None = text_col()
    success: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    error_message: str | None = text_col()
    created_at: datetime = created_at()
