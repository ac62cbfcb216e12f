"""Food vendors (DOMAIN.md, seeds/venta-vendors.md): vendors with their live position and its
history, billing subscriptions and the ids of external services."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, Double, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, timestamp, updated_at, uuid_fk, uuid_pk

LATITUDE = "{0} IS NULL OR ({0} >= -90 AND {0} <= 90)"
LONGITUDE = "{0} IS NULL OR ({0} >= -180 AND {0} <= 180)"
SUBSCRIPTION_STATUSES = ("active", "cancelled", "expired")


def _degrees(*, nullable: bool) -> Any:
    return Field(default=None, sa_column=Column(Double, nullable=nullable))


class Vendor(SQLModel, table=True):
    __tablename__ = "vendors"
    __table_args__ = (
        CheckConstraint(LATITUDE.format("lat"), name="lat_range"),
        CheckConstraint(LONGITUDE.format("long"), name="long_range"),
        CheckConstraint("(lat IS NULL) = (long IS NULL)", name="position_whole"),
        # The nearby search's bounding box: a range on lat, then long, read from this index.
        Index("ix_vendors_location", "lat", "long"),
        Index("ix_vendors_created_at", "created_at"),
        Index("ix_vendors_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    name: str = text_col(nullable=False)
    description: str | None = text_col()
    phone: str | None = text_col()
    email: str | None = text_col()
    website: str | None = text_col()
    open: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true")))
    primary_image: str | None = text_col()
    lat: float | None = _degrees(nullable=True)
    long: float | None = _degrees(nullable=True)
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    # Set when its owner was deleted: it leaves the public lists (`vendors`, `vendorsNear`).
    hidden_at: datetime | None = timestamp()


class Location(SQLModel, table=True):
    __tablename__ = "locations"
    __table_args__ = (
        CheckConstraint(LATITUDE.format("lat"), name="lat_range"),
        CheckConstraint(LONGITUDE.format("long"), name="long_range"),
        # A vendor's history, newest first (keyset over timestamp, id).
        Index("ix_locations_vendor_id_timestamp", "vendor_id", "timestamp", "id"),
        Index("ix_locations_timestamp", "timestamp"),
    )

    id: uuid.UUID = uuid_pk()
    vendor_id: uuid.UUID = uuid_fk("vendors.id", ondelete="CASCADE", index=True)
    lat: float = _degrees(nullable=False)
    long: float = _degrees(nullable=False)
    # clock_timestamp(): the order in which positions were recorded, even within one transaction.
    timestamp: datetime = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    )


class BillingSubscription(SQLModel, table=True):
    """The seed's `subscriptions` (GraphQL's `BillingSubscription`)."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in SUBSCRIPTION_STATUSES)})", name="status"),
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="dates"),
        Index("ix_subscriptions_status", "status"),
        Index("ix_subscriptions_end_date", "end_date"),
        Index("ix_subscriptions_user_id_created_at", "user_id", "created_at", "id"),
        # The provider's own id of the subscription: what its webhook events name.
        Index(
            "uq_subscriptions_provider_external_id",
            "provider",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE", index=True)
    provider: str = text_col(nullable=False)
    product_id: str = text_col(nullable=False)
    status: str = Field(default="active", sa_column=Column(Text, nullable=False, server_default=text("'active'")))
    start_date: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    end_date: datetime | None = timestamp()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    external_id: str | None = text_col()
    # When the provider sent the event that set the status: an older event arriving late changes nothing.
    provider_updated_at: datetime | None = timestamp()


class BillingEvent(SQLModel, table=True):
    """A billing webhook event applied once: its id is its idempotency key."""

    __tablename__ = "billing_events"

    id: str = Field(sa_column=Column(Text, primary_key=True))
    type: str = text_col(nullable=False)
    received_at: datetime = created_at()


class Integration(SQLModel, table=True):
    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("service", "external_id"),
        Index("ix_integrations_service", "service"),
        Index("ix_integrations_external_id", "external_id"),
    )

    id: uuid.UUID = uuid_pk()
    service: str = text_col(nullable=False)
    external_id: str = text_col(nullable=False)
    internal_id: str = text_col(nullable=False)
    metadata_: Any = Field(default=None, sa_column=Column("metadata", JSONB, nullable=True))
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
