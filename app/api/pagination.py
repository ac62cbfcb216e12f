"""Relay-style connections over keyset cursors (never OFFSET)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry

from app.api.errors import BadUserInput
from app.api.loaders import PageKey
from app.api.scalars import parse_datetime

DEFAULT_PAGE = 50
MAX_PAGE = 500

T = TypeVar("T")
R = TypeVar("R")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(name="Edge")
class Edge(Generic[T]):
    node: T
    # The cursor is encoded only if asked for: most clients read `nodes`.
    source: strawberry.Private[Any]
    cursor_of: strawberry.Private[Callable[[Any], str]]

    @strawberry.field
    def cursor(self) -> str:
        return self.cursor_of(self.source)


@strawberry.type(name="Connection")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    total_count: int

    @strawberry.field
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def page_size(first: int | None, last: int | None = None) -> int:
    if first is not None and last is not None:
        raise BadUserInput("pass `first` or `last`, not both")
    value = first if first is not None else last
    if value is None:
        return DEFAULT_PAGE
    if value < 0 or value > MAX_PAGE:
        raise BadUserInput(
            f"page size must be between 0 and {MAX_PAGE}", argument="first" if first is not None else "last"
        )
    return value


def encode_cursor(kind: str, value: int | str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadUserInput("malformed cursor", cursor=cursor) from None
    prefix, sep, value = raw.partition(":")
    if prefix != kind or not sep:
        raise BadUserInput("malformed cursor", cursor=cursor)
    return value


def decode_int_cursor(kind: str, cursor: str | None) -> int | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None
    if not 0 <= number < 2**63:
        raise BadUserInput("malformed cursor", cursor=cursor)
    return number


def build_connection(
    rows: Sequence[R],
    *,
    size: int,
    cursor_of: Callable[[R], str],
    to_node: Callable[[R], T],
    total_count: int,
    backwards: bool = False,
    has_more_before: bool = False,
    has_more_after: bool = False,
) -> Connection[T]:
    """`rows` holds up to size + 1 rows in query order; the extra row only says there is more."""
    has_more = len(rows) > size
    page = list(rows[:size])
    if backwards:
        page.reverse()
    edges = [Edge(node=to_node(row), source=row, cursor_of=cursor_of) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_more_after if backwards else has_more,
            has_previous_page=has_more if backwards else has_more_before,
            start_cursor=cursor_of(page[0]) if page else None,
            end_cursor=cursor_of(page[-1]) if page else None,
        ),
        total_count=total_count,
    )


def wants_total(info: Any) -> bool:
    """Whether the client selected `totalCount`: counting a large table is skipped otherwise.

    Reads the document's nodes: `info.selected_fields` converts the whole subtree, which costs more
    than the page itself when a connection is nested under a hundred parents."""
    from graphql import FieldNode

    for node in info._raw_info.field_nodes:
        for child in node.selection_set.selections if node.selection_set else ():
            if not isinstance(child, FieldNode) or child.name.value == "totalCount":
                return True  # a fragment may select it: count
    return False


def time_cursor(kind: str, created_at: datetime, key: object) -> str:
    """A keyset cursor over (created_at, id): stable under concurrent inserts."""
    return encode_cursor(kind, f"{created_at.isoformat()}|{key}")


def decode_time_cursor(kind: str, cursor: str | None) -> tuple[datetime, str] | None:
    position = decode_cursor(kind, cursor)
    if position is None:
        return None
    stamp, _, key = position.partition("|")
    try:
        return parse_datetime(stamp), key
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None


def decode_time_uuid_cursor(kind: str, cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    position = decode_time_cursor(kind, cursor)
    if position is None:
        return None
    try:
        return position[0], uuid.UUID(position[1])
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None


def int_position(kind: str, cursor: str | None) -> tuple[int] | None:
    """An integer cursor (a seq, a number) as a keyset position."""
    found = decode_int_cursor(kind, cursor)
    return None if found is None else (found,)


# What a list's query function answers: up to `limit + 1` rows after `position` (None: from the
# start) and, when asked (`count`), how many there are in all.
Fetch = Callable[[Any, int, bool], Awaitable[tuple[Sequence[R], int]]]


async def paginate(
    info: Any,
    *,
    first: int | None,
    after: str | None,
    kind: str,
    fetch: Fetch[R],
    to_node: Callable[[R], T],
    position: Callable[[str, str | None], Any] = decode_time_uuid_cursor,
    cursor_of: Callable[[R], str] | None = None,
) -> Connection[T]:
    """A forward page of a keyset list, the one way every list does it: the page size from `first`,
    the position from the `after` cursor (of `kind`; `position` decodes it, (time, uuid) unless
    given), the rows and the total from `fetch` (counted only if `totalCount` was selected), the
    cursors from `cursor_of` (the row's (created_at, id) unless given)."""
    return await paginate_both_ways(
        info,
        first=first,
        after=after,
        last=None,
        before=None,
        kind=kind,
        fetch=lambda after_position, _before, limit, _backwards, count: fetch(after_position, limit, count),
        to_node=to_node,
        position=position,
        cursor_of=cursor_of,
    )


# What a two-way list's query function answers: up to `limit + 1` rows after `after` and before
# `before` (positions; None: no bound), from the end when `backwards`, with the total if asked.
TwoWayFetch = Callable[[Any, Any, int, bool, bool], Awaitable[tuple[Sequence[R], int]]]


async def paginate_both_ways(
    info: Any,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    kind: str,
    fetch: TwoWayFetch[R],
    to_node: Callable[[R], T],
    position: Callable[[str, str | None], Any] = decode_time_uuid_cursor,
    cursor_of: Callable[[R], str] | None = None,
) -> Connection[T]:
    """`paginate` for a list that also reads from its end (`last`, `before`: a log tail, a chat's
    newest messages); the page keeps the list's order either way."""
    size = page_size(first, last)
    backwards = last is not None
    rows, total = await fetch(position(kind, after), position(kind, before), size, backwards, wants_total(info))
    return build_connection(
        rows,
        size=size,
        cursor_of=cursor_of or (lambda row: time_cursor(kind, row.created_at, row.id)),  # type: ignore[attr-defined]
        to_node=to_node,
        total_count=total,
        backwards=backwards,
        has_more_before=after is not None,
        has_more_after=before is not None,
    )


async def paginate_nested(
    info: Any,
    *,
    parent: Any,
    first: int | None,
    after: str | None,
    kind: str,
    pages: Callable[[Any, Sequence[PageKey]], Awaitable[list[list[R]]]],
    counts: Callable[[Any, Sequence[PageKey]], Awaitable[list[int]]],
    to_node: Callable[[R], T],
    extra: Hashable = None,
    variant: Hashable = None,
    position: Callable[[str, str | None], tuple[Any, ...] | None] = decode_time_uuid_cursor,
    cursor_of: Callable[[R], str] | None = None,
) -> Connection[T]:
    """A forward page of a connection nested under many parents (a guild's members under each of
    fifty guilds): `paginate`, with the rows and totals read through the request's loaders, so
    the siblings' pages are one statement (`pages`) and their totals another (`counts`, only if
    `totalCount` was selected). `extra`: the list's filters; `variant`: tells apart the loaders
    of one pair of fetch functions (`Loaders.batch`)."""
    size = page_size(first)
    key = PageKey(parent, size + 1, position(kind, after), extra)
    loaders = info.context.loaders
    rows = await loaders.batch(pages, variant=variant).load(key)
    total = await loaders.batch(counts, variant=variant).load(key) if wants_total(info) else 0
    return build_connection(
        rows,
        size=size,
        cursor_of=cursor_of or (lambda row: time_cursor(kind, row.created_at, row.id)),
        to_node=to_node,
        total_count=total,
        has_more_before=after is not None,
    )
