"""Executions and their logs. Functions flush; the caller owns the transaction.

The status machine is enforced by one conditional UPDATE (`WHERE status = ANY(<allowed from>)`),
so of any number of concurrent attempts at one transition exactly one wins. A log is appended by
an UPDATE of its execution's row that also checks the run is unfinished, so no log can slip in
after the run has ended, and the logs of one run are numbered 1, 2, 3 in commit order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, Conflict, NotFound
from app.api.validation import bounded_text, json_value, required_text
from app.workflows import models
from app.workflows.service.workflows import get_workflow_or_raise, latest_version

# Target status -> the statuses it may be reached from.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "running": ("pending",),
    "completed": ("running",),
    "failed": ("running",),
    "cancelled": ("pending", "running"),
}
FINISHED = frozenset({"completed", "failed", "cancelled"})
MAX_MESSAGE = 10_000


async def start_execution(
    session: AsyncSession, *, workflow_id: uuid.UUID, user_id: uuid.UUID, input_data: Any
) -> models.Execution:
    """A PENDING execution pinned to the latest published version."""
    # A share lock until commit: a soft delete or an archive cannot slip in before this run exists.
    workflow = await get_workflow_or_raise(session, workflow_id=workflow_id, lock=True)
    if workflow.status == "archived":
        raise BadUserInput("an archived workflow cannot be started", workflowId=str(workflow_id))
    version = await latest_version(session, workflow_id=workflow_id)
    if version is None:
        raise BadUserInput("this workflow has never been published: publish it first", workflowId=str(workflow_id))
    execution = models.Execution(
        workflow_id=workflow_id,
        user_id=user_id,
        workflow_version=version,
        input_data=json_value(input_data, "input"),
    )
    session.add(execution)
    await session.flush()
    await session.refresh(execution)
    return execution


async def get_execution_or_raise(session: AsyncSession, *, execution_id: uuid.UUID) -> models.Execution:
    execution = await session.get(models.Execution, execution_id, populate_existing=True)
    if execution is None:
        raise NotFound("execution not found", id=str(execution_id))
    return execution


async def transition(
    session: AsyncSession, *, execution_id: uuid.UUID, status: str, output: Any, error_message: str | None
) -> models.Execution:
    allowed_from = TRANSITIONS.get(status)
    if allowed_from is None:
        raise BadUserInput(f"no execution can move to {status.upper()}", field="status")
    table = models.Execution.__table__  # type: ignore[attr-defined]
    now = func.clock_timestamp()
    values: dict[str, Any] = {"status": status}
    if status == "running":
        values["started_at"] = now
    if status in FINISHED:
        values["completed_at"] = now
        values["lease_expires_at"] = None
    if output is not None:
        values["output_data"] = json_value(output, "output")
    if error_message is not None:
        values["error_message"] = bounded_text(error_message, "errorMessage", limit=MAX_MESSAGE)
    changed = await session.scalar(
        table.update()
        .where(table.c.id == execution_id, table.c.status.in_(allowed_from))
        .values(**values)
        .returning(table.c.id)
    )
    if changed is None:
        current = await get_execution_or_raise(session, execution_id=execution_id)
        raise Conflict(
            f"an execution that is {current.status.upper()} cannot move to {status.upper()}",
            currentStatus=current.status.upper(),
        )
    execution = await session.get(models.Execution, execution_id, populate_existing=True)
    assert execution is not None
    return execution


async def append_log(
    session: AsyncSession,
    *,
    execution_id: uuid.UUID,
    node_key: str | None,
    level: str,
    message: str,
    data: Any,
) -> models.ExecutionLog:
    checked = {
        "node_key": bounded_text(node_key, "nodeKey", limit=100),
        "message": required_text(message, "message", limit=MAX_MESSAGE),
        "data": json_value(data, "data"),
    }
    # One statement checks the status, takes the row's lock and numbers the log: appends to one
    # execution take turns (so numbers follow commit order), and none follows the end of the run.
    table = models.Execution.__table__  # type: ignore[attr-defined]
    number = await session.scalar(
        table.update()
        .where(table.c.id == execution_id, table.c.status.in_(("pending", "running")))
        .values(log_count=table.c.log_count + 1)
        .returning(table.c.log_count)
    )
    if number is None:
        execution = await get_execution_or_raise(session, execution_id=execution_id)
        raise Conflict(
            f"the execution is {execution.status.upper()}: it takes no more logs",
            currentStatus=execution.status.upper(),
        )
    log = models.ExecutionLog(
        execution_id=execution_id,
        number=number,
        log_level=level,
        **checked,
    )
    session.add(log)
    await session.flush()
    await session.refresh(log)
    return log


async def log_number_at(session: AsyncSession, *, execution_id: uuid.UUID, seq: int) -> int:
    """The number of the execution's last log at or before `seq` (0: none)."""
    log = models.ExecutionLog
    found = await session.scalar(
        select(func.max(col(log.number))).where(col(log.execution_id) == execution_id, col(log.seq) <= seq)
    )
    return int(found or 0)


async def list_logs(
    session: AsyncSession, *, execution_id: uuid.UUID, level: str | None, after: int | None, limit: int, count: bool
) -> tuple[Sequence[models.ExecutionLog], int]:
    log = models.ExecutionLog
    query = select(log).where(col(log.execution_id) == execution_id)
    if level is not None:
        query = query.where(col(log.log_level) == level)
    counted = query
    if after is not None:
        query = query.where(col(log.seq) > after)
    rows = (await session.scalars(query.order_by(col(log.seq)).limit(limit + 1))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(counted.subquery())) or 0
    return rows, total


