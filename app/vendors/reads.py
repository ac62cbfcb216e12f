"""Reads of the vendors product that other products' types use too (their resolvers' list fields):
kept here, below every resolvers module, so that imports point one way (resolvers -> types -> reads ->
service)."""

from __future__ import annotations

import uuid

from app.accounts.permissions import permits
from app.api.context import Info
from app.api.pagination import (
    Connection,
    paginate,
)
from app.vendors.service import billing, vendors
from app.vendors.types import (
    SUBSCRIPTIONS_OF_USER,
    BillingSubscription,
    Vendor,
)

VENDOR_CURSOR = "vendor"


async def vendors_page(
    info: Info,
    *,
    open: bool | None = None,
    search: str | None = None,
    owner_id: uuid.UUID | None,
    first: int | None,
    after: str | None,
) -> Connection[Vendor]:
    """Vendors are public: anyone may list them, anyone's."""
    return await paginate(
        info,
        first=first,
        after=after,
        kind=VENDOR_CURSOR,
        to_node=Vendor.from_model,
        fetch=lambda position, limit, count: vendors.list_vendors(
            info.context.session,
            open=open,
            search=search or None,
            owner_id=owner_id,
            after=position,
            limit=limit,
            count=count,
        ),
    )


async def billing_subscriptions_of(info: Info, *, user_id: uuid.UUID) -> list[BillingSubscription]:
    """`User.billingSubscriptions` (SUBSCRIPTIONS_OF_USER)."""
    ctx = info.context
    if not await permits(ctx, SUBSCRIPTIONS_OF_USER, user_id):
        return []
    rows = await ctx.loaders.batch(billing.subscriptions_of_users).load(user_id)
    return [BillingSubscription.from_model(row) for row in rows]
