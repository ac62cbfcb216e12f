"""One resumable live tail: read PostgreSQL after a position, then follow the bus, in order, once.

PostgreSQL is the source of truth and the bus only a shortcut (`app.pubsub`), so every tail that
can resume from a client's cursor has the same three phases:

* catch-up: pages of rows after the position, read from the database (`read`);
* live: the rows a bus message carries (`receive`), each sent only if it is past the position
  (a duplicate of what the catch-up read is dropped);
* resync: whenever the live stream cannot promise that nothing was missed (the hub says RESYNC, a
  message does not follow on from the position, polling finds news the bus did not bring), the
  tail reads the database again from the last position it reached.

The bus subscription is confirmed before the first read, so a row committed meanwhile is either in
that read or still to come on the bus. A position only moves forward; a row the subscriber does
not want (a filter) moves it without being sent. The product says what a position is (a seq, a
number) and how a message maps to rows; the tail knows nothing of GraphQL or SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from app.observability import metrics
from app.pubsub import Delivery, Hub

_CAUGHT_UP = metrics.DELIVERIES.labels("caught_up")
# Polling while the broker is down: messages cannot come, so PostgreSQL is asked more often.
DISCONNECTED_POLL_SECONDS = 1.0


class Position(Protocol):
    def __le__(self, other: Any, /) -> bool: ...


P = TypeVar("P", bound=Position)
T = TypeVar("T")

# A row as the tail sees it: its position, and what to send for it (None: one the subscriber
# does not want, which still moves the position).
Row = tuple[P, T | None]


@dataclass(frozen=True)
class Page(Generic[P, T]):
    """One read of the database after a position."""

    items: Sequence[T]  # what to send of the rows read, in order
    position: P  # where the next read starts: past the last row read, or further (a head read with the page)
    more: bool = False  # a full page: read on from `position` at once
    finished: bool = False  # nothing can follow this page's rows (a finished run): the tail ends


@dataclass(frozen=True)
class Poll(Generic[P]):
    """Ask PostgreSQL after `seconds` without a message: a bus message can be lost without a trace
    (a crash between commit and publish, a broker outage)."""

    seconds: float
    has_news: Callable[[P], Awaitable[bool]]


async def resumable_tail(
    hub: Hub,
    channel: str,
    *,
    after: P | None,
    read: Callable[[P], Awaitable[Page[P, T]]],
    receive: Callable[[Delivery, P], Sequence[Row[P, T]] | None],
    head: Callable[[], Awaitable[P]] | None = None,
    check: Callable[[], Awaitable[None]] | None = None,
    poll: Poll[P] | None = None,
    metered: bool = False,
) -> AsyncGenerator[T, None]:
    """What to send, in order and without duplicates: the rows after `after` from the database,
    then the live ones of `channel`.

    `after`: the client's position; None starts from `head()` (the newest row, read once the bus
    subscription is confirmed) with no catch-up. `read(position)`: one page of rows after it.
    `receive(delivery, position)`: the rows of a bus message, or None when it does not follow on
    from `position` (the tail then reads the database). `check()`: before each catch-up (an
    access check, so that a subscriber who lost access is stopped when the database is read).
    `metered`: count the catch-ups by reason (`lodge_live_tail_catch_ups_total`) and the rows they
    send (`lodge_fanout_deliveries_total{path="caught_up"}`).

    Close it (`contextlib.aclosing`) to leave the channel at once.
    """
    if after is None and head is None:
        raise TypeError("resumable_tail needs `after` or `head`")
    async with hub.subscribe(channel, starts_later=after is None) as live:
        reason: str | None
        if after is None:
            assert head is not None
            # From now: the bus subscription is confirmed, so nothing later is lost.
            position = await head()
            live.start()
            reason = None
        else:
            position, reason = after, "resume"
        while True:
            if reason is not None:
                if metered:
                    metrics.CATCH_UPS.labels(reason).inc()
                if check is not None:
                    await check()
                while True:  # page by page, so a long history never holds one big read
                    page = await read(position)
                    for found in page.items:
                        if metered:
                            _CAUGHT_UP.inc()
                        yield found
                    position = page.position
                    if not page.more:
                        break
                    await asyncio.sleep(0)
                if page.finished:
                    return
                reason = None
            try:
                # asyncio.timeout, not wait_for: no extra task per message and subscriber.
                async with asyncio.timeout(_poll_seconds(hub, poll)):
                    delivery = await live.receive()
            except TimeoutError:
                assert poll is not None
                if await poll.has_news(position):
                    reason = "poll"
                continue
            if not isinstance(delivery, Delivery):
                reason = "resync"  # RESYNC: the hub may have dropped messages, the database has them
                continue
            rows = receive(delivery, position)
            if rows is None:
                reason = "gap"
                continue
            for at, item in rows:
                if at <= position:
                    continue  # already sent (or passed over)
                position = at
                if item is not None:
                    yield item


def _poll_seconds(hub: Hub, poll: Poll[Any] | None) -> float | None:
    if poll is None:
        return None
    return poll.seconds if hub.connected else min(poll.seconds, DISCONNECTED_POLL_SECONDS)
