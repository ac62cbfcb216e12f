"""Gateway accounting. Functions flush; the caller owns the transaction.

Every check-and-change of a quota is one conditional SQL statement: `available - reserved >=
amount` is tested by the UPDATE that takes the hold, and a reservation is spent by the DELETE that
returns it, so no interleaving of requests can oversell or spend a hold twice.

`start_flows` and `complete_flows` do the same for a whole batch of callers in one statement each
(app/gateway/coalesce.py gathers the batches): the quota row is locked once, and the batch's
outcome is exactly what its requests would have got one after another, in arrival order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, Conflict, Forbidden, LodgeError, NotFound
from app.gateway import models
from app.logs import models as logs_models
from app.observability import metrics

MAX_TTL_SECONDS = 24 * 3600
MAX_AMOUNT = 1_000_000


class QuotaExhausted(LodgeError):
    code = "QUOTA_EXHAUSTED"


def _name(value: str, field: str) -> str:
    if not value or not value.strip():
        raise BadUserInput(f"{field} must not be empty", field=field)
    return value.strip()


# -- administration --------------------------------------------------------------------------------


async def create_client(session: AsyncSession, *, name: str, email: str | None) -> models.Client:
    client = models.Client(name=_name(name, "name"), email=email)
    session.add(client)
    await session.flush()
    await session.refresh(client)
    return client


async def get_or_raise(session: AsyncSession, model: type[Any], key: Any, label: str) -> Any:
    row = await session.get(model, key)
    if row is None:
        raise NotFound(f"{label} not found", id=str(key))
    return row


async def create_service(session: AsyncSession, *, name: str, description: str | None) -> models.Service:
    service_id = await session.scalar(
        insert(models.Service)
        .values(name=_name(name, "name"), description=description)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(col(models.Service.id))
    )
    if service_id is None:
        raise Conflict("a service with this name already exists", field="name")
    service: models.Service = await get_or_raise(session, models.Service, service_id, "service")
    return service


async def add_project_service(session: AsyncSession, *, project_id: uuid.UUID, service_id: uuid.UUID) -> None:
    await get_or_raise(session, models.Service, service_id, "service")
    await session.execute(
        insert(models.ProjectService)
        .values(project_id=project_id, service_id=service_id)
        .on_conflict_do_nothing(index_elements=["project_id", "service_id"])
    )


async def create_environment(session: AsyncSession, *, project_id: uuid.UUID, name: str) -> models.Environment:
    env_id = await session.scalar(
        insert(models.Environment)
        .values(project_id=project_id, name=_name(name, "name"))
        .on_conflict_do_nothing(index_elements=["project_id", "name"])
        .returning(col(models.Environment.id))
    )
    if env_id is None:
        raise Conflict("the project already has an environment with this name", field="name")
    env: models.Environment = await get_or_raise(session, models.Environment, env_id, "environment")
    return env


_ENABLE = text(
    """
    INSERT INTO environment_services (environment_id, service_id, project_id, available_requests)
    SELECT e.id, :service_id, e.project_id, :available FROM environments e WHERE e.id = :environment_id
    ON CONFLICT (environment_id, service_id) DO UPDATE SET available_requests = EXCLUDED.available_requests
    RETURNING environment_id
    """
)


async def enable_environment_service(
    session: AsyncSession, *, environment_id: uuid.UUID, service_id: uuid.UUID, available: int
) -> models.EnvironmentService:
    if available < 0:
        raise BadUserInput("availableRequests must not be negative", field="availableRequests")
    await get_or_raise(session, models.Service, service_id, "service")
    try:
        async with session.begin_nested():
            done = await session.scalar(
                _ENABLE, {"environment_id": environment_id, "service_id": service_id, "available": available}
            )
    except IntegrityError as exc:
        if "quota" in str(exc.orig):
            raise BadUserInput("availableRequests may not drop below the requests held by running flows") from None
        # The composite foreign key: the service is not one of the environment's project.
        raise BadUserInput("the service is not part of this environment's project (addProjectService first)") from None
    if done is None:
        raise NotFound("environment not found", id=str(environment_id))
    return await get_environment_service(session, environment_id=environment_id, service_id=service_id)


async def get_environment_service(
    session: AsyncSession, *, environment_id: uuid.UUID, service_id: uuid.UUID
) -> models.EnvironmentService:
    row = await session.get(models.EnvironmentService, (environment_id, service_id), populate_existing=True)
    if row is None:
        raise NotFound("the service is not enabled in this environment")
    return row


_ADJUST = text(
    """
    UPDATE environment_services SET available_requests = available_requests + :delta
    WHERE environment_id = :environment_id AND service_id = :service_id
      AND available_requests + :delta >= reserved_requests
    RETURNING environment_id
    """
)


async def adjust_available(
    session: AsyncSession, *, environment_id: uuid.UUID, service_id: uuid.UUID, delta: int
) -> models.EnvironmentService:
    params = {"environment_id": environment_id, "service_id": service_id, "delta": delta}
    try:
        changed = await session.scalar(_ADJUST, params)
    except DBAPIError as exc:
        if "22003" in str(getattr(exc.orig, "sqlstate", "")) or "out of range" in str(exc):
            raise BadUserInput("availableRequests would leave the range of a 32-bit integer", delta=delta) from None
        raise
    if changed is None:
        await get_environment_service(session, environment_id=environment_id, service_id=service_id)
        raise BadUserInput("availableRequests may not drop below the requests held by running flows", delta=delta)
    return await get_environment_service(session, environment_id=environment_id, service_id=service_id)


# -- the gateway's own calls (ApiKey auth; the key names the environment) ------------------------


def environment_of(key: logs_models.ApiKey) -> uuid.UUID:
    if key.environment_id is None:
        raise Forbidden("this API key belongs to no environment: create one with createApiKey(environmentId)")
    return key.environment_id


async def _why_refused(conn: AsyncConnection | AsyncSession, *, environment_id: uuid.UUID, service: str) -> LodgeError:
    """After a conditional statement changed nothing: say why (the decision was already atomic)."""
    service_id = await conn.scalar(select(col(models.Service.id)).where(col(models.Service.name) == service))
    if service_id is None:
        return _refusal(service, known=False, enabled=False)
    enabled = await conn.scalar(
        select(col(models.EnvironmentService.service_id)).where(
            col(models.EnvironmentService.environment_id) == environment_id,
            col(models.EnvironmentService.service_id) == service_id,
        )
    )
    return _refusal(service, known=True, enabled=enabled is not None)


def _refusal(service: str, *, known: bool, enabled: bool) -> LodgeError:
    if not known:
        return NotFound(f"unknown service {service!r}", service=service)
    if not enabled:
        return Forbidden(f"service {service!r} is not enabled in this environment", service=service)
    return QuotaExhausted(f"not enough requests left for {service!r}", service=service)


_RECORD = text(
    """
    WITH svc AS (SELECT id FROM services WHERE name = CAST(:service AS text)),
    spent AS (
        -- A request outside a flow spends one request.
        UPDATE environment_services es SET available_requests = es.available_requests - 1
        WHERE es.environment_id = CAST(:environment_id AS uuid) AND es.service_id = (SELECT id FROM svc)
          AND es.available_requests - es.reserved_requests >= 1
        RETURNING es.service_id
    )
    INSERT INTO request_logs (api_key_id, environment_id, service_id, endpoint, status)
    SELECT CAST(:api_key_id AS uuid), CAST(:environment_id AS uuid), service_id, CAST(:endpoint AS text), 'recorded'
    FROM spent
    RETURNING *
    """
)

_RECORD_STEP = text(
    """
    WITH flow AS (
        -- A step is covered by its flow's hold: only while that hold is live, for that service, and
        -- only `amount` of them. The UPDATE counts the step; under concurrency the row lock makes
        -- each waiter re-check `steps < amount` against the count its predecessor committed.
        UPDATE reservations r SET steps = r.steps + 1
        FROM services s
        WHERE s.id = r.service_id AND r.start_point = CAST(:start_point AS text)
          AND r.environment_id = CAST(:environment_id AS uuid) AND s.name = CAST(:service AS text)
          AND r.expires_at > now() AND r.steps < r.amount
        RETURNING r.service_id
    )
    INSERT INTO request_logs (api_key_id, environment_id, service_id, endpoint, start_point, status)
    SELECT CAST(:api_key_id AS uuid), CAST(:environment_id AS uuid), service_id, CAST(:endpoint AS text),
           CAST(:start_point AS text), 'recorded'
    FROM flow
    RETURNING *
    """
)

_FLOW_SPENT = text(
    """
    SELECT 1 FROM reservations r JOIN services s ON s.id = r.service_id
    WHERE r.start_point = CAST(:start_point AS text) AND r.environment_id = CAST(:environment_id AS uuid)
      AND s.name = CAST(:service AS text) AND r.expires_at > now() AND r.steps >= r.amount
    """
)


async def record_request(
    conn: AsyncConnection | AsyncSession,
    *,
    key: logs_models.ApiKey,
    service: str,
    endpoint: str | None,
    start_point: str | None,
) -> models.RequestLog:
    """One conditional statement: a plain request spends one request; a step of a flow needs the
    flow's reservation to be live (not completed, not expired) for the same service, with steps
    left (a flow of `amount` admits `amount` steps)."""
    environment_id = environment_of(key)
    params = {
        "service": service,
        "environment_id": environment_id,
        "api_key_id": key.id,
        "endpoint": endpoint,
        "start_point": start_point,
    }
    row = (await conn.execute(_RECORD_STEP if start_point else _RECORD, params)).mappings().first()
    if row is None:
        refusal = await _why_refused(conn, environment_id=environment_id, service=service)
        if start_point and not isinstance(refusal, NotFound | Forbidden):
            if await conn.scalar(_FLOW_SPENT, params) is not None:
                refusal = QuotaExhausted("the flow has recorded every step it holds", startPoint=start_point)
            else:
                refusal = NotFound("no running flow of this service starts at this request log", startPoint=start_point)
        raise refusal
    return models.RequestLog.model_construct(**row)


_START = text(
    """
    WITH svc AS (SELECT id FROM services WHERE name = CAST(:service AS text)),
    held AS (
        UPDATE environment_services es SET reserved_requests = es.reserved_requests + CAST(:amount AS integer)
        WHERE es.environment_id = CAST(:environment_id AS uuid) AND es.service_id = (SELECT id FROM svc)
          AND es.available_requests - es.reserved_requests >= CAST(:amount AS integer)
        RETURNING es.environment_id, es.service_id
    ),
    started AS (
        INSERT INTO request_logs (api_key_id, environment_id, service_id, endpoint, status)
        SELECT CAST(:api_key_id AS uuid), environment_id, service_id, CAST(:endpoint AS text), 'flow_started'
        FROM held
        RETURNING *
    )
    , held_for AS (
        INSERT INTO reservations (environment_id, service_id, start_point, amount, expires_at)
        SELECT environment_id, service_id, id, CAST(:amount AS integer),
               now() + make_interval(secs => CAST(:ttl AS double precision))
        FROM started
        RETURNING *
    )
    SELECT held_for.*, started.api_key_id AS log_api_key_id, started.endpoint AS log_endpoint,
           started.status AS log_status, started.created_at AS log_created_at
    FROM held_for JOIN started ON started.id = held_for.start_point
    """
)


_REFUSED = text(
    """
    INSERT INTO request_logs (api_key_id, environment_id, service_id, endpoint, start_point, status, outcome, reason)
    SELECT CAST(:api_key_id AS uuid), CAST(:environment_id AS uuid), s.id, CAST(:endpoint AS text),
           -- A refused step names its flow when there is one in this environment to name.
           (SELECT l.id FROM request_logs l
            WHERE l.id = CAST(:start_point AS text) AND l.environment_id = CAST(:environment_id AS uuid)),
           'refused', 'refused', CAST(:reason AS text)
    FROM services s WHERE s.name = CAST(:service AS text)
    """
)

# The refusals a gateway's log records: what the quota, the environment or the flow decided. A
# request for a service that does not exist has no service to be logged under; input the API
# refuses before asking (a bad amount, say) was never a request.
LOGGED_REFUSALS = (QuotaExhausted, Forbidden, NotFound)


async def record_refusal(
    session: AsyncSession,
    *,
    key: logs_models.ApiKey,
    service: str,
    endpoint: str | None,
    start_point: str | None,
    reason: str,
) -> None:
    """Log a refused request. It runs after the refused operation was rolled back, in the
    transaction that records its audit row (`OperationScope.on_failure`)."""
    if key.environment_id is None:
        return
    params = {
        "api_key_id": key.id,
        "environment_id": key.environment_id,
        "service": service,
        "endpoint": endpoint,
        "start_point": start_point,
        "reason": reason,
    }
    try:
        async with session.begin_nested():
            await session.execute(_REFUSED, params)
    except IntegrityError:
        # The key or its environment was deleted meanwhile: nothing is left to log it under.
        return


def check_flow_request(*, amount: int, ttl_seconds: int) -> None:
    if not 0 < amount <= MAX_AMOUNT:
        raise BadUserInput(f"amount must be between 1 and {MAX_AMOUNT}", field="amount")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise BadUserInput(f"ttlSeconds must be between 1 and {MAX_TTL_SECONDS}", field="ttlSeconds")


async def start_flow(
    conn: AsyncConnection | AsyncSession,
    *,
    key: logs_models.ApiKey,
    service: str,
    endpoint: str | None,
    amount: int,
    ttl_seconds: int,
) -> tuple[models.Reservation, models.RequestLog]:
    """Take the hold, log the flow's first request and create the reservation in one statement."""
    environment_id = environment_of(key)
    check_flow_request(amount=amount, ttl_seconds=ttl_seconds)
    params = {
        "service": service,
        "environment_id": environment_id,
        "api_key_id": key.id,
        "endpoint": endpoint,
        "amount": amount,
        "ttl": ttl_seconds,
    }
    row = (await conn.execute(_START, params)).mappings().first()
    if row is None:
        refusal = await _why_refused(conn, environment_id=environment_id, service=service)
        if isinstance(refusal, QuotaExhausted):
            metrics.RESERVATIONS.labels("quota_exhausted").inc()
        raise refusal
    metrics.RESERVATIONS.labels("granted").inc()
    reservation = models.Reservation.model_construct(**{k: v for k, v in row.items() if not k.startswith("log_")})
    log = models.RequestLog.model_construct(
        id=row["start_point"],
        api_key_id=row["log_api_key_id"],
        environment_id=row["environment_id"],
        service_id=row["service_id"],
        endpoint=row["log_endpoint"],
        start_point=None,
        status=row["log_status"],
        created_at=row["log_created_at"],
    )
    return reservation, log


