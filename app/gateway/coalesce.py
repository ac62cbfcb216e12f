"""Group commit for the gateway's hot rows: concurrent startFlow (or completeFlow) calls on one
quota row become one statement per batch instead of one transaction each.

An environment's service quota is one row (`environment_services`) that every startFlow and
completeFlow of that service must lock. One statement per call caps a row at about 1,300 changes a
second, and far less when the lock is held for a whole operation's transaction (several round
trips, each waiting for a busy event loop). So callers queue here by lane (startFlow: an API key
and a service name; completeFlow: an API key), and one drainer task per busy lane runs each batch
on a pooled autocommit connection: the key is checked once for the batch (as `require_api_key`
does, so a waiting caller needs no connection of its own), then ONE statement does the batch's
work (`service.start_flows`, `service.complete_flows`) and every caller gets its own answer. While
a batch runs, new callers queue for the next one. A lane without callers has no task and no entry;
a busy one checks a connection out per batch, so it never keeps one from the pool's other users.
Keys of one environment have lanes of their own, which meet on the row lock as single statements
did.

Guarantees:

* No oversell: a batch statement locks the quota row once and grants, in arrival order, each
  request that fits in what the earlier ones left (see `service.start_flows`); the UPDATE that
  takes the batch's hold is still conditional, and the table's CHECK refuses an overdraft. Batches
  of one lane run one after another; other lanes and other processes (workers, instances) queue
  on the row lock as single statements did.
* Failure stays in its batch: if a batch's statement fails, nothing of it is saved (one autocommit
  statement) and each of its callers gets `BatchFailed`, whose cause is the database's error, so
  the API classifies it as before (database unavailable: INTERNAL, retryable; a deadlock or a
  serialization failure: CONFLICT, retryable). A deadlock or serialization failure is first run
  again (`attempts`), as nothing was saved. The next batch gets a connection of its own: no caller
  waits for, or sees, another batch's failure.
* Cancellation: a caller that goes away before its batch starts is left out of it; one that goes
  away while its batch runs does not stop the batch (the drainer is a task of its own). A hold
  granted to a caller who is gone is never reported to anyone and is released by the sweeper when
  its TTL ends, like any flow nobody completes. If the drainer itself is cancelled (the event loop
  is closing), its callers get `BatchFailed`.
* Waiting callers hold no pooled connection (the resolvers batch only an operation that has not
  opened its transaction), so a batch always gets one: callers holding the pool while waiting for
  a batch that needs a connection would deadlock.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.errors import RETRYABLE, LodgeError, sqlstate
from app.db import Database
from app.gateway import models
from app.gateway import service as gateway
from app.logs import models as logs_models
from app.logs import service as logs_service

log = logging.getLogger("lodge.gateway")

T = TypeVar("T")
R = TypeVar("R")

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
# A batch's work: one answer per item, in order (an exception instance is that caller's error).
Run = Callable[[AsyncConnection, Sequence[T]], Awaitable[Sequence[R | BaseException]]]

MAX_BATCH = 500
# RETRYABLE (deadlock_detected, serialization_failure): the statement was undone whole, run it again.


class BatchFailed(Exception):
    """The statement of the caller's batch failed: nothing of that batch was saved. `__cause__`
    is the database's error, which the API's error policy classifies."""


@dataclass(eq=False)
class _Waiter(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


@dataclass(eq=False)
class _Lane(Generic[T, R]):
    run: Run[T, R]
    connect: Connect
    identity: Callable[[T], Hashable] | None
    pending: deque[_Waiter[T, R]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


@dataclass
class Stats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    retries: int = 0
    failed_batches: int = 0


class Coalescer:
    """Per-process lanes of callers, each drained one batch (one `run`) at a time."""

    def __init__(self, *, max_batch: int = MAX_BATCH, attempts: int = 3) -> None:
        self.max_batch = max_batch
        self.attempts = attempts
        self.stats = Stats()
        self._lanes: dict[Hashable, _Lane[Any, Any]] = {}

    async def submit(
        self,
        key: Hashable,
        item: T,
        run: Run[T, R],
        *,
        connect: Connect,
        identity: Callable[[T], Hashable] | None = None,
    ) -> R:
        """`item`'s answer from the next batch of lane `key`. Every caller of a lane must pass the
        same `run`, `connect` and `identity` (the key says what they are); items with the same
        identity never share a batch (the later one waits for the next)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(run=run, connect=connect, identity=identity)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.pending.append(_Waiter(item, future))
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane), name="lodge-gateway-batches")
        # Cancelling the caller cancels only this future: the batch goes on, `_take` and
        # `_answer` skip a future that is already done.
        return await future

    def _take(self, lane: _Lane[Any, Any]) -> list[_Waiter[Any, Any]]:
        batch: list[_Waiter[Any, Any]] = []
        seen: set[Hashable] = set()
        later: list[_Waiter[Any, Any]] = []
        while lane.pending and len(batch) < self.max_batch:
            waiter = lane.pending.popleft()
            if waiter.future.done():
                continue  # its caller went away before the batch: nothing is done for it
            if lane.identity is not None:
                ident = lane.identity(waiter.item)
                if ident in seen:
                    later.append(waiter)
                    continue
                seen.add(ident)
            batch.append(waiter)
        lane.pending.extendleft(reversed(later))
        return batch

    async def _drain(self, key: Hashable, lane: _Lane[Any, Any]) -> None:
        """Run batches while callers are queued. Each batch checks a connection out of the pool
        and returns it: a busy lane never keeps one from the pool's other users (the operations'
        own transactions, other lanes), and a connection that failed is not used again."""
        batch: list[_Waiter[Any, Any]] = []
        try:
            while True:
                batch = self._take(lane)
                if not batch:
                    # Leave before any await: a caller arriving from now on starts a new drainer.
                    lane.task = None
                    if self._lanes.get(key) is lane:
                        del self._lanes[key]
                    break
                try:
                    async with lane.connect() as conn:
                        _answer(batch, await self._run(lane, conn, batch))
                except Exception as exc:
                    self.stats.failed_batches += 1
                    log.warning("a gateway batch of %d failed: %r", len(batch), exc)
                    _fail(batch, exc)  # those already answered keep their answer
                batch = []
        except BaseException as exc:
            # Cancelled (the loop is closing) or broken: nobody may be left waiting.
            _fail(batch + list(lane.pending), exc)
            lane.pending.clear()
            if lane.task is asyncio.current_task():
                lane.task = None
                if self._lanes.get(key) is lane:
                    del self._lanes[key]
            raise

    async def _run(self, lane: _Lane[Any, Any], conn: AsyncConnection, batch: list[_Waiter[Any, Any]]) -> Sequence[Any]:
        items = [waiter.item for waiter in batch]
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        attempt = 1
        while True:
            try:
                answers = await lane.run(conn, items)
                break
            except Exception as exc:
                if attempt >= self.attempts or sqlstate(exc) not in RETRYABLE:
                    raise
            # Autocommit: the failed statement was undone whole and the connection is usable.
            attempt += 1
            self.stats.retries += 1
            await conn.rollback()
        if len(answers) != len(batch):
            raise RuntimeError(f"a batch of {len(batch)} got {len(answers)} answers")
        return answers


