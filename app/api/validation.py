"""Input checks shared by every domain's services: bounded text, JSON objects, LIKE patterns."""

from __future__ import annotations

import json
import re
import sys
import uuid
from typing import Any

from strawberry.types.unset import UNSET

from app.api.errors import BadUserInput

MAX_NAME = 200
MAX_TEXT = 20_000
# Bounds of text more than one domain takes (declared on inputs with `max_length`, app/api/lengths.py).
MAX_KEY = 100  # short identifiers: keys, tags, roles, permissions, types
MAX_EXTERNAL_ID = 255  # another system's id (Discord, Clerk)
MAX_EMAIL = 254  # RFC 5321
MAX_PASSWORD = 1024
MAX_URL = 2048
MAX_DESCRIPTION = 10_000
MAX_SEARCH = 200
MAX_JSON_BYTES = 64 * 1024
# Every JSON value Lodge takes (arguments, log attributes, /ingest lines) nests at most this deep.
MAX_JSON_DEPTH = 32


def required_text(value: str | None, field: str, *, limit: int = MAX_NAME) -> str:
    if value is None or not value.strip():
        raise BadUserInput(f"{field} must not be empty", field=field)
    return bounded_text(value.strip(), field, limit=limit)  # type: ignore[return-value]


def bounded_text(value: str | None, field: str, *, limit: int = MAX_NAME) -> str | None:
    if value is not None and len(value) > limit:
        raise BadUserInput(f"{field} is longer than {limit} characters", field=field)
    return value


def json_object(value: Any, field: str) -> dict[str, Any]:
    """A JSON object of bounded size and depth (PostgreSQL's recursion limit is not a client error)."""
    if not isinstance(value, dict):
        raise BadUserInput(f"{field} must be a JSON object", field=field)
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadUserInput(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field=field)
    _check_size(value, field)
    return value


def _check_size(value: Any, field: str) -> None:
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        # An inline literal such as 1e400 arrives as infinity, which JSON (and PostgreSQL) cannot hold.
        raise BadUserInput(f"{field} holds a number too large to store", field=field) from None
    if len(text) > MAX_JSON_BYTES:
        raise BadUserInput(f"{field} is larger than {MAX_JSON_BYTES} bytes", field=field)
    if _LONG_DIGITS.search(text) is not None and _beyond_double(value):
        # An inline integer of 309 digits or more: jsonb keeps it, but it reads back as infinity,
        # which no response can carry (every later read of the row would fail).
        raise BadUserInput(f"{field} holds a number too large to store", field=field)


_LONG_DIGITS = re.compile(r"\d{309}")  # as long as the largest double (about 1.8e308), or longer


def _beyond_double(value: Any) -> bool:
    """True if the JSON value holds an integer larger in magnitude than the largest double."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > sys.float_info.max:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def nested_too_deep(value: Any) -> bool:
    """True when a JSON value nests deeper than MAX_JSON_DEPTH (measured without recursion)."""
    return _depth(value) > MAX_JSON_DEPTH


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def like_pattern(search: str) -> str:
    """`search` as a literal ILIKE substring pattern (its own % and _ match themselves)."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def json_value(value: Any, field: str) -> Any:
    """Any JSON value (or None), bounded like `json_object`."""
    if value is None:
        return None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadUserInput(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field=field)
    _check_size(value, field)
    return value


def given(input: Any) -> dict[str, Any]:
    """The fields an update input was given (an explicit null included), by Python name: what
    an update changes; a field left out stays as it is."""
    return {name: value for name, value in vars(input).items() if value is not UNSET}


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadUserInput(f"{field} is not a valid id", field=field) from None