_COMPLETE = text(
    """
    WITH spent AS (
        DELETE FROM reservations
        WHERE id = CAST(:id AS text) AND environment_id = CAST(:environment_id AS uuid) AND expires_at > now()
        RETURNING environment_id, service_id, start_point, amount
    ),
    marked AS (
        UPDATE request_logs r
        SET status = CASE WHEN CAST(:success AS boolean) THEN 'flow_completed' ELSE 'flow_failed' END
        FROM spent WHERE r.id = spent.start_point
    )
    UPDATE environment_services es
    SET reserved_requests = es.reserved_requests - spent.amount,
        available_requests = es.available_requests - CASE WHEN CAST(:success AS boolean) THEN spent.amount ELSE 0 END
    FROM spent
    WHERE es.environment_id = spent.environment_id AND es.service_id = spent.service_id
    RETURNING es.*
    """
)


async def complete_flow(
    conn: AsyncConnection | AsyncSession, *, key: logs_models.ApiKey, reservation_id: str, success: bool
) -> models.EnvironmentService:
    """Spend (success) or release the hold; the DELETE that returns the reservation is the one
    and only completion: a second one finds nothing (NOT_FOUND) and changes nothing."""
    environment_id = environment_of(key)
    params = {"id": reservation_id, "environment_id": environment_id, "success": success}
    row = (await conn.execute(_COMPLETE, params)).mappings().first()
    if row is None:
        raise NotFound("no running flow holds this reservation (completed or expired)", reservationId=reservation_id)
    metrics.RESERVATIONS.labels("completed" if success else "failed").inc()
    return models.EnvironmentService.model_construct(**row)