def _answer(batch: list[_Waiter[Any, Any]], answers: Sequence[Any]) -> None:
    for waiter, answer in zip(batch, answers, strict=True):
        if waiter.future.done():
            continue  # its caller went away while the batch ran
        if isinstance(answer, BaseException):
            waiter.future.set_exception(answer)
        else:
            waiter.future.set_result(answer)


def _fail(batch: list[_Waiter[Any, Any]], exc: BaseException) -> None:
    for waiter in batch:
        if not waiter.future.done():
            error = BatchFailed("the batch this request was part of failed; nothing of it was saved")
            error.__cause__ = exc
            waiter.future.set_exception(error)


# -- the gateway's lanes -----------------------------------------------------------------------------

Authenticated = Callable[[logs_models.ApiKey], None]


@dataclass(frozen=True)
class _Answer(Generic[R]):
    key: logs_models.ApiKey | None  # None: the key was refused
    result: R | LodgeError


def _again(error: LodgeError) -> LodgeError:
    """A caller's own copy of an error the whole batch may share (each caller raises its own)."""
    return copy.copy(error)


async def _authenticate(conn: AsyncConnection, secret: str) -> tuple[logs_models.ApiKey, uuid.UUID]:
    key = await logs_service.authenticate_api_key(conn, secret=secret)
    return key, gateway.environment_of(key)


