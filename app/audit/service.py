"""Reading the audit trail. Rows are only ever written by `app.audit.recorder`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.audit import models


@dataclass(frozen=True)
class AuditFilterSpec:
    user_id: uuid.UUID | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    success: bool | None = None

    def clauses(self) -> list[Any]:
        t = models.AuditLog
        out: list[Any] = []
        if self.user_id is not None:
            out.append(col(t.user_id) == self.user_id)
        if self.action is not None:
            out.append(col(t.action) == self.action)
        if self.resource_type is not None:
            out.append(col(t.resource_type) == self.resource_type)
        if self.resource_id is not None:
            out.append(col(t.resource_id) == self.resource_id)
        if self.since is not None:
            out.append(col(t.created_at) >= self.since)
        if self.until is not None:
            out.append(col(t.created_at) < self.until)
        if self.success is not None:
            out.append(col(t.success) == self.success)
        return out


def list_query(spec: AuditFilterSpec, *, before: tuple[datetime, uuid.UUID] | None, limit: int) -> Select[Any]:
    """Newest first, keyset on (created_at, id)."""
    t = models.AuditLog
    query = select(t).where(*spec.clauses())
    if before is not None:
        query = query.where(func.row(col(t.created_at), col(t.id)) < func.row(*before))
    return query.order_by(col(t.created_at).desc(), col(t.id).desc()).limit(limit + 1)


async def list_audit_logs(
    session: AsyncSession,
    *,
    spec: AuditFilterSpec,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool = True,
) -> tuple[Sequence[models.AuditLog], int]:
    rows = (await session.execute(list_query(spec, before=before, limit=limit))).scalars().all()
    if not count:
        return rows, 0
    total = await session.scalar(select(func.count()).select_from(models.AuditLog).where(*spec.clauses()))
    return rows, int(total or 0)


@dataclass(frozen=True)
class Stat:
    action: str
    count: int
    success_rate: float


async def audit_stats(session: AsyncSession, *, since: datetime | None, until: datetime | None) -> list[Stat]:
    """Counted and averaged in PostgreSQL, grouped by action."""
    t = models.AuditLog
    spec = AuditFilterSpec(since=since, until=until)
    query = (
        select(col(t.action), func.count(), func.avg(case((col(t.success), 1.0), else_=0.0)))
        .where(*spec.clauses())
        .group_by(col(t.action))
        .order_by(func.count().desc(), col(t.action))
    )
    rows = (await session.execute(query)).all()
    return [Stat(action=action, count=int(count), success_rate=float(rate)) for action, count, rate in rows]
