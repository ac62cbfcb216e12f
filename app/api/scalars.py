"""Scalars shared by every domain: strawberry's DateTime and JSON, and UTC normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

from strawberry.scalars import JSON

__all__ = ["JSON", "contains_nul", "utc"]


def utc(value: datetime | None) -> datetime | None:
    """DateTime values leave Lodge in UTC with an explicit offset."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def contains_nul(value: object) -> bool:
    """True if any string in a JSON-like value holds U+0000, which PostgreSQL text and jsonb refuse."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False
