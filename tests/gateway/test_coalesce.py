"""Batched startFlow and completeFlow (app/gateway/coalesce.py): exactly what one-at-a-time would
give, a failure kept to its batch, a caller that goes away never stopping a batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.errors import LodgeError, NotFound
from app.gateway import coalesce
from app.gateway import service as gateway
from app.observability import metrics
from tests.gateway.test_api import COMPLETE, START, Gateway, new_gateway, quota, reservations
from tests.support import LiveServer


async def request_logs(server: LiveServer, g: Gateway) -> Counter[str]:
    async with server.deps.db.session() as session:
        rows = await session.execute(
            text("SELECT status, count(*) FROM request_logs WHERE environment_id = :e GROUP BY status"),
            {"e": g.environment_id},
        )
        return Counter({status: int(n) for status, n in rows.all()})


async def audited(server: LiveServer, action: str) -> Counter[bool]:
    """Audit rows of `action` so far, by success."""
    async with server.deps.db.session() as session:
        rows = await session.execute(
            text("SELECT success, count(*) FROM audit_logs WHERE action = :a GROUP BY success"), {"a": action}
        )
        return Counter({success: count for success, count in rows.all()})


def reservations_counted(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("lodge_reservations_total", {"outcome": outcome}) or 0.0


def code_of(result: dict[str, Any]) -> str:
    return "ok" if not result.get("errors") else str(result["errors"][0]["extensions"]["code"])


async def test_1000_concurrent_flow_starts_on_300_grant_exactly_300(server: LiveServer) -> None:
    g = await new_gateway(server, available=300)
    audited_before = await audited(server, "flow.start")
    results = await asyncio.gather(*(server.gql(START, {"s": g.service}, api_key=g.key) for _ in range(1000)))
    assert Counter(code_of(r) for r in results) == {"ok": 300, "QUOTA_EXHAUSTED": 700}
    refused = next(r for r in results if r.get("errors"))
    assert refused["data"] is None and g.service in refused["errors"][0]["message"]
    # What PostgreSQL holds is what the 300 answers say: one hold, one log and one reservation each.
    assert await quota(server, g) == {"availableRequests": 300, "reservedRequests": 300}
    assert await reservations(server, g) == 300
    # ... and each of the 700 refusals is in the log, refused, written after its operation's rollback.
    assert await request_logs(server, g) == {"flow_started": 300, "refused": 700}
    held = {r["data"]["startFlow"]["reservation"]["id"] for r in results if not r.get("errors")}
    logs = {r["data"]["startFlow"]["requestLog"]["id"] for r in results if not r.get("errors")}
    assert len(held) == len(logs) == 300
    # Each call wrote its audit row (outside a transaction, after its batch committed), granted or not.
    assert await audited(server, "flow.start") - audited_before == {True: 300, False: 700}
    async with server.deps.db.session() as session:
        pairs = await session.execute(
            text("SELECT id, start_point, amount FROM reservations WHERE environment_id = :e"),
            {"e": g.environment_id},
        )
        assert {(rid, start, amount) for rid, start, amount in pairs.all()} <= {
            (r["data"]["startFlow"]["reservation"]["id"], r["data"]["startFlow"]["requestLog"]["id"], 1)
            for r in results
            if not r.get("errors")
        }

    # Half succeed, half fail, all at once: the counters end at the initial count minus successes.
    ordered = sorted(held)
    done = await asyncio.gather(
        *(server.gql(COMPLETE, {"r": rid, "ok": n % 2 == 0}, api_key=g.key) for n, rid in enumerate(ordered))
    )
    assert Counter(code_of(r) for r in done) == {"ok": 300}
    assert await quota(server, g) == {"availableRequests": 150, "reservedRequests": 0}
    assert await reservations(server, g) == 0
    assert await request_logs(server, g) == {"flow_completed": 150, "flow_failed": 150, "refused": 700}


async def test_1000_callers_at_once_are_a_few_statements(server: LiveServer) -> None:
    """The coalescer driven directly (no HTTP, which lets only a few requests in at a time)."""
    g = await new_gateway(server, available=300)
    lanes = coalesce.Coalescer(max_batch=500)
    granted, exhausted = reservations_counted("granted"), reservations_counted("quota_exhausted")

    async def start() -> str:
        try:
            await coalesce.start_flow(
                server.deps.db,
                secret=g.key,
                service=g.service,
                endpoint="/v1/pay",
                amount=1,
                ttl_seconds=60,
                lanes=lanes,
            )
        except LodgeError as exc:
            return exc.code
        return "ok"

    results = await asyncio.gather(*(start() for _ in range(1000)))
    assert Counter(results) == {"ok": 300, "QUOTA_EXHAUSTED": 700}
    assert lanes.stats.items == 1000 and lanes.stats.batches <= 4, lanes.stats
    assert reservations_counted("granted") - granted == 300
    assert reservations_counted("quota_exhausted") - exhausted == 700
    assert await quota(server, g) == {"availableRequests": 300, "reservedRequests": 300}
    assert await reservations(server, g) == 300
    assert await request_logs(server, g) == {"flow_started": 300}


async def test_a_batch_grants_in_arrival_order_what_fits(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    lanes = coalesce.Coalescer()

    async def start(amount: int) -> int | str:
        try:
            reservation, log = await coalesce.start_flow(
                server.deps.db,
                secret=g.key,
                service=g.service,
                endpoint=None,
                amount=amount,
                ttl_seconds=60,
                lanes=lanes,
            )
        except LodgeError as exc:
            return exc.code
        assert reservation.start_point == log.id and log.status == "flow_started"
        return reservation.amount

    # One batch (all queue before its drainer runs): 4 fits (6 left), 8 does not, 3 and 3 do, then
    # nothing is left for 1: as if they had run one after another.
    results = await asyncio.gather(*(start(amount) for amount in (4, 8, 3, 3, 1)))
    assert results == [4, "QUOTA_EXHAUSTED", 3, 3, "QUOTA_EXHAUSTED"]
    assert lanes.stats.batches == 1
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 10}


async def test_batched_refusals_say_why(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    other = f"{g.service}-other"
    await server.data("mutation($n: String!) { createService(input: {name: $n}) { id } }", {"n": other}, token=g.admin)
    for service, code in (("no-such-service", "NOT_FOUND"), (other, "FORBIDDEN"), (g.service, "QUOTA_EXHAUSTED")):
        with pytest.raises(LodgeError) as refused:
            await coalesce.start_flow(
                server.deps.db,
                secret=g.key,
                service=service,
                endpoint=None,
                amount=11,
                ttl_seconds=60,
                lanes=server.deps.lanes,
            )
        assert refused.value.code == code, service
    with pytest.raises(NotFound):
        await coalesce.complete_flow(
            server.deps.db, secret=g.key, reservation_id="rsv_nothing", success=True, lanes=server.deps.lanes
        )
    # The key is checked first, once per batch, as require_api_key would.
    seen: list[str] = []
    with pytest.raises(LodgeError) as refused:
        await coalesce.start_flow(
            server.deps.db,
            secret="lodge_unknown",
            service=g.service,
            endpoint=None,
            amount=0,
            ttl_seconds=60,
            lanes=server.deps.lanes,
        )
    assert refused.value.code == "UNAUTHENTICATED"
    with pytest.raises(LodgeError) as refused:
        await coalesce.start_flow(
            server.deps.db,
            secret=g.key,
            service=g.service,
            endpoint=None,
            amount=0,
            ttl_seconds=60,
            authenticated=lambda key: seen.append(str(key.environment_id)),
            lanes=server.deps.lanes,
        )
    assert refused.value.code == "BAD_USER_INPUT" and seen == [g.environment_id]


async def test_a_hold_is_completed_once_even_within_a_batch(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    reservation, _ = await coalesce.start_flow(
        server.deps.db,
        secret=g.key,
        service=g.service,
        endpoint=None,
        amount=3,
        ttl_seconds=60,
        lanes=server.deps.lanes,
    )
    lanes = coalesce.Coalescer()
    results = await asyncio.gather(
        *(
            coalesce.complete_flow(
                server.deps.db, secret=g.key, reservation_id=reservation.id, success=n == 0, lanes=lanes
            )
            for n in range(5)
        ),
        return_exceptions=True,
    )
    # The first in arrival order spends it; each later one runs in a later batch and finds nothing.
    assert not isinstance(results[0], BaseException) and results[0].available_requests == 7
    assert all(isinstance(r, NotFound) for r in results[1:])
    assert lanes.stats.batches == 5
    assert await quota(server, g) == {"availableRequests": 7, "reservedRequests": 0}


async def test_an_operation_of_several_fields_stays_all_or_nothing(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    both = (
        "mutation($s: String!) { a: startFlow(service: $s) { reservation { id } }"
        ' b: startFlow(service: "no-such-service") { reservation { id } } }'
    )
    body = await server.gql(both, {"s": g.service}, api_key=g.key)
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 0}
    assert await reservations(server, g) == 0


async def test_a_failed_batch_statement_is_that_batch_callers_retryable_error(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = await new_gateway(server, available=10)

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(gateway, "start_flows", unreachable)
        body = await server.gql(START, {"s": g.service}, api_key=g.key)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL" and error["extensions"]["retryable"] is True
    assert error["extensions"]["reason"] == "database_unavailable"
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 0}
    # The lane recovers: the next caller gets a batch and a connection of its own.
    assert "errors" not in await server.gql(START, {"s": g.service}, api_key=g.key)
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 1}


# -- the coalescer itself, on stand-in work: batching, failures and cancellation -------------------


@contextlib.asynccontextmanager
async def no_connection() -> AsyncIterator[AsyncConnection]:
    yield cast(AsyncConnection, None)


class Gate:
    """A batch runner whose batches wait to be let through, recording what each was given."""

    def __init__(self, fail_batches: Sequence[int] = ()) -> None:
        self.batches: list[list[int]] = []
        self.fail_batches = set(fail_batches)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def run(self, conn: AsyncConnection, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        number = len(self.batches)
        self.entered.set()
        await self.go.wait()
        if number in self.fail_batches:
            raise RuntimeError(f"batch {number} failed")
        return [item * 10 if item >= 0 else ValueError(item) for item in items]


async def test_a_failure_stays_in_its_batch() -> None:
    lanes = coalesce.Coalescer()
    gate = Gate(fail_batches=[1])
    first = asyncio.ensure_future(lanes.submit("k", 1, gate.run, connect=no_connection))
    await gate.entered.wait()
    # Queued while batch 1 runs: they are batch 2, and batch 1's failure is not theirs.
    later = [asyncio.ensure_future(lanes.submit("k", n, gate.run, connect=no_connection)) for n in (2, -3, 4)]
    gate.go.set()
    with pytest.raises(coalesce.BatchFailed) as failed:
        await first
    assert isinstance(failed.value.__cause__, RuntimeError)
    results = await asyncio.gather(*later, return_exceptions=True)
    assert results[0] == 20 and isinstance(results[1], ValueError) and results[2] == 40
    assert gate.batches == [[1], [2, -3, 4]]
    assert lanes.stats.failed_batches == 1
    assert not lanes._lanes  # an idle lane holds nothing


async def test_a_caller_that_goes_away_stops_no_batch() -> None:
    lanes = coalesce.Coalescer()
    gate = Gate()
    running = asyncio.ensure_future(lanes.submit("k", 1, gate.run, connect=no_connection))
    await gate.entered.wait()
    in_queue = [asyncio.Event(), asyncio.Event()]

    async def queue(n: int, ready: asyncio.Event) -> int:
        ready.set()  # submit queues the item before it first yields
        return await lanes.submit("k", n, gate.run, connect=no_connection)

    queued = [asyncio.ensure_future(queue(n, ready)) for n, ready in zip((2, 3), in_queue, strict=True)]
    for ready in in_queue:
        await ready.wait()
    running.cancel()  # while its batch runs
    queued[0].cancel()  # before its batch starts
    gate.go.set()
    assert await queued[1] == 30
    assert running.cancelled() and queued[0].cancelled()
    # The running batch went on with its caller gone; the caller cancelled in the queue was left out.
    assert gate.batches == [[1], [3]]


async def test_items_with_one_identity_never_share_a_batch() -> None:
    lanes = coalesce.Coalescer()
    gate = Gate()
    gate.go.set()
    results = await asyncio.gather(
        *(lanes.submit("k", n, gate.run, connect=no_connection, identity=lambda i: i % 2) for n in (1, 2, 3, 4, 5))
    )
    assert results == [10, 20, 30, 40, 50]
    assert gate.batches == [[1, 2], [3, 4], [5]]


async def test_batches_are_capped() -> None:
    lanes = coalesce.Coalescer(max_batch=3)
    gate = Gate()
    gate.go.set()
    results = await asyncio.gather(*(lanes.submit("k", n, gate.run, connect=no_connection) for n in range(7)))
    assert results == [n * 10 for n in range(7)]
    assert gate.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_one_callers_nul_fails_that_caller_alone(server: LiveServer) -> None:
    """Text PostgreSQL cannot hold, sent inline (variables are checked before any work), is refused
    for its caller before it joins a batch: it would fail the batch's statement, and every caller in it."""
    g = await new_gateway(server, available=400)
    bad = 'mutation($s: String!) { startFlow(service: $s, endpoint: "/bad\\u0000") { reservation { id } } }'
    results = await asyncio.gather(
        *(server.gql(bad if n % 50 == 0 else START, {"s": g.service}, api_key=g.key) for n in range(400))
    )
    codes = Counter(code_of(r) for r in results)
    assert codes == {"ok": 392, "BAD_USER_INPUT": 8}, codes


async def test_a_flow_with_a_nested_selection_keeps_its_transaction(server: LiveServer) -> None:
    """A startFlow selecting deeper than its own result is not batched: a nested field that fails
    undoes the hold with the rest of the operation, as it always did."""
    g = await new_gateway(server, available=10)
    deep = (
        "mutation($s: String!) { startFlow(service: $s) { "
        "reservation { id environment { project { logs(first: 100000) { nodes { id } } } } } } }"
    )
    answer = await server.gql(deep, {"s": g.service}, api_key=g.key)
    assert answer["errors"] and answer["data"] is None
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 0}
    assert await reservations(server, g) == 0
