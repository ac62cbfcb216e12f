"""Batch functions for the nested pages of workflows (executions, versions) and executions (logs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.loaders import PageKey, batched_counts, batched_pages
from app.workflows import models

E = models.Execution
L = models.ExecutionLog
V = models.WorkflowVersion


def _executions_base(key: PageKey) -> Select[Any]:
    status, only_user = key.extra
    query = select(E)
    if status is not None:
        query = query.where(col(E.status) == status)
    if only_user is not None:
        query = query.where(col(E.user_id) == only_user)
    return query


def _executions(key: PageKey) -> Select[Any]:
    query = _executions_base(key)
    if key.after is not None:
        query = query.where(tuple_(col(E.created_at), col(E.id)) < tuple_(*key.after))
    return query.order_by(col(E.created_at).desc(), col(E.id).desc())


async def executions(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    return await batched_pages(session, keys, model=E, inner=_executions, parent_columns=[col(E.workflow_id)])


async def execution_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(session, keys, base=_executions_base, parent_columns=[col(E.workflow_id)])


def _logs_base(key: PageKey) -> Select[Any]:
    query = select(L)
    if key.extra is not None:
        query = query.where(col(L.log_level) == key.extra)
    return query


def _logs(key: PageKey) -> Select[Any]:
    query = _logs_base(key)
    if key.after is not None:
        query = query.where(col(L.seq) > key.after[0])
    return query.order_by(col(L.seq))


async def execution_logs(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    return await batched_pages(session, keys, model=L, inner=_logs, parent_columns=[col(L.execution_id)])


async def execution_log_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(session, keys, base=_logs_base, parent_columns=[col(L.execution_id)])


def _versions(key: PageKey) -> Select[Any]:
    query = select(V)
    if key.after is not None:
        query = query.where(col(V.version) < key.after[0])
    return query.order_by(col(V.version).desc())


async def versions(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    """The newest `size` versions of each workflow (older than `after`), newest first."""
    return await batched_pages(session, keys, model=V, inner=_versions, parent_columns=[col(V.workflow_id)])
