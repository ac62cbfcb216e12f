"""Column factories shared by every domain's SQLModel tables.

Each call builds a new Column (SQLAlchemy columns belong to one table). Types are spelled out
so that the models and the migrations compare equal.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field


def uuid_pk() -> Any:
    return Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    )


def uuid_fk(target: str, *, ondelete: str | None, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index),
    )


def text_col(*, nullable: bool = True, **kwargs: Any) -> Any:
    return Field(default=None, sa_column=Column(Text, nullable=nullable, **kwargs))


def timestamp(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


def created_at() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )


def updated_at() -> Any:
    """Kept by the `set_updated_at` trigger, never by Python."""
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )


__all__ = ["created_at", "datetime", "text_col", "timestamp", "updated_at", "uuid", "uuid_fk", "uuid_pk"]
