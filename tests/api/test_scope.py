"""Work shared by sibling resolvers within one operation (`OperationScope.once`) survives a cancelled caller."""

from __future__ import annotations

import asyncio

import pytest

from app.api.context import OperationScope


def _scope() -> OperationScope:
    return OperationScope(session=None, loaders=None, request_id="test")


async def test_a_cancelled_first_caller_does_not_cancel_the_others() -> None:
    # graphql-core cancels resolvers whose sibling non-null field failed; another branch of the
    # same operation may be waiting for the viewer that the cancelled resolver started to read.
    scope, release, runs = _scope(), asyncio.Event(), []

    async def compute() -> str:
        runs.append(1)
        await release.wait()
        return "viewer"

    first = asyncio.create_task(scope.once("viewer", compute))
    await asyncio.sleep(0)  # let the first caller start the work
    second = asyncio.create_task(scope.once("viewer", compute))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await asyncio.wait_for(second, timeout=5) == "viewer"
    assert runs == [1]
    assert await scope.once("viewer", compute) == "viewer"  # kept: later callers do not recompute
    assert runs == [1]


async def test_errors_are_shared_but_not_kept() -> None:
    scope, release, runs = _scope(), asyncio.Event(), []

    async def failing() -> str:
        runs.append(1)
        await release.wait()
        raise ValueError("database unavailable")

    callers = [asyncio.create_task(scope.once("viewer", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), timeout=5)
    assert all(isinstance(r, ValueError) for r in results) and runs == [1]
    assert "viewer" not in scope.pending  # a later call may try again

    async def working() -> str:
        return "viewer"

    assert await scope.once("viewer", working) == "viewer"


async def test_settle_stops_work_whose_callers_are_all_gone() -> None:
    scope, started = _scope(), asyncio.Event()

    async def forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    caller = asyncio.create_task(scope.once("viewer", forever))
    await asyncio.wait_for(started.wait(), timeout=5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    task = scope.pending.get("viewer")
    assert task is not None and not task.done()  # still running: the session must not close yet
    await asyncio.wait_for(scope.settle(), timeout=5)
    assert task.cancelled() and "viewer" not in scope.pending
