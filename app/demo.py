"""`lodge serve --demo`: a user, a project, an API key (printed once), a few logs, and food vendors
with the trail of positions they reported over the last hour."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts import models as accounts_models
from app.accounts import service as accounts
from app.db import create_database
from app.logs import service as logs
from app.settings import Settings
from app.vendors import models as vendor_models
from app.vendors.service import vendors

DEMO_EMAIL = "demo@lodge.dev"
DEMO_PASSWORD = "lodge-demo-password"
# Food trucks around Lisbon: name, description, where they started an hour ago.
DEMO_VENDORS = [
    ("Bifana Express", "pork sandwiches, since 1998", 38.7110, -9.1420),
    ("Pastel Rolante", "custard tarts straight from the oven", 38.6979, -9.2063),
    ("Tasca Sobre Rodas", "grilled sardines and salads", 38.7223, -9.1393),
    ("Verde Vegan", "bowls and wraps", 38.7369, -9.1427),
    ("Gelado Andante", "ice cream and sorbets", 38.7077, -9.1365),
]
TRAIL_POINTS = 12  # one position every five minutes


async def _vendors_with_trails(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """The demo vendors, each with a trail of positions (a slow loop) ending where it is now."""
    now = datetime.now(UTC)
    recorded = 0
    for n, (name, description, lat, long) in enumerate(DEMO_VENDORS):
        trail = [
            (
                lat + 0.004 * math.sin(2 * math.pi * (step / TRAIL_POINTS) + n),
                long + 0.004 * math.cos(2 * math.pi * (step / TRAIL_POINTS) + n),
            )
            for step in range(TRAIL_POINTS)
        ]
        end_lat, end_long = trail[-1]
        vendor = await vendors.create_vendor(
            session,
            owner_id=owner_id,
            values={"name": name, "description": description, "open": True, "lat": end_lat, "long": end_long},
        )
        # create_vendor recorded the current position; the earlier ones are back-dated.
        for step, (point_lat, point_long) in enumerate(trail[:-1]):
            at = now - timedelta(minutes=5 * (TRAIL_POINTS - 1 - step))
            session.add(vendor_models.Location(vendor_id=vendor.id, lat=point_lat, long=point_long, timestamp=at))
        recorded += TRAIL_POINTS
    await session.flush()
    return recorded


async def load_demo(settings: Settings, database_url: str) -> None:
    db = create_database(database_url, settings)
    try:
        async with db.sessionmaker() as session:
            existing = await session.scalar(
                select(col(accounts_models.User.id)).where(col(accounts_models.User.email) == DEMO_EMAIL)
            )
            if existing is not None:
                print(f"demo data already loaded: sign in as {DEMO_EMAIL} / {DEMO_PASSWORD}")
                return
            user = await accounts.create_user(session, email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User")
            project = await logs.create_project(
                session, owner_id=user.id, name="Demo project", description="Loaded by --demo"
            )
            key, secret = await logs.create_api_key(
                session, project_id=project.id, label="demo", description="printed once", expires_at=None
            )
            items = [
                logs.LogItem(log=text, level=level, attributes={"service": "demo", "n": n}, idempotency_key=None)
                for n, (level, text) in enumerate(
                    [
                        ("INFO", "service started"),
                        ("DEBUG", "cache warmed in 42 ms"),
                        ("WARN", "slow query: 812 ms"),
                        ("ERROR", "payment provider timed out"),
                        ("INFO", "request served"),
                    ]
                )
            ]
            positions = await _vendors_with_trails(session, user.id)
            await session.commit()
        async with db.autocommit() as conn:
            await logs.ingest(conn, api_key=key, batch=logs.prepare_batch(items, max_batch=1000, max_bytes=1 << 20))
        print("demo data loaded:")
        print(f"  user     {DEMO_EMAIL} / {DEMO_PASSWORD}")
        print(f"  project  {project.id}")
        print(f"  API key  {secret}   (shown once; Lodge stores only its hash)")
        print(f"  vendors  {len(DEMO_VENDORS)}, with {positions} positions over the last hour")
    finally:
        await db.dispose()