# -- the runner protocol ---------------------------------------------------------------------------
#
# A runner claims a PENDING execution with a lease, renews it with heartbeats, and reports through
# updateExecutionStatus / appendExecutionLog naming itself. An execution whose lease runs out goes
# back to PENDING for another runner (the sweeper), or to FAILED once it has had MAX_ATTEMPTS.

MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 3600
MAX_RUNNER = 200

_CLAIM = text(
    """
    UPDATE executions e
    SET status = 'running', runner = CAST(:runner AS text), attempts = e.attempts + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => CAST(:lease AS double precision)),
        started_at = coalesce(e.started_at, clock_timestamp())
    WHERE e.id = (
        -- The oldest PENDING one nobody else is taking: SKIP LOCKED hands each to one claimer,
        -- and a row a concurrent claim has just taken is re-read (no longer PENDING) and passed.
        SELECT p.id FROM executions p
        WHERE p.status = 'pending'
          -- A deleted workflow's runs wait (restoreWorkflow brings them back): none is handed out.
          AND EXISTS (SELECT 1 FROM workflows w WHERE w.id = p.workflow_id AND w.deleted_at IS NULL)
          AND (CAST(:workflow_id AS uuid) IS NULL OR p.workflow_id = CAST(:workflow_id AS uuid))
          AND (CAST(:visible_to AS uuid) IS NULL OR p.workflow_id IN (
                SELECT w.id FROM workflows w WHERE w.user_id = CAST(:visible_to AS uuid)))
        ORDER BY p.created_at, p.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING e.id
    """
)

_HEARTBEAT = text(
    """
    UPDATE executions
    SET lease_expires_at = clock_timestamp() + make_interval(secs => CAST(:lease AS double precision))
    WHERE id = CAST(:id AS uuid) AND status = 'running' AND runner = CAST(:runner AS text)
    RETURNING id
    """
)

_SWEEP_LEASES = text(
    """
    WITH expired AS (
        SELECT id FROM executions
        WHERE status = 'running' AND lease_expires_at < clock_timestamp()
        ORDER BY lease_expires_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE executions e
    SET status = CASE WHEN e.attempts >= :max_attempts THEN 'failed' ELSE 'pending' END,
        completed_at = CASE WHEN e.attempts >= :max_attempts THEN clock_timestamp() END,
        error_message = CASE WHEN e.attempts >= :max_attempts
                             THEN 'the lease of its last runner ran out ' || e.attempts || ' times'
                             ELSE e.error_message END,
        runner = NULL, lease_expires_at = NULL
    FROM expired WHERE e.id = expired.id
    RETURNING e.*
    """
)


def check_runner(runner: str, lease_seconds: int) -> str:
    name = required_text(runner, "runner", limit=MAX_RUNNER)
    if not MIN_LEASE_SECONDS <= lease_seconds <= MAX_LEASE_SECONDS:
        raise BadUserInput(
            f"leaseSeconds must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS}", field="leaseSeconds"
        )
    return name


async def claim(
    session: AsyncSession,
    *,
    runner: str,
    lease_seconds: int,
    workflow_id: uuid.UUID | None,
    visible_to: uuid.UUID | None,
) -> models.Execution | None:
    """Take the oldest PENDING execution (of `workflow_id`; of workflows `visible_to` owns) for
    `runner`, or None when there is none to take."""
    params = {
        "runner": check_runner(runner, lease_seconds),
        "lease": lease_seconds,
        "workflow_id": workflow_id,
        "visible_to": visible_to,
    }
    claimed = await session.scalar(_CLAIM, params)
    if claimed is None:
        return None
    return await get_execution_or_raise(session, execution_id=claimed)


async def heartbeat(
    session: AsyncSession, *, execution_id: uuid.UUID, runner: str, lease_seconds: int
) -> models.Execution:
    """Renew the lease; CONFLICT once the execution is no longer this runner's (finished, or its
    lease ran out and it went back to PENDING or to another runner): the runner must stop."""
    params = {"id": execution_id, "runner": check_runner(runner, lease_seconds), "lease": lease_seconds}
    if await session.scalar(_HEARTBEAT, params) is None:
        raise _not_held(await get_execution_or_raise(session, execution_id=execution_id), runner)
    return await get_execution_or_raise(session, execution_id=execution_id)


def _not_held(execution: models.Execution, runner: str) -> Conflict:
    return Conflict(
        f"the execution is not held by runner {runner!r} (it is {execution.status.upper()})",
        currentStatus=execution.status.upper(),
    )


async def require_holder(session: AsyncSession, *, execution_id: uuid.UUID, runner: str) -> None:
    """A report naming its runner counts only while that runner holds the execution. The row is
    locked until the report commits, so a sweep cannot hand it to another runner in between."""
    runner = required_text(runner, "runner", limit=MAX_RUNNER)
    table = models.Execution.__table__  # type: ignore[attr-defined]
    held = await session.scalar(
        select(table.c.id)
        .where(table.c.id == execution_id, table.c.status == "running", table.c.runner == runner)
        .with_for_update()
    )
    if held is None:
        raise _not_held(await get_execution_or_raise(session, execution_id=execution_id), runner)


async def sweep_leases(session: AsyncSession, *, max_attempts: int, batch: int = 500) -> list[models.Execution]:
    """Hand back the executions whose lease ran out (SKIP LOCKED: several instances may sweep):
    to PENDING, or to FAILED after `max_attempts` claims. Returns them as they are now."""
    rows = (await session.execute(_SWEEP_LEASES, {"batch": batch, "max_attempts": max_attempts})).mappings()
    return [models.Execution.model_construct(**row) for row in rows.all()]
