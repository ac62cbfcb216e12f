"""Executions and their logs. Functions flush; the caller owns the transaction.

The status machine is enforced by one conditional UPDATE (`WHERE status = ANY(<allowed from>)`),
so of any number of concurrent attempts at one transition exactly one wins. A log is appended
only while its execution is unfinished, under a share lock of the execution's row, so no log can
slip in after the run has ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
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
    workflow = await get_workflow_or_raise(session, workflow_id=workflow_id)
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
    execution = await session.get(models.Execution, execution_id)
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
    execution = (
        await session.scalars(
            select(models.Execution)
            .where(col(models.Execution.id) == execution_id)
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
    ).first()
    if execution is None:
        raise NotFound("execution not found", id=str(execution_id))
    if execution.status in FINISHED:
        raise Conflict(
            f"the execution is {execution.status.upper()}: it takes no more logs",
            currentStatus=execution.status.upper(),
        )
    log = models.ExecutionLog(
        execution_id=execution_id,
        node_key=bounded_text(node_key, "nodeKey", limit=100),
        log_level=level,
        message=required_text(message, "message", limit=MAX_MESSAGE),
        data=json_value(data, "data"),
    )
    session.add(log)
    await session.flush()
    await session.refresh(log)
    return log


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
