"""Vendors, their positions and the nearby search. Functions flush; the caller owns the transaction."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, NotFound
from app.api.validation import bounded_text, like_pattern, required_text
from app.vendors import geo, models

EDITABLE = ("name", "description", "phone", "email", "website", "open", "primary_image")


def coordinates(lat: float | None, long: float | None) -> tuple[float | None, float | None]:
    if (lat is None) != (long is None):
        raise BadUserInput("give both lat and long, or neither", field="lat" if lat is None else "long")
    if lat is None or long is None:
        return None, None
    if not math.isfinite(lat) or not -90 <= lat <= 90:
        raise BadUserInput("lat must be between -90 and 90", field="lat")
    if not math.isfinite(long) or not -180 <= long <= 180:
        raise BadUserInput("long must be between -180 and 180", field="long")
    return lat, long


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name in EDITABLE:
        if name not in values:
            continue
        value = values[name]
        if name == "name":
            checked[name] = required_text(value, "name")
        elif name == "open":
            if value is None:
                raise BadUserInput("open must not be null", field="open")
            checked[name] = value
        else:
            checked[name] = bounded_text(value, name, limit=2048)
    return checked


async def create_vendor(session: AsyncSession, *, owner_id: uuid.UUID, values: dict[str, Any]) -> models.Vendor:
    lat, long = coordinates(values.get("lat"), values.get("long"))
    vendor = models.Vendor(user_id=owner_id, lat=lat, long=long, **_fields(values))
    session.add(vendor)
    await session.flush()
    if lat is not None and long is not None:
        session.add(models.Location(vendor_id=vendor.id, lat=lat, long=long))
        await session.flush()
    await session.refresh(vendor)
    return vendor


async def get_vendor_or_raise(session: AsyncSession, *, vendor_id: uuid.UUID, lock: bool = False) -> models.Vendor:
    query = select(models.Vendor).where(col(models.Vendor.id) == vendor_id)
    if lock:
        query = query.with_for_update()
    vendor = (await session.scalars(query.execution_options(populate_existing=True))).first()
    if vendor is None:
        raise NotFound("vendor not found", id=str(vendor_id))
    return vendor


async def update_vendor(session: AsyncSession, *, vendor: models.Vendor, values: dict[str, Any]) -> models.Vendor:
    for name, value in _fields(values).items():
        setattr(vendor, name, value)
    session.add(vendor)
    await session.flush()
    await session.refresh(vendor)
    return vendor


async def delete_vendor(session: AsyncSession, *, vendor: models.Vendor) -> None:
    """Its location history goes with it (cascade)."""
    await session.delete(vendor)
    await session.flush()


async def record_location(session: AsyncSession, *, vendor: models.Vendor, lat: float, long: float) -> models.Location:
    """Append to the history and move the vendor, in the operation's transaction. The vendor's row
    is locked first, so concurrent reports take turns and the vendor ends at the latest one."""
    checked_lat, checked_long = coordinates(lat, long)
    assert checked_lat is not None and checked_long is not None
    await get_vendor_or_raise(session, vendor_id=vendor.id, lock=True)
    location = models.Location(vendor_id=vendor.id, lat=checked_lat, long=checked_long)
    session.add(location)
    vendor.lat, vendor.long = checked_lat, checked_long
    session.add(vendor)
    await session.flush()
    await session.refresh(location)
    return location


def vendors_query(
    *,
    open: bool | None,
    search: str | None,
    owner_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Any:
    v = models.Vendor
    query = select(v).where(col(v.hidden_at).is_(None))  # an owner's deletion hides them
    if open is not None:
        query = query.where(col(v.open).is_(open))
    if search:
        query = query.where(col(v.name).ilike(like_pattern(search)))
    if owner_id is not None:
        query = query.where(col(v.user_id) == owner_id)
    if after is not None:
        query = query.where(tuple_(col(v.created_at), col(v.id)) < tuple_(*after))
    return query.order_by(col(v.created_at).desc(), col(v.id).desc()).limit(limit + 1)


async def list_vendors(
    session: AsyncSession,
    *,
    open: bool | None,
    search: str | None,
    owner_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[Sequence[models.Vendor], int]:
    rows = (
        await session.scalars(vendors_query(open=open, search=search, owner_id=owner_id, after=after, limit=limit))
    ).all()
    total = 0
    if count:
        counted = vendors_query(open=open, search=search, owner_id=owner_id, after=None, limit=0)
        total = (
            await session.scalar(select(func.count()).select_from(counted.limit(None).order_by(None).subquery())) or 0
        )
    return rows, total


def _haversine_sql(lat: float, long: float) -> Any:
    v = models.Vendor
    p1, p2 = func.radians(literal(lat, Float)), func.radians(col(v.lat))
    dp, dl = p2 - p1, func.radians(col(v.long) - literal(long, Float))
    a = func.power(func.sin(dp / 2), 2) + func.cos(p1) * func.cos(p2) * func.power(func.sin(dl / 2), 2)
    return 2 * geo.EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(a)))


def near_query(*, lat: float, long: float, radius_km: float, open_only: bool, limit: int) -> Any:
    """Vendors within `radius_km`, nearest first: the box is read from ix_vendors_location, the
    exact distance is computed for what the box lets through."""
    v = models.Vendor
    box = geo.bounding_box(lat, long, radius_km)
    distance = _haversine_sql(lat, long).label("distance_km")
    conditions: list[Any] = [col(v.lat).between(box.min_lat, box.max_lat), col(v.hidden_at).is_(None)]
    if box.longs:
        conditions.append(or_(*(col(v.long).between(low, high) for low, high in box.longs)))
    if open_only:
        conditions.append(col(v.open).is_(True))
    inner = select(v, distance).where(and_(*conditions)).subquery("candidates")
    found = select(inner).where(inner.c.distance_km <= radius_km)
    return found.order_by(inner.c.distance_km, inner.c.id).limit(limit)


async def vendors_near(
    session: AsyncSession, *, lat: float, long: float, radius_km: float, open_only: bool, limit: int
) -> list[tuple[models.Vendor, float]]:
    checked_lat, checked_long = coordinates(lat, long)
    assert checked_lat is not None and checked_long is not None
    if not math.isfinite(radius_km) or radius_km <= 0:
        raise BadUserInput("radiusKm must be a positive number", field="radiusKm")
    radius_km = min(radius_km, geo.MAX_RADIUS_KM)
    query = near_query(lat=checked_lat, long=checked_long, radius_km=radius_km, open_only=open_only, limit=limit)
    rows = (await session.execute(query)).mappings().all()
    columns = models.Vendor.__table__.columns.keys()  # type: ignore[attr-defined]
    return [(models.Vendor(**{name: row[name] for name in columns}), row["distance_km"]) for row in rows]
