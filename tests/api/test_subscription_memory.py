"""A long subscription keeps no per-event state: memory stays flat however many events it delivers."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator

import strawberry

from app.api.sharing import SharingExecutor


@strawberry.type
class Item:
    n: int
    label: str


@strawberry.type
class Query:
    hello: str = "hi"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def items(self, count: int) -> AsyncGenerator[Item, None]:
        for n in range(count):
            yield Item(n=n, label=f"item {n}")


def live_collected_fields() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "CollectedFields")


async def test_collected_fields_do_not_pile_up_per_event() -> None:
    schema = strawberry.Schema(query=Query, subscription=Subscription, execution_context_class=SharingExecutor)
    before = live_collected_fields()
    received = 0
    stream = await schema.subscribe("subscription { items(count: 3000) { n label } }")
    async for result in stream:
        assert not result.errors
        received += 1
        if received == 2000:
            during = live_collected_fields()
    assert received == 3000
    # Without fresh memos per event, about one CollectedFields per event stays alive.
    assert during - before < 50
