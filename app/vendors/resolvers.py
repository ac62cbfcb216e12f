"""Queries, mutations and the live map of the vendors domain."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from app.accounts import authentication
from app.accounts.permissions import has_permission, require_permission
from app.accounts.service import require_user_exists
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import BadUserInput, Forbidden, NotFound
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    page_size,
    paginate,
)
from app.api.validation import MAX_SEARCH, given, like_pattern, parse_id
from app.audit.recorder import audited, note_changes, snapshot
from app.pubsub import Delivery
from app.vendors import events, geo, models
from app.vendors.reads import VENDOR_CURSOR, vendors_page
from app.vendors.service import billing, integrations, vendors
from app.vendors.types import (
    BILLING,
    MAX_EXTERNAL_ID,
    MAX_SERVICE,
    MAX_STATUS,
    SUBSCRIPTIONS_OF_USER,
    WRITE,
    BillingSubscription,
    BillingSubscriptionInput,
    Integration,
    IntegrationInput,
    Location,
    Vendor,
    VendorDistance,
    VendorInput,
    VendorUpdate,
    can_manage,
)

SUBSCRIPTION_CURSOR = "billing"
INTEGRATION_CURSOR = "integration"


async def _managed(info: Info, vendor_id: strawberry.ID) -> models.Vendor:
    ctx = info.context
    await authentication.require_user_id(ctx, ctx.session)
    vendor = await vendors.get_vendor_or_raise(ctx.session, vendor_id=parse_id(vendor_id, "vendorId"))
    if not await can_manage(info, vendor):
        raise Forbidden("only the vendor's owner (or `vendors:write`) can do this")
    return vendor


async def _billing_owner(info: Info, user_id: strawberry.ID | None) -> uuid.UUID:
    """Whose subscriptions: the caller's, or `user_id`'s for `billing:write`."""
    ctx = info.context
    caller = await authentication.require_user_id(ctx, ctx.session)
    owner = parse_id(user_id, "userId") if user_id is not None else caller
    if owner != caller:
        await require_permission(ctx, BILLING, session=ctx.session)
        await require_user_exists(ctx.session, owner, "userId")
    return owner


async def _administered_subscription(info: Info, id: strawberry.ID) -> models.BillingSubscription:
    """A subscription a `billing:write` caller changes. To anyone else, their own is FORBIDDEN and
    someone else's NOT_FOUND, as if it did not exist: ids reveal nothing."""
    ctx = info.context
    caller = await authentication.require_user_id(ctx, ctx.session)
    row = await ctx.session.get(models.BillingSubscription, parse_id(id))
    if await has_permission(ctx, BILLING, ctx.session):
        if row is None:
            raise NotFound("subscription not found", id=str(id))
        return row
    if row is None or row.user_id != caller:
        raise NotFound("subscription not found", id=str(id))
    raise Forbidden("a subscription's status changes through its billing provider (or `billing:write`)")