def _settle(answer: _Answer[R], authenticated: Authenticated | None) -> R:
    if answer.key is not None and authenticated is not None:
        authenticated(answer.key)
    if isinstance(answer.result, LodgeError):
        raise _again(answer.result)
    return answer.result


@dataclass(frozen=True)
class _Start:
    endpoint: str | None
    amount: int
    ttl_seconds: int


async def start_flow(
    db: Database,
    *,
    secret: str,
    service: str,
    endpoint: str | None,
    amount: int,
    ttl_seconds: int,
    authenticated: Authenticated | None = None,
    lanes: Coalescer,
) -> gateway.Started:
    """`service.start_flow` for the API key `secret`, batched with the concurrent calls of that key
    for the same service; committed when it returns. The key is checked once per batch, on the
    batch's connection, so a waiting caller needs no connection of its own; `authenticated` is
    called with it (before any refusal is raised). Refusals are those of `require_api_key` then
    `service.start_flow`, in that order."""

    async def run(conn: AsyncConnection, calls: Sequence[_Start]) -> list[_Answer[gateway.Started]]:
        try:
            key, environment_id = await _authenticate(conn, secret)
        except LodgeError as refusal:
            return [_Answer(None, refusal) for _ in calls]
        answers: list[_Answer[gateway.Started] | None] = [None] * len(calls)
        valid: list[int] = []
        for n, call in enumerate(calls):
            try:
                gateway.check_flow_request(amount=call.amount, ttl_seconds=call.ttl_seconds)
                valid.append(n)
            except LodgeError as refusal:
                answers[n] = _Answer(key, refusal)
        if valid:
            requests = [
                gateway.FlowRequest(
                    api_key_id=key.id,
                    endpoint=calls[n].endpoint,
                    amount=calls[n].amount,
                    ttl_seconds=calls[n].ttl_seconds,
                )
                for n in valid
            ]
            results = await gateway.start_flows(conn, environment_id=environment_id, service=service, requests=requests)
            for n, result in zip(valid, results, strict=True):
                answers[n] = _Answer(key, result)
        return [answer for answer in answers if answer is not None]

    lane = (db.engine, "start", logs_service.hash_secret(secret), service)
    answer: _Answer[gateway.Started] = await lanes.submit(
        lane, _Start(endpoint, amount, ttl_seconds), run, connect=db.autocommit
    )
    return _settle(answer, authenticated)


async def complete_flow(
    db: Database,
    *,
    secret: str,
    reservation_id: str,
    success: bool,
    authenticated: Authenticated | None = None,
    lanes: Coalescer,
) -> models.EnvironmentService:
    """`service.complete_flow` for the API key `secret`, batched with the concurrent completions
    of that key; committed when it returns (the key is checked as in `start_flow`). Two
    completions of one hold never share a batch: the second finds nothing (NOT_FOUND), as it would
    have one after the other."""

    async def run(
        conn: AsyncConnection, completions: Sequence[tuple[str, bool]]
    ) -> list[_Answer[models.EnvironmentService]]:
        try:
            key, environment_id = await _authenticate(conn, secret)
        except LodgeError as refusal:
            return [_Answer(None, refusal) for _ in completions]
        results = await gateway.complete_flows(conn, environment_id=environment_id, completions=completions)
        return [_Answer(key, result) for result in results]

    def identity(completion: tuple[str, bool]) -> Hashable:
        return completion[0]

    lane = (db.engine, "complete", logs_service.hash_secret(secret))
    answer: _Answer[models.EnvironmentService] = await lanes.submit(
        lane, (reservation_id, success), run, connect=db.autocommit, identity=identity
    )
    return _settle(answer, authenticated)
