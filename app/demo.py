"""`lodge serve --demo`: a user, a project, an API key (printed once) and a few logs."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from app.accounts import models as accounts_models
from app.accounts import service as accounts
from app.db import create_database
from app.logs import service as logs
from app.settings import Settings

DEMO_EMAIL = "demo@lodge.dev"
DEMO_PASSWORD = "lodge-demo-password"


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
            await session.commit()
        async with db.autocommit() as conn:
            await logs.ingest(conn, api_key=key, batch=logs.prepare_batch(items, max_batch=1000, max_bytes=1 << 20))
        print("demo data loaded:")
        print(f"  user     {DEMO_EMAIL} / {DEMO_PASSWORD}")
        print(f"  project  {project.id}")
        print(f"  API key  {secret}   (shown once; Lodge stores only its hash)")
    finally:
        await db.dispose()