c.root(
    "Query.vendors",
    c.Connection(
        "Vendor",
        order=c.Keyset("created_at", "id", VENDOR_CURSOR),
        where=lambda t: f"{t}.hidden_at IS NULL",  # an owner's deletion hides them (vendors_query)
        filters={
            "open": c.Filter(lambda t, open: f"{t}.open = {open}::boolean"),
            "search": c.Filter(lambda t, like: f"{t}.name ILIKE {like}::text", bind=like_pattern, truthy=True),
            "ownerId": c.Filter(
                lambda t, owner: f"{t}.user_id = {owner}::uuid",
                bind=lambda owner: parse_id(owner, "ownerId"),
                truthy=True,
                guard=lambda owner: f"EXISTS (SELECT 1 FROM users WHERE id = {owner}::uuid AND deleted_at IS NULL)",
            ),
        },
    ),
)
c.root("Query.vendor", c.ById("Vendor", bind=parse_id))
c.root(
    "Query.integration",
    c.Lookup(
        "Integration", keys={"service": "service", "externalId": "external_id"}, guard=c.Rule(permissions=(WRITE,))
    ),
)
# The caller's subscriptions, or `userId`'s for billing:write (a user who must exist).
c.root(
    "Query.billingSubscriptions",
    c.Connection(
        "BillingSubscription",
        order=c.Keyset("created_at", "id", SUBSCRIPTION_CURSOR),
        filters={
            "status": c.Filter(lambda t, status: f"{t}.status = {status}::text", bind=lambda s: s.lower(), truthy=True),
            "userId": c.Filter(
                lambda t, user: f"{t}.user_id = {user}::uuid",
                bind=lambda value: parse_id(value, "userId"),
                default_to_viewer=True,
                access=lambda user, viewer: (
                    f"({user}::uuid = {viewer.user} OR ({c.Rule(permissions=(BILLING,)).sql_of(None, viewer)}"
                    f" AND EXISTS (SELECT 1 FROM users WHERE id = {user}::uuid AND deleted_at IS NULL)))"
                ),
            ),
        },
        signed_in=True,
    ),
)
# A recorded position: its fields as recorded, its vendor (and below) read by one statement.
c.root("Subscription.vendorLocationUpdated", c.Event("Location"))
# Under a user: their vendors (public), and their subscriptions (SUBSCRIPTIONS_OF_USER).
c.relate(
    "User",
    vendors=c.Connection("Vendor", order=c.Keyset("created_at", "id", VENDOR_CURSOR), child_key="user_id"),
    billing_subscriptions=c.Children(
        "BillingSubscription",
        order=lambda t: f"{t}.created_at DESC, {t}.id DESC",
        child_key="user_id",
        visible=SUBSCRIPTIONS_OF_USER,
    ),
)


@strawberry.type
class VendorsQuery:
    @strawberry.field
    async def vendor(self, info: Info, id: strawberry.ID) -> Vendor | None:
        row = await info.context.session.get(models.Vendor, parse_id(id))
        return Vendor.from_model(row) if row is not None else None

    @strawberry.field(description="Vendors, newest first; `search` matches the name, case-insensitively.")
    async def vendors(
        self,
        info: Info,
        open: bool | None = None,
        search: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_SEARCH))] = None,
        owner_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Vendor]:
        owner = parse_id(owner_id, "ownerId") if owner_id else None
        if owner is not None:
            await require_user_exists(info.context.session, owner, "ownerId")
        return await vendors_page(info, open=open, search=search, owner_id=owner, first=first, after=after)

    @strawberry.field(
        description="Vendors within `radiusKm` of a point, nearest first (great-circle distance; right across "
        "the antimeridian and near the poles)."
    )
    async def vendors_near(
        self,
        info: Info,
        lat: float,
        long: float,
        radius_km: float,
        open_only: bool | None = None,
        first: int | None = None,
    ) -> list[VendorDistance]:
        size = page_size(first)
        found = await vendors.vendors_near(
            info.context.session, lat=lat, long=long, radius_km=radius_km, open_only=bool(open_only), limit=size
        )
        return [VendorDistance(vendor=Vendor.from_model(row), distance_km=distance) for row, distance in found]

    @strawberry.field(
        description="External services' ids mapped to Lodge's, oldest first (`vendors:write`): those of one "
        "`internalId` (a vendor's id lists the vendor's) and/or one `service`."
    )
    async def integrations(
        self,
        info: Info,
        internal_id: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_EXTERNAL_ID))] = None,
        service: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_SERVICE))] = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Integration]:
        ctx = info.context
        await require_permission(ctx, WRITE, session=ctx.session)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=INTEGRATION_CURSOR,
            to_node=Integration.from_model,
            fetch=lambda position, limit, count: integrations.list_integrations(
                ctx.session, internal_id=internal_id, service=service, after=position, limit=limit, count=count
            ),
        )

    @strawberry.field(description="An external service's id mapped to Lodge's (`vendors:write`).")
    async def integration(
        self,
        info: Info,
        service: Annotated[str, strawberry.argument(metadata=max_length(MAX_SERVICE))],
        external_id: Annotated[str, strawberry.argument(metadata=max_length(MAX_EXTERNAL_ID))],
    ) -> Integration | None:
        await require_permission(info.context, WRITE, session=info.context.session)
        row = await integrations.get_integration(info.context.session, service=service, external_id=external_id)
        return Integration.from_model(row) if row is not None else None

    @strawberry.field(
        description="Billing subscriptions, newest first: the caller's, or `userId`'s with `billing:write`."
    )
    async def billing_subscriptions(
        self,
        info: Info,
        status: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_STATUS))] = None,
        user_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[BillingSubscription]:
        ctx = info.context
        owner = await _billing_owner(info, user_id)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=SUBSCRIPTION_CURSOR,
            to_node=BillingSubscription.from_model,
            fetch=lambda position, limit, count: billing.list_subscriptions(
                ctx.session,
                user_id=owner,
                status=status.lower() if status else None,
                before=position,
                limit=limit,
                count=count,
            ),
        )


