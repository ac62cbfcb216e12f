"""Scalars shared by every domain: DateTime (always UTC inside Lodge) and JSON (of bounded depth)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

import strawberry
from graphql import ListValueNode, ObjectValueNode, ValueNode, value_from_ast_untyped
from strawberry.scalars import JSON

from app.api.validation import MAX_JSON_DEPTH, nested_too_deep

__all__ = ["JSON", "DateTime", "JSONScalar", "contains_nul", "parse_datetime", "utc"]


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


def parse_json(value: Any) -> Any:
    """A JSON value from the variables, refused while variables are coerced when it nests deeper
    than anything Lodge stores, so that nothing walks it recursively afterwards."""
    if nested_too_deep(value):
        raise ValueError(f"JSON may nest at most {MAX_JSON_DEPTH} levels")
    return value


def parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    """An inline JSON literal, measured before it is converted (which recurses)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            raise ValueError(f"JSON may nest at most {MAX_JSON_DEPTH} levels")
        if isinstance(item, ListValueNode):
            stack.extend((child, level + 1) for child in item.values)
        elif isinstance(item, ObjectValueNode):
            stack.extend((child.value, level + 1) for child in item.fields)
    return parse_json(value_from_ast_untyped(node, variables))  # variables inside it count too


# strawberry's JSON with the depth bound; same name, description and URL, so the schema is unchanged.
_ECMA_404 = "https://ecma-international.org/wp-content/uploads/ECMA-404_2nd_edition_december_2017.pdf"
JSONScalar = strawberry.scalar(
    name="JSON",
    description=f"The `JSON` scalar type represents JSON values as specified by [ECMA-404]({_ECMA_404}).",
    specified_by_url=_ECMA_404,
    serialize=lambda value: value,
    parse_value=parse_json,
    parse_literal=parse_json_literal,
)


@overload
def utc(value: datetime) -> datetime: ...


@overload
def utc(value: None) -> None: ...


@overload
def utc(value: datetime | None) -> datetime | None: ...


def utc(value: datetime | None) -> datetime | None:
    """DateTime values leave Lodge in UTC with an explicit offset (a datetime stays a datetime)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def contains_nul(value: object) -> bool:
    """True if any string in a JSON-like value holds U+0000, which PostgreSQL text and jsonb refuse.

    A loop, not recursion: it runs on raw request JSON, before anything bounds its depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
