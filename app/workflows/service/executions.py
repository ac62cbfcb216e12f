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
