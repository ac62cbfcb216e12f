"""GraphQL types of the vendors domain."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.accounts.permissions import permits
from app.accounts.types import load_owner
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    build_connection,
    page_size,
    paginate_nested,
    time_cursor,
)
from app.api.scalars import JSON, utc
from app.api.validation import MAX_NAME
from app.vendors import loaders, models

if TYPE_CHECKING:
    from app.accounts.types import User

UserType = Annotated["User", strawberry.lazy("app.accounts.types")]

LOCATION_CURSOR = "location"
WRITE = "vendors:write"
# Other people's billing subscriptions: a billing service account that relays the provider's
# webhooks, and support staff.
BILLING = "billing:write"
# Input bounds, as the services check them.
MAX_DETAIL = 2048  # a vendor's description, phone, email, website, image
MAX_SERVICE = 100  # an integration's service, a billing provider
MAX_EXTERNAL_ID = 500
MAX_STATUS = 20


# Who may see a vendor's history and change the vendor: its owner, or `vendors:write`.
MANAGE_VENDOR = c.Rule(owner="user_id", permissions=(WRITE,))


async def can_manage(info: Info, vendor: models.Vendor) -> bool:
    return await permits(info.context, MANAGE_VENDOR, vendor.user_id)


@c.table(models.Location, vendor=c.ManyToOne("Vendor", key="vendor_id"))
@strawberry.type(name="Location")
class Location:
    id: strawberry.ID
    lat: float
    long: float
    timestamp: datetime
    row: strawberry.Private[models.Location]

    @classmethod
    def from_model(cls, row: models.Location) -> Location:
        return cls(
            id=strawberry.ID(str(row.id)),
            lat=row.lat,
            long=row.long,
            timestamp=utc(row.timestamp),
            row=row,
        )

    @strawberry.field
    async def vendor(self, info: Info) -> Vendor | None:
        row = await info.context.loaders.by_id(models.Vendor).load(self.row.vendor_id)
        return Vendor.from_model(row) if row is not None else None  # None: deleted since


@c.table(
    models.Vendor,
    owner=c.ManyToOne("User", key="user_id"),
    locations=c.Connection(
        "Location",
        order=c.Keyset("timestamp", "id", LOCATION_CURSOR),
        child_key="vendor_id",
        filters={"since": c.Filter(lambda t, since: f'{t}."timestamp" >= {since}::timestamptz')},
        visible=MANAGE_VENDOR,
    ),
)
@strawberry.type(name="Vendor")
class Vendor:
    id: strawberry.ID
    name: str
    description: str | None
    phone: str | None
    email: str | None
    website: str | None
    open: bool
    primary_image: str | None
    lat: float | None
    long: float | None
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[models.Vendor]

    @classmethod
    def from_model(cls, row: models.Vendor) -> Vendor:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            phone=row.phone,
            email=row.email,
            website=row.website,
            open=row.open,
            primary_image=row.primary_image,
            lat=row.lat,
            long=row.long,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            row=row,
        )

    @strawberry.field
    async def owner(self, info: Info) -> UserType:
        return await load_owner(info, self.row.user_id)

    @strawberry.field(
        description="Where the vendor has been, newest first; its owner and `vendors:write` only (others get "
        "an empty list: the current position is public, the trail is not)."
    )
    async def locations(
        self, info: Info, since: datetime | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[Location]:
        size = page_size(first)
        if not await can_manage(info, self.row):
            return build_connection([], size=size, cursor_of=str, to_node=Location.from_model, total_count=0)
        return await paginate_nested(
            info,
            parent=self.row.id,
            first=first,
            after=after,
            kind=LOCATION_CURSOR,
            pages=loaders.locations,
            counts=loaders.location_counts,
            to_node=Location.from_model,
            extra=since,
            cursor_of=lambda row: time_cursor(LOCATION_CURSOR, row.timestamp, row.id),
        )


@strawberry.type(name="VendorDistance")
class VendorDistance:
    vendor: Vendor
    distance_km: float


# Whose billing subscriptions a caller sees under a user: the user's own, `billing:write`'s and
# `users:admin`'s; anyone else gets an empty list, like their email.
SUBSCRIPTIONS_OF_USER = c.Rule(owner="id", permissions=(BILLING, "users:admin"))


@c.table(models.BillingSubscription, user=c.ManyToOne("User", key="user_id"))
@strawberry.type(name="BillingSubscription")
class BillingSubscription:
    id: strawberry.ID
    provider: str
    product_id: str
    status: str = strawberry.field(description="active, cancelled or expired.")
    start_date: datetime
    end_date: datetime | None
    created_at: datetime
    updated_at: datetime
    external_id: str | None = strawberry.field(description="The provider's id of it (what its webhook names).")
    row: strawberry.Private[models.BillingSubscription]

    @classmethod
    def from_model(cls, row: models.BillingSubscription) -> BillingSubscription:
        return cls(
            id=strawberry.ID(str(row.id)),
            provider=row.provider,
            product_id=row.product_id,
            status=row.status,
            start_date=utc(row.start_date),
            end_date=utc(row.end_date),
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            external_id=row.external_id,
            row=row,
        )

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        return await load_owner(info, self.row.user_id)


@c.table(models.Integration)
@strawberry.type(name="Integration")
class Integration:
    id: strawberry.ID
    service: str
    external_id: str
    internal_id: str
    metadata: JSON | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, row: models.Integration) -> Integration:
        return cls(
            id=strawberry.ID(str(row.id)),
            service=row.service,
            external_id=row.external_id,
            internal_id=row.internal_id,
            metadata=row.metadata_,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
        )


@strawberry.input
class VendorInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DETAIL))
    phone: str | None = strawberry.field(default=None, metadata=max_length(MAX_DETAIL))
    email: str | None = strawberry.field(default=None, metadata=max_length(MAX_DETAIL))
    website: str | None = strawberry.field(default=None, metadata=max_length(MAX_DETAIL))
    open: bool = True
    primary_image: str | None = strawberry.field(default=None, metadata=max_length(MAX_DETAIL))
    lat: float | None = None
    long: float | None = None


@strawberry.input
class VendorUpdate:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DETAIL))
    phone: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DETAIL))
    email: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DETAIL))
    website: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DETAIL))
    open: bool | None = strawberry.UNSET
    primary_image: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DETAIL))


@strawberry.input
class IntegrationInput:
    service: str = strawberry.field(metadata=max_length(MAX_SERVICE))
    external_id: str = strawberry.field(metadata=max_length(MAX_EXTERNAL_ID))
    internal_id: str = strawberry.field(metadata=max_length(MAX_EXTERNAL_ID))
    metadata: JSON | None = None


@strawberry.input
class BillingSubscriptionInput:
    provider: str = strawberry.field(metadata=max_length(MAX_SERVICE))
    product_id: str = strawberry.field(metadata=max_length(MAX_NAME))
    status: str | None = strawberry.field(default=None, metadata=max_length(MAX_STATUS))
    start_date: datetime
    end_date: datetime | None = None
    external_id: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Whose subscription: the caller's by default; anyone's with `billing:write`."
    )