@strawberry.type
class VendorsMutation:
    @strawberry.mutation(extensions=[audited()])
    async def create_vendor(self, info: Info, input: VendorInput) -> Vendor:
        ctx = info.context
        owner_id = await authentication.require_user_id(ctx, ctx.session)
        row = await vendors.create_vendor(ctx.session, owner_id=owner_id, values=vars(input))
        return Vendor.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Change a vendor's details (its position moves by recordVendorLocation).",
    )
    async def update_vendor(self, info: Info, id: strawberry.ID, input: VendorUpdate) -> Vendor:
        vendor = await _managed(info, id)
        changes = given(input)
        before = snapshot(vendor, changes)
        row = await vendors.update_vendor(info.context.session, vendor=vendor, values=changes)
        note_changes(info, before, snapshot(row, before))
        return Vendor.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete a vendor with its location history.",
    )
    async def delete_vendor(self, info: Info, id: strawberry.ID) -> bool:
        vendor = await _managed(info, id)
        await vendors.delete_vendor(info.context.session, vendor=vendor)
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Append to the vendor's history and move it there, in one transaction.",
    )
    async def record_vendor_location(self, info: Info, vendor_id: strawberry.ID, lat: float, long: float) -> Location:
        vendor = await _managed(info, vendor_id)
        row = await vendors.record_location(info.context.session, vendor=vendor, lat=lat, long=long)
        for channel, payload in events.location_recorded(row):
            info.context.publish_after_commit(channel, payload)
        return Location.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Create or update by (service, externalId), in one statement (`vendors:write`).",
    )
    async def upsert_integration(self, info: Info, input: IntegrationInput) -> Integration:
        await require_permission(info.context, WRITE, session=info.context.session)
        row = await integrations.upsert_integration(
            info.context.session,
            service=input.service,
            external_id=input.external_id,
            internal_id=input.internal_id,
            metadata=input.metadata,
        )
        return Integration.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Remove the mapping of (service, externalId) (`vendors:write`); NOT_FOUND if none.",
    )
    async def delete_integration(
        self,
        info: Info,
        service: Annotated[str, strawberry.argument(metadata=max_length(MAX_SERVICE))],
        external_id: Annotated[str, strawberry.argument(metadata=max_length(MAX_EXTERNAL_ID))],
    ) -> bool:
        ctx = info.context
        await require_permission(ctx, WRITE, session=ctx.session)
        if not await integrations.delete_integration(ctx.session, service=service, external_id=external_id):
            raise NotFound("integration not found", service=service, externalId=external_id)
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Record a subscription for a user (`billing:write`: a billing service or an admin; the caller's "
        "own when `input.userId` is omitted). Status otherwise changes through POST /webhooks/billing.",
    )
    async def create_billing_subscription(self, info: Info, input: BillingSubscriptionInput) -> BillingSubscription:
        ctx = info.context
        # Nobody grants themself a subscription: the provider's webhook or a billing admin does.
        await require_permission(ctx, BILLING, session=ctx.session)
        owner = await _billing_owner(info, input.user_id)
        row = await billing.create_subscription(
            ctx.session,
            user_id=owner,
            provider=input.provider,
            product_id=input.product_id,
            status=input.status,
            start_date=input.start_date,
            end_date=input.end_date,
            external_id=input.external_id,
        )
        return BillingSubscription.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="active -> cancelled (`billing:write`); any other status is CONFLICT. A user cancels with "
        "their billing provider, whose webhook tells Lodge.",
    )
    async def cancel_billing_subscription(self, info: Info, id: strawberry.ID) -> BillingSubscription:
        row = await _administered_subscription(info, id)
        session = info.context.session
        return BillingSubscription.from_model(await billing.cancel_subscription(session, subscription_id=row.id))

    @strawberry.mutation(
        extensions=[audited()],
        description="Set a subscription's status, any way (`billing:write`): an admin's correction of the "
        "provider's word.",
    )
    async def set_billing_subscription_status(
        self,
        info: Info,
        id: strawberry.ID,
        status: Annotated[str, strawberry.argument(metadata=max_length(MAX_STATUS))],
    ) -> BillingSubscription:
        row = await _administered_subscription(info, id)
        changed = await billing.set_status(info.context.session, subscription_id=row.id, status=status)
        return BillingSubscription.from_model(changed)


