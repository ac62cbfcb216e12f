"""Batch function for vendors' location histories (newest first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.loaders import PageKey, batched_counts, batched_pages
from app.vendors import models

L = models.Location


def _base(key: PageKey) -> Select[Any]:
    query = select(L)
    if key.extra is not None:
        query = query.where(col(L.timestamp) >= key.extra)  # since
    return query


def _page(key: PageKey) -> Select[Any]:
    query = _base(key)
    if key.after is not None:
        query = query.where(tuple_(col(L.timestamp), col(L.id)) < tuple_(*key.after))
    return query.order_by(col(L.timestamp).desc(), col(L.id).desc())


async def locations(session: AsyncSession, keys: Sequence[PageKey]) -> list[list[Any]]:
    # Plain rows, not ORM objects: histories are read, never changed, and are long.
    return await batched_pages(session, keys, model=L, inner=_page, parent_columns=[col(L.vendor_id)], raw=True)


async def location_counts(session: AsyncSession, keys: Sequence[PageKey]) -> list[int]:
    return await batched_counts(session, keys, base=_base, parent_columns=[col(L.vendor_id)])
