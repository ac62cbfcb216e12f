"""`resumable_tail` on the real Hub (memory and Redis), over a table kept in a list.

The rows are numbered 1, 2, ... like a seq; a bus message carries one row, and a row whose number
does not follow on from the tail's position shows that one before it was lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest

from app.observability import metrics
from app.pubsub import Delivery, Hub
from app.tail import Page, Poll, resumable_tail
from tests.support import need

WAIT = 10.0


@pytest.fixture(params=["memory", "redis"])
def broker(request: pytest.FixtureRequest, redis_url: str | None) -> str:
    if request.param == "redis":
        need(redis_url is not None, "TEST_REDIS_URL is not set")
        assert redis_url is not None
        return redis_url
    return "memory://"


@pytest.fixture
async def hub(broker: str) -> AsyncIterator[Hub]:
    hub = Hub(broker)
    await hub.connect()
    yield hub
    await hub.disconnect()


@dataclass
class Table:
    """PostgreSQL's part: rows read back in pages of three."""

    hub: Hub
    channel: str = field(default_factory=lambda: f"tail:{uuid.uuid4()}")
    rows: list[str] = field(default_factory=list)
    finished: bool = False
    reads: int = 0
    read_once: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *texts: str) -> int:
        """Commit rows without publishing them (as when a message is lost); the last one's number."""
        self.rows.extend(texts)
        return len(self.rows)

    async def commit(self, text: str) -> int:
        seq = self.add(text)
        await self.hub.publish(self.channel, {"seq": seq, "text": text})
        return seq

    async def read(self, after: int) -> Page[int, str]:
        page = self.rows[after : after + 3]
        self.reads += 1
        self.read_once.set()
        return Page(page, after + len(page), more=len(page) == 3, finished=self.finished)

    async def head(self) -> int:
        self.read_once.set()
        return len(self.rows)

    async def has_news(self, after: int) -> bool:
        return len(self.rows) > after


def receive(delivery: Delivery, at: int) -> list[tuple[int, str | None]] | None:
    message = delivery.payload
    if "seq" not in message:
        return None  # news the message does not carry (a status): the database says
    seq = int(message["seq"])
    if seq > at + 1:
        return None  # one before it was lost
    return [(seq, message["text"])]


async def take(tail: AsyncGenerator[str, None], n: int) -> list[str]:
    async with asyncio.timeout(WAIT):
        return [await anext(tail) for _ in range(n)]


def catch_ups(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("lodge_live_tail_catch_ups_total", {"reason": reason}) or 0.0


def numbered(first: int, last: int) -> list[str]:
    return [f"row {n}" for n in range(first, last + 1)]


async def test_catch_up_then_live_with_no_gap_and_no_duplicate(hub: Hub) -> None:
    table = Table(hub)
    table.add(*numbered(1, 7))  # after 1: two full pages, then row 8 on a short one
    offered: list[tuple[int, int]] = []

    async def read(after: int) -> Page[int, str]:
        if table.reads == 0:
            # Committed once the tail has subscribed, before it reads: it comes both ways.
            await table.commit("row 8")
        return await table.read(after)

    def receive_and_note(delivery: Delivery, at: int) -> list[tuple[int, str | None]] | None:
        offered.append((delivery.payload["seq"], at))
        return receive(delivery, at)

    resumes = catch_ups("resume")
    tail = resumable_tail(hub, table.channel, after=1, read=read, receive=receive_and_note, metered=True)
    async with aclosing(tail):
        got = await take(tail, 7)
        for text in numbered(9, 10):
            await table.commit(text)
        got += await take(tail, 2)
    assert got == numbered(2, 10)
    # Row 8 came on the bus after the read had sent it, and was dropped; 9 and 10 followed on.
    assert offered == [(8, 8), (9, 8), (10, 9)]
    assert table.reads == 3
    assert catch_ups("resume") == resumes + 1
    assert hub.subscribers(table.channel) == set()  # closing the tail left the channel


async def test_a_gap_in_the_live_stream_is_read_back_from_the_database(hub: Hub) -> None:
    table = Table(hub)
    table.add(*numbered(1, 2))  # before the tail starts: not sent
    gaps = catch_ups("gap")
    tail = resumable_tail(
        hub, table.channel, after=None, head=table.head, read=table.read, receive=receive, metered=True
    )
    async with aclosing(tail):
        first = asyncio.ensure_future(anext(tail))
        await asyncio.wait_for(table.read_once.wait(), WAIT)
        assert table.reads == 0  # from now: the head, no catch-up
        table.add("row 3")  # committed, its message lost
        await table.commit("row 4")
        got = [await asyncio.wait_for(first, WAIT), *await take(tail, 1)]
        await table.commit("row 5")
        got += await take(tail, 1)
    assert got == numbered(3, 5)
    assert table.reads == 1
    assert catch_ups("gap") == gaps + 1


async def test_a_slow_consumer_overflows_and_catches_up_from_the_database(broker: str) -> None:
    hub = Hub(broker, queue_bytes=300)
    await hub.connect()
    try:
        table = Table(hub)
        table.add("row 1")
        resyncs = catch_ups("resync")
        tail = resumable_tail(hub, table.channel, after=0, read=table.read, receive=receive, metered=True)
        async with aclosing(tail), hub.subscribe(table.channel) as witness:
            assert await take(tail, 1) == ["row 1"]  # then it reads nothing for a while
            (slow,) = hub.subscribers(table.channel) - {witness}
            for n in range(2, 52):
                await table.commit(f"row {n}")
                # Once a subscriber that keeps up has a message, the slow one has been offered it too.
                assert (await asyncio.wait_for(witness.get(), WAIT))["seq"] == n
            assert slow.overflows >= 1 and slow.high_water <= 300
            got = await take(tail, 50)
            await table.commit("row 52")
            got += await take(tail, 1)
        assert got == numbered(2, 52)
        # Told once at least: row 52 may overflow it again, behind the duplicates still queued.
        assert catch_ups("resync") >= resyncs + 1
    finally:
        await hub.disconnect()


async def test_a_lost_message_is_found_by_polling(hub: Hub) -> None:
    table = Table(hub)
    polls = catch_ups("poll")
    poll = Poll(0.05, table.has_news)
    tail = resumable_tail(hub, table.channel, after=0, read=table.read, receive=receive, poll=poll, metered=True)
    async with aclosing(tail):
        first = asyncio.ensure_future(anext(tail))
        await asyncio.wait_for(table.read_once.wait(), WAIT)
        table.add("row 1")  # its message lost, and no other comes
        assert await asyncio.wait_for(first, WAIT) == "row 1"
    assert catch_ups("poll") == polls + 1


async def test_the_tail_ends_with_the_last_page_of_a_finished_stream(hub: Hub) -> None:
    table = Table(hub)
    table.add(*numbered(1, 2))
    tail = resumable_tail(hub, table.channel, after=0, read=table.read, receive=receive)
    async with aclosing(tail):
        assert await take(tail, 2) == numbered(1, 2)
        await table.commit("row 3")
        assert await take(tail, 1) == ["row 3"]
        table.add("row 4")  # its message lost, and then the end
        table.finished = True
        await hub.publish(table.channel, {"status": "finished"})
        async with asyncio.timeout(WAIT):
            rest = [row async for row in tail]
    assert rest == ["row 4"]
    assert hub.subscribers(table.channel) == set()
