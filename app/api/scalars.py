"""Scalars shared by every domain: strawberry's DateTime and JSON, and UTC normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

from strawberry.scalars import JSON

__all__ = ["JSON", "utc"]


def utc(value: datetime | None) -> datetime | None:
    """DateTime values leave Lodge in UTC with an explicit offset."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