# -- batches of concurrent callers (app/gateway/coalesce.py) ----------------------------------------


@dataclass(frozen=True)
class FlowRequest:
    """One startFlow call waiting for its batch (already validated: `check_flow_request`)."""

    api_key_id: uuid.UUID
    endpoint: str | None
    amount: int
    ttl_seconds: int


_START_BATCH = text(
    """
    WITH RECURSIVE
    req AS MATERIALIZED (
        -- Ids are drawn here, as the columns' defaults would, so that each caller finds its rows.
        SELECT r.ord, r.amount, r.ttl, r.endpoint, r.api_key_id,
               'rl_' || replace(gen_random_uuid()::text, '-', '') AS log_id,
               'rsv_' || replace(gen_random_uuid()::text, '-', '') AS rsv_id
        FROM unnest(CAST(:amounts AS integer[]), CAST(:ttls AS integer[]), CAST(:endpoints AS text[]),
                    CAST(:api_key_ids AS uuid[])) WITH ORDINALITY AS r(amount, ttl, endpoint, api_key_id, ord)
    ),
    svc AS MATERIALIZED (SELECT id FROM services WHERE name = CAST(:service AS text)),
    quota AS MATERIALIZED (
        -- The one lock of the batch (the mode the UPDATE below takes); under READ COMMITTED this
        -- reads the row as its last committed writer left it.
        SELECT es.environment_id, es.service_id, es.available_requests - es.reserved_requests AS free
        FROM environment_services es
        WHERE es.environment_id = CAST(:environment_id AS uuid) AND es.service_id = (SELECT id FROM svc)
        FOR NO KEY UPDATE
    ),
    fit (ord, room, granted) AS (
        -- In arrival order, each request that fits in what the earlier ones left is granted: the
        -- same answers as running them one after another. A refused request leaves the room to
        -- later, smaller ones.
        SELECT CAST(0 AS bigint), free, false FROM quota
        UNION ALL
        SELECT fit.ord + 1,
               CASE WHEN a.amount <= fit.room THEN fit.room - a.amount ELSE fit.room END,
               a.amount <= fit.room
        FROM fit CROSS JOIN LATERAL (SELECT (CAST(:amounts AS integer[]))[fit.ord + 1] AS amount) a
        WHERE fit.ord < cardinality(CAST(:amounts AS integer[]))
    ),
    granted AS MATERIALIZED (SELECT req.* FROM req JOIN fit ON fit.ord = req.ord WHERE fit.granted),
    held AS (
        -- The whole batch's hold in one change, still conditional: if the arithmetic above were
        -- ever wrong, nothing is granted (and the quota CHECK refuses any overdraft).
        UPDATE environment_services es SET reserved_requests = es.reserved_requests + total.amount
        FROM quota, (SELECT sum(amount) AS amount FROM granted) total
        WHERE es.environment_id = quota.environment_id AND es.service_id = quota.service_id
          AND total.amount IS NOT NULL AND es.available_requests - es.reserved_requests >= total.amount
        RETURNING es.environment_id, es.service_id
    ),
    started AS (
        INSERT INTO request_logs (id, api_key_id, environment_id, service_id, endpoint, status)
        SELECT granted.log_id, granted.api_key_id, held.environment_id, held.service_id, granted.endpoint,
               'flow_started'
        FROM granted CROSS JOIN held ORDER BY granted.ord
        RETURNING id, created_at
    ),
    held_for AS (
        INSERT INTO reservations (id, environment_id, service_id, start_point, amount, expires_at)
        SELECT granted.rsv_id, held.environment_id, held.service_id, granted.log_id, granted.amount,
               now() + make_interval(secs => granted.ttl)
        FROM granted CROSS JOIN held ORDER BY granted.ord
        RETURNING id, steps, expires_at, created_at
    )
    SELECT req.ord, req.log_id, req.rsv_id, (SELECT id FROM svc) AS service_id,
           EXISTS (SELECT 1 FROM quota) AS enabled, started.created_at AS log_created_at,
           held_for.steps, held_for.expires_at, held_for.created_at
    FROM req
    LEFT JOIN started ON started.id = req.log_id
    LEFT JOIN held_for ON held_for.id = req.rsv_id
    ORDER BY req.ord
    """
)

