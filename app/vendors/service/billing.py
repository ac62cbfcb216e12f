"""Billing subscriptions (RevenueCat, Stripe, ...). Functions flush; the caller owns the transaction.

Status moves active -> cancelled (by the user or `billing:write`) or active -> expired (when its end date passes, by
the sweeper); each is one conditional UPDATE, so a cancelled or expired subscription never
comes back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from app.accounts import service as accounts
from app.api.errors import BadUserInput, Conflict, NotFound
from app.api.validation import required_text
from app.vendors import models

STATUSES = models.SUBSCRIPTION_STATUSES


async def create_subscription(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    provider: str,
    product_id: str,
    status: str | None,
    start_date: datetime,
    end_date: datetime | None,
    external_id: str | None = None,
) -> models.BillingSubscription:
    status = (status or "active").lower()
    if status not in STATUSES:
        raise BadUserInput(f"status must be one of {', '.join(STATUSES)}", field="status")
    start, end = start_date, end_date  # UTC already: the DateTime scalar converts inputs
    if end is not None and end < start:
        raise BadUserInput("endDate is before startDate", field="endDate")
    if await accounts.get_active_user(session, user_id=user_id) is None:
        raise NotFound("user not found", id=str(user_id))
    row = models.BillingSubscription(
        user_id=user_id,
        provider=required_text(provider, "provider", limit=100),
        product_id=required_text(product_id, "productId"),
        status=status,
        start_date=start,
        end_date=end,
        external_id=required_text(external_id, "externalId") if external_id is not None else None,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict("this provider already has a subscription with this externalId", field="externalId") from None
    await session.refresh(row)
    return row


async def get_subscription_or_raise(session: AsyncSession, *, subscription_id: uuid.UUID) -> models.BillingSubscription:
    # populate_existing: the row may be in the session already, with the status it had before
    # this transaction's (or a concurrent one's) UPDATE.
    row = await session.get(models.BillingSubscription, subscription_id, populate_existing=True)
    if row is None:
        raise NotFound("subscription not found", id=str(subscription_id))
    return row


async def cancel_subscription(session: AsyncSession, *, subscription_id: uuid.UUID) -> models.BillingSubscription:
    table = models.BillingSubscription.__table__  # type: ignore[attr-defined]
    changed = await session.scalar(
        table.update()
        .where(table.c.id == subscription_id, table.c.status == "active")
        .values(status="cancelled")
        .returning(table.c.id)
    )
    row = await get_subscription_or_raise(session, subscription_id=subscription_id)
    if changed is None:
        raise Conflict(f"only an active subscription can be cancelled; this one is {row.status}", status=row.status)
    return row


async def set_status(session: AsyncSession, *, subscription_id: uuid.UUID, status: str) -> models.BillingSubscription:
    status = status.strip().lower()
    if status not in STATUSES:
        raise BadUserInput(f"status must be one of {', '.join(STATUSES)}", field="status")
    table = models.BillingSubscription.__table__  # type: ignore[attr-defined]
    await session.execute(table.update().where(table.c.id == subscription_id).values(status=status))
    return await get_subscription_or_raise(session, subscription_id=subscription_id)


async def expire_subscriptions(conn: AsyncSession | AsyncConnection) -> int:
    """Active subscriptions whose end date has passed become expired; returns how many."""
    table = models.BillingSubscription.__table__  # type: ignore[attr-defined]
    result: Any = await conn.execute(
        table.update().where(table.c.status == "active", table.c.end_date < func.now()).values(status="expired")
    )
    return int(result.rowcount or 0)


async def list_subscriptions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[Sequence[models.BillingSubscription], int]:
    s = models.BillingSubscription
    base = select(s).where(col(s.user_id) == user_id)
    if status is not None:
        base = base.where(col(s.status) == status)
    query = base
    if before is not None:
        query = query.where(tuple_(col(s.created_at), col(s.id)) < tuple_(*before))
    rows = (await session.scalars(query.order_by(col(s.created_at).desc(), col(s.id).desc()).limit(limit + 1))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(base.subquery())) or 0
    return rows, total


async def subscriptions_of_users(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> list[list[models.BillingSubscription]]:
    """Every subscription of each user, newest first, in one statement (a dataloader batch)."""
    s = models.BillingSubscription
    rows = (
        await session.scalars(
            select(s).where(col(s.user_id).in_(user_ids)).order_by(col(s.created_at).desc(), col(s.id).desc())
        )
    ).all()
    found: dict[uuid.UUID, list[models.BillingSubscription]] = {user_id: [] for user_id in user_ids}
    for row in rows:
        found[row.user_id].append(row)
    return [found[user_id] for user_id in user_ids]
