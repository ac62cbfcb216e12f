"""Ids of external services (Algolia, Cloudinary, Clerk) mapped to Lodge's. Functions flush."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.validation import json_value, required_text
from app.vendors import models


async def upsert_integration(
    session: AsyncSession, *, service: str, external_id: str, internal_id: str, metadata: Any
) -> models.Integration:
    """One `INSERT ... ON CONFLICT (service, external_id) DO UPDATE`: concurrent calls make one row."""
    values = {
        "service": required_text(service, "service", limit=100),
        "external_id": required_text(external_id, "externalId", limit=500),
        "internal_id": required_text(internal_id, "internalId", limit=500),
        "metadata": json_value(metadata, "metadata"),
    }
    table = models.Integration.__table__  # type: ignore[attr-defined]
    statement = insert(table).values(**values)
    upsert = statement.on_conflict_do_update(
        index_elements=["service", "external_id"],
        set_={"internal_id": statement.excluded.internal_id, "metadata": statement.excluded.metadata},
    ).returning(table.c.id)
    integration_id = await session.scalar(upsert)
    row = await session.get(models.Integration, integration_id, populate_existing=True)
    assert row is not None
    return row


async def get_integration(session: AsyncSession, *, service: str, external_id: str) -> models.Integration | None:
    found: models.Integration | None = await session.scalar(
        select(models.Integration).where(
            col(models.Integration.service) == service, col(models.Integration.external_id) == external_id
        )
    )
    return found


async def list_integrations(
    session: AsyncSession,
    *,
    internal_id: str | None,
    service: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[list[models.Integration], int]:
    """Integrations, oldest first, of one internal id (a vendor's, say) and/or one service
    (`limit + 1` rows: one more says there is more)."""
    table = models.Integration
    wanted = []
    if internal_id is not None:
        wanted.append(col(table.internal_id) == internal_id)
    if service is not None:
        wanted.append(col(table.service) == service)
    query = select(table).where(*wanted)
    if after is not None:
        query = query.where(func.row(col(table.created_at), col(table.id)) > func.row(*after))
    rows = (await session.execute(query.order_by(col(table.created_at), col(table.id)).limit(limit + 1))).scalars()
    total = await session.scalar(select(func.count()).select_from(table).where(*wanted)) if count else 0
    return list(rows.all()), int(total or 0)


async def delete_integration(session: AsyncSession, *, service: str, external_id: str) -> bool:
    """Whether a row was there to delete."""
    table = models.Integration
    gone = await session.scalar(
        delete(table)
        .where(col(table.service) == service, col(table.external_id) == external_id)
        .returning(col(table.id))
    )
    return gone is not None