Started = tuple[models.Reservation, models.RequestLog]


async def start_flows(
    conn: AsyncConnection, *, environment_id: uuid.UUID, service: str, requests: Sequence[FlowRequest]
) -> list[Started | LodgeError]:
    """startFlow for a batch of callers of one service in one environment, in one statement: each
    request in arrival order is granted if it fits in what the earlier ones left (so, as if they
    had run one after another); the answers are in the order of `requests`. Refusals say why, as
    `start_flow`'s do; as there, a refused request writes nothing."""
    params = {
        "environment_id": environment_id,
        "service": service,
        "amounts": [r.amount for r in requests],
        "ttls": [r.ttl_seconds for r in requests],
        "endpoints": [r.endpoint for r in requests],
        "api_key_ids": [r.api_key_id for r in requests],
    }
    rows = (await conn.execute(_START_BATCH, params)).mappings().all()
    if len(rows) != len(requests):
        raise RuntimeError(f"a batch of {len(requests)} flows got {len(rows)} answers")
    answers: list[Started | LodgeError] = []
    granted = refused = 0
    for request, row in zip(requests, rows, strict=True):
        if row["created_at"] is None:
            refusal = _refusal(service, known=row["service_id"] is not None, enabled=row["enabled"])
            refused += isinstance(refusal, QuotaExhausted)
            answers.append(refusal)
            continue
        granted += 1
        reservation = models.Reservation.model_construct(
            id=row["rsv_id"],
            environment_id=environment_id,
            service_id=row["service_id"],
            start_point=row["log_id"],
            amount=request.amount,
            steps=row["steps"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
        )
        log = models.RequestLog.model_construct(
            id=row["log_id"],
            api_key_id=request.api_key_id,
            environment_id=environment_id,
            service_id=row["service_id"],
            endpoint=request.endpoint,
            start_point=None,
            status="flow_started",
            created_at=row["log_created_at"],
        )
        answers.append((reservation, log))
    if granted:
        metrics.RESERVATIONS.labels("granted").inc(granted)
    if refused:
        metrics.RESERVATIONS.labels("quota_exhausted").inc(refused)
    return answers


_COMPLETE_BATCH = text(
    """
    WITH req AS MATERIALIZED (
        SELECT r.id, r.success FROM unnest(CAST(:ids AS text[]), CAST(:successes AS boolean[])) AS r(id, success)
    ),
    spent AS MATERIALIZED (
        DELETE FROM reservations rsv USING req
        WHERE rsv.id = req.id AND rsv.environment_id = CAST(:environment_id AS uuid) AND rsv.expires_at > now()
        RETURNING rsv.id, rsv.service_id, rsv.start_point, rsv.amount, req.success
    ),
    marked AS (
        UPDATE request_logs l SET status = CASE WHEN spent.success THEN 'flow_completed' ELSE 'flow_failed' END
        FROM spent WHERE l.id = spent.start_point
    ),
    totals AS (
        SELECT service_id, sum(amount) AS held, coalesce(sum(amount) FILTER (WHERE success), 0) AS used
        FROM spent GROUP BY service_id
    ),
    returned AS (
        UPDATE environment_services es
        SET reserved_requests = es.reserved_requests - totals.held,
            available_requests = es.available_requests - totals.used
        FROM totals
        WHERE es.environment_id = CAST(:environment_id AS uuid) AND es.service_id = totals.service_id
        RETURNING es.*
    )
    SELECT spent.id AS reservation_id, returned.*
    FROM spent JOIN returned ON returned.service_id = spent.service_id
    """
)


async def complete_flows(
    conn: AsyncConnection, *, environment_id: uuid.UUID, completions: Sequence[tuple[str, bool]]
) -> list[models.EnvironmentService | LodgeError]:
    """completeFlow for a batch of (reservation id, success) of one environment, in one statement.
    The ids must be distinct (a second completion of the same hold belongs to a later batch, where
    it finds nothing, as it would have one after another). Each completed caller gets the quota
    row as the batch left it, which includes its own completion."""
    ids = [rid for rid, _ in completions]
    if len(set(ids)) != len(ids):
        raise ValueError("a batch completes each reservation once")
    params = {"environment_id": environment_id, "ids": ids, "successes": [ok for _, ok in completions]}
    rows = {row["reservation_id"]: row for row in (await conn.execute(_COMPLETE_BATCH, params)).mappings().all()}
    answers: list[models.EnvironmentService | LodgeError] = []
    counts = {True: 0, False: 0}
    for rid, success in completions:
        row = rows.get(rid)
        if row is None:
            answers.append(NotFound("no running flow holds this reservation (completed or expired)", reservationId=rid))
            continue
        counts[success] += 1
        answers.append(
            models.EnvironmentService.model_construct(**{k: v for k, v in row.items() if k != "reservation_id"})
        )
    if counts[True]:
        metrics.RESERVATIONS.labels("completed").inc(counts[True])
    if counts[False]:
        metrics.RESERVATIONS.labels("failed").inc(counts[False])
    return answers


# Release the reservations the `expired` CTE selects (and locks): delete them, mark their flows
# expired, and give their amounts back to their quotas; the result is how many were released.
_RELEASE = """
    released AS (
        DELETE FROM reservations r USING expired WHERE r.id = expired.id
        RETURNING r.environment_id, r.service_id, r.start_point, r.amount
    ),
    marked AS (
        UPDATE request_logs l SET status = 'flow_expired' FROM released WHERE l.id = released.start_point
    ),
    totals AS (
        SELECT environment_id, service_id, sum(amount) AS amount, count(*) AS n FROM released GROUP BY 1, 2
    ),
    returned AS (
        UPDATE environment_services es SET reserved_requests = es.reserved_requests - totals.amount
        FROM totals WHERE es.environment_id = totals.environment_id AND es.service_id = totals.service_id
        RETURNING totals.n
    )
    SELECT coalesce(sum(n), 0) FROM returned
"""

_SWEEP = text(
    """
    WITH expired AS (
        SELECT id FROM reservations WHERE expires_at <= now()
        ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED
    ),"""
    + _RELEASE
)

_SWEEP_QUOTAS = text(
    """
    WITH expired AS (
        -- Those of the quota rows named (a removal's), however many: not a batch of everyone's.
        SELECT r.id FROM reservations r
        JOIN unnest(CAST(:environments AS uuid[]), CAST(:services AS uuid[])) AS q(environment_id, service_id)
          ON q.environment_id = r.environment_id AND q.service_id = r.service_id
        WHERE r.expires_at <= now()
        FOR UPDATE OF r SKIP LOCKED
    ),"""
    + _RELEASE
)


async def release_expired(conn: AsyncConnection | AsyncSession, *, batch: int = 500) -> int:
    """Release one batch of expired holds. SKIP LOCKED lets several instances sweep at once: each
    expired reservation is taken by exactly one of them (or by a completeFlow that got there first)."""
    released = int(await conn.scalar(_SWEEP, {"batch": batch}) or 0)
    if released:
        metrics.RESERVATIONS.labels("expired").inc(released)
    return released


async def release_all_expired(conn: AsyncConnection, *, batch: int = 500) -> int:
    """Batches until none is full: a backlog never outlives one sweep."""
    total = 0
    while (released := await release_expired(conn, batch=batch)) > 0:
        total += released
        if released < batch:
            break
    return total


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLogSpec:
    environment_ids: Sequence[uuid.UUID] | None  # None: every environment
    service_id: uuid.UUID | None = None
    start_point: str | None = None
    since: datetime | None = None
    outcome: str | None = None  # models.ACCEPTED or models.REFUSED; None: both


async def list_request_logs(
    session: AsyncSession,
    *,
    spec: RequestLogSpec,
    after: tuple[datetime, str] | None,
    limit: int,
    count: bool = True,
) -> tuple[Sequence[models.RequestLog], int]:
    t = models.RequestLog
    where: list[Any] = []
    if spec.environment_ids is not None:
        where.append(col(t.environment_id).in_(spec.environment_ids))
    if spec.service_id is not None:
        where.append(col(t.service_id) == spec.service_id)
    if spec.start_point is not None:
        # A flow: its first request and every step, in order.
        where.append((col(t.start_point) == spec.start_point) | (col(t.id) == spec.start_point))
    if spec.since is not None:
        where.append(col(t.created_at) >= spec.since)
    if spec.outcome is not None:
        where.append(col(t.outcome) == spec.outcome)
    query = select(t).where(*where)
    if after is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars().all()
    if not count:
        return rows, 0
    total = await session.scalar(select(func.count()).select_from(t).where(*where))
    return rows, int(total or 0)


# -- administration: reads --------------------------------------------------------------------------


async def list_services(
    session: AsyncSession, *, after: tuple[datetime, uuid.UUID] | None, limit: int, count: bool
) -> tuple[list[models.Service], int]:
    t = models.Service
    query = select(t)
    if after is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars().all()
    total = await session.scalar(select(func.count()).select_from(t)) if count else 0
    return list(rows), int(total or 0)


async def list_environments(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[list[models.Environment], int]:
    t = models.Environment
    mine = col(t.project_id) == project_id
    query = select(t).where(mine)
    if after is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars().all()
    total = await session.scalar(select(func.count()).select_from(t).where(mine)) if count else 0
    return list(rows), int(total or 0)


async def list_environment_services(
    session: AsyncSession,
    *,
    environment_ids: Sequence[uuid.UUID] | None,
    service_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[list[models.EnvironmentService], int]:
    """Quotas in creation order, then (environment, service): the order `Environment.services` lists."""
    t = models.EnvironmentService
    where = _in_view(t, environment_ids, service_id)
    query = select(t).where(*where)
    if after is not None:
        key = func.row(col(t.created_at), col(t.environment_id), col(t.service_id))
        query = query.where(key > func.row(*after))
    order = (col(t.created_at), col(t.environment_id), col(t.service_id))
    rows = (await session.execute(query.order_by(*order).limit(limit + 1))).scalars().all()
    total = await session.scalar(select(func.count()).select_from(t).where(*where)) if count else 0
    return list(rows), int(total or 0)


def _in_view(
    t: type[models.EnvironmentService] | type[models.Reservation],
    environment_ids: Sequence[uuid.UUID] | None,
    service_id: uuid.UUID | None,
) -> list[Any]:
    """The conditions of a quota or hold list: these environments (None: all), this service."""
    where: list[Any] = []
    if environment_ids is not None:
        where.append(col(t.environment_id).in_(environment_ids))
    if service_id is not None:
        where.append(col(t.service_id) == service_id)
    return where


async def list_reservations(
    session: AsyncSession,
    *,
    environment_ids: Sequence[uuid.UUID] | None,
    service_id: uuid.UUID | None,
    after: tuple[datetime, str] | None,
    limit: int,
    count: bool,
) -> tuple[list[models.Reservation], int]:
    """Live holds (not expired), oldest first. An expired hold the sweeper has not released yet is
    not live: it can no longer be completed or stepped."""
    t = models.Reservation
    where = [col(t.expires_at) > func.now(), *_in_view(t, environment_ids, service_id)]
    query = select(t).where(*where)
    if after is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars().all()
    total = await session.scalar(select(func.count()).select_from(t).where(*where)) if count else 0
    return list(rows), int(total or 0)


# -- administration: changes ------------------------------------------------------------------------
#
# Removing a quota row (disabling a service in an environment, detaching a service from a
# project, deleting an environment or a service) refuses while a flow holds requests on it. The
# test is `reserved_requests = 0` on the quota row itself, in the DELETE: a startFlow that took a
# hold first has the row locked, and the DELETE re-reads it after that commit; one that comes
# after finds the row gone. Expired holds are released first (they hold nothing any more).


async def update_client(session: AsyncSession, *, client: models.Client, changes: dict[str, Any]) -> models.Client:
    if "name" in changes:
        changes["name"] = _name(changes["name"] or "", "name")
    for field_name, value in changes.items():
        setattr(client, field_name, value)
    await session.flush()
    return client


async def delete_client(session: AsyncSession, *, client_id: uuid.UUID) -> bool:
    """Its projects stay, with no client (projects.client_id is ON DELETE SET NULL)."""
    t = models.Client
    return await session.scalar(delete(t).where(col(t.id) == client_id).returning(col(t.id))) is not None


async def update_service(session: AsyncSession, *, service: models.Service, changes: dict[str, Any]) -> models.Service:
    if "name" in changes:
        changes["name"] = _name(changes["name"] or "", "name")
    for field_name, value in changes.items():
        setattr(service, field_name, value)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict("a service with this name already exists", field="name") from None
    return service


_HELD = "the service holds requests for running flows here: complete them or let them expire first"


async def _drop_quotas(session: AsyncSession, *where: Any) -> None:
    """Delete the quota rows `where` selects, or none (CONFLICT) if a flow holds requests on one."""
    t = models.EnvironmentService
    quotas = (await session.execute(select(col(t.environment_id), col(t.service_id)).where(*where))).all()
    if quotas:
        params = {"environments": [q[0] for q in quotas], "services": [q[1] for q in quotas]}
        if released := int(await session.scalar(_SWEEP_QUOTAS, params) or 0):
            metrics.RESERVATIONS.labels("expired").inc(released)
    await session.execute(delete(t).where(*where, col(t.reserved_requests) == 0))
    if await session.scalar(select(col(t.environment_id)).where(*where).limit(1)) is not None:
        raise Conflict(_HELD)


async def _lock(session: AsyncSession, model: type[Any], *where: Any, label: str, key: Any) -> None:
    """Lock the parent row: no quota row can be added under it (its foreign key waits) until we end."""
    found = await session.scalar(select(model).where(*where).with_for_update())
    if found is None:
        raise NotFound(f"{label} not found", id=str(key))


async def disable_environment_service(
    session: AsyncSession, *, environment_id: uuid.UUID, service_id: uuid.UUID
) -> None:
    t = models.EnvironmentService
    mine = (col(t.environment_id) == environment_id, col(t.service_id) == service_id)
    if await session.scalar(select(col(t.environment_id)).where(*mine)) is None:
        raise NotFound("the service is not enabled in this environment")
    await _drop_quotas(session, *mine)


async def remove_project_service(session: AsyncSession, *, project_id: uuid.UUID, service_id: uuid.UUID) -> None:
    """Detach the service: its quotas in the project's environments go with it (request logs stay)."""
    t = models.ProjectService
    mine = (col(t.project_id) == project_id, col(t.service_id) == service_id)
    await _lock(session, t, *mine, label="the project's service", key=service_id)
    es = models.EnvironmentService
    await _drop_quotas(session, col(es.project_id) == project_id, col(es.service_id) == service_id)
    await session.execute(delete(t).where(*mine))


async def delete_environment(session: AsyncSession, *, environment_id: uuid.UUID) -> list[uuid.UUID]:
    """Its API keys and quotas go with it; so do its request logs (their foreign keys cascade).
    Returns the ids of the keys that went."""
    t = models.Environment
    await _lock(session, t, col(t.id) == environment_id, label="environment", key=environment_id)
    await _drop_quotas(session, col(models.EnvironmentService.environment_id) == environment_id)
    keys = logs_models.ApiKey
    gone = await session.scalars(select(col(keys.id)).where(col(keys.environment_id) == environment_id))
    key_ids = list(gone.all())
    await session.execute(delete(t).where(col(t.id) == environment_id))
    return key_ids


async def delete_service(session: AsyncSession, *, service_id: uuid.UUID) -> None:
    """Its quotas and project links go with it; so do its request logs."""
    t = models.Service
    await _lock(session, t, col(t.id) == service_id, label="service", key=service_id)
    await _drop_quotas(session, col(models.EnvironmentService.service_id) == service_id)
    await session.execute(delete(t).where(col(t.id) == service_id))
