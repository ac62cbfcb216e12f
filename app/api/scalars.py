"""Scalars shared by every domain: DateTime (always UTC inside Lodge) and strawberry's JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

__all__ = ["JSON", "DateTime", "contains_nul", "parse_datetime", "utc"]


def parse_datetime(value: Any) -> datetime:
    """An ISO 8601 input, normalised to UTC (no offset means UTC).

    Done while variables are coerced, so an unparseable value or one that leaves the calendar once
    moved to UTC (`0001-01-01T00:00:00+05:00`) is the client's error before any resolver runs."""
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"not a DateTime Lodge can store: {value!r} (ISO 8601, years 1 to 9999 in UTC)") from None


def _serialize_datetime(value: datetime) -> str:
    return value.isoformat()


# Same name and description as strawberry's DateTime, so the schema is unchanged.
DateTime = strawberry.scalar(
    name="DateTime",
    description="Date with time (isoformat)",
    serialize=_serialize_datetime,
    parse_value=parse_datetime,
)


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
