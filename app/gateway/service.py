"""Gateway accounting. Functions flush; the caller owns the transaction.

Every check-and-change of a quota is one conditional SQL statement: `available - reserved >=
amount` is tested by the UPDATE that takes the hold, and a reservation is spent by the DELETE that
returns it, so no interleaving of requests can oversell or spend a hold twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
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
        return NotFound(f"unknown service {service!r}", service=service)
    enabled = await conn.scalar(
        select(col(models.EnvironmentService.service_id)).where(
            col(models.EnvironmentService.environment_id) == environment_id,
            col(models.EnvironmentService.service_id) == service_id,
        )
    )
    if enabled is None:
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
    if not 0 < amount <= MAX_AMOUNT:
        raise BadUserInput(f"amount must be between 1 and {MAX_AMOUNT}", field="amount")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise BadUserInput(f"ttlSeconds must be between 1 and {MAX_TTL_SECONDS}", field="ttlSeconds")
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


_SWEEP = text(
    """
    WITH expired AS (
        SELECT id FROM reservations WHERE expires_at <= now()
        ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED
    ),
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
    query = select(t).where(*where)
    if after is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars().all()
    if not count:
        return rows, 0
    total = await session.scalar(select(func.count()).select_from(t).where(*where))
    return rows, int(total or 0)