def _box(
    min_lat: float | None, max_lat: float | None, min_long: float | None, max_long: float | None
) -> tuple[float, float, float, float]:
    values = (min_lat, max_lat, min_long, max_long)
    if any(v is None for v in values):
        raise BadUserInput("a box needs minLat, maxLat, minLong and maxLong")
    low_lat, high_lat, low_long, high_long = (float(v) for v in values)  # type: ignore[arg-type]
    for name, value, limit in (
        ("minLat", low_lat, 90),
        ("maxLat", high_lat, 90),
        ("minLong", low_long, 180),
        ("maxLong", high_long, 180),
    ):
        if not math.isfinite(value) or abs(value) > limit:
            raise BadUserInput(f"{name} must be between -{limit} and {limit}", field=name)
    if low_lat > high_lat:
        raise BadUserInput("minLat is above maxLat", field="minLat")
    return low_lat, high_lat, low_long, high_long


@strawberry.type
class VendorsSubscription:
    @strawberry.subscription(
        description="Positions recorded after the subscription starts: of one vendor, or of every vendor in a box "
        "(minLong > maxLong: a box across the antimeridian). Open to anyone, like a vendor's current position; "
        "the stored history (`Vendor.locations`) stays its owner's."
    )
    async def vendor_location_updated(
        self,
        info: Info,
        vendor_id: strawberry.ID | None = None,
        min_lat: float | None = None,
        max_lat: float | None = None,
        min_long: float | None = None,
        max_long: float | None = None,
    ) -> AsyncGenerator[Location, None]:
        ctx = info.context
        boxed = any(v is not None for v in (min_lat, max_lat, min_long, max_long))
        if (vendor_id is None) == (not boxed):
            raise BadUserInput("pass `vendorId` or a box (minLat, maxLat, minLong, maxLong), not both")
        if vendor_id is not None:
            vid = parse_id(vendor_id, "vendorId")
            async with ctx.deps.db.session() as session:
                if await session.get(models.Vendor, vid) is None:
                    raise NotFound("vendor not found", id=str(vid))
            channel, box = events.vendor_channel(vid), None
        else:
            channel, box = events.MAP_CHANNEL, _box(min_lat, max_lat, min_long, max_long)
        async with ctx.deps.hub.subscribe(channel) as live:
            while True:
                delivery = await live.receive()
                if not isinstance(delivery, Delivery):
                    continue  # RESYNC: live positions only, a missed one is superseded by the next
                row, shared = events.shared_location(delivery)
                if box is not None and not geo.in_box(
                    row.lat, row.long, min_lat=box[0], max_lat=box[1], min_long=box[2], max_long=box[3]
                ):
                    continue
                async with ctx.event_scope():
                    yield shared  # type: ignore[misc]
