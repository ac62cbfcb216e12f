"""Alembic owns the schema: upgrade from empty, downgrade to base, upgrade again, no drift from the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import migrate
from app.db import import_models
from tests.conftest import create_database, drop_database


def _diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, import_models()))


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        names = {row[0] for row in rows}
    await engine.dispose()
    return names


async def test_upgrade_downgrade_upgrade_and_no_drift(server_url: str) -> None:
    url = await create_database(server_url)
    try:
        await migrate.upgrade(url)
        assert {"users", "projects", "api_keys", "logs"} <= await _tables(url)
        await migrate.downgrade(url, "base")
        assert await _tables(url) <= {"alembic_version"}
        await migrate.upgrade(url)
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            triggers = {
                row[0]
                for row in await conn.execute(
                    text(
                        "SELECT event_object_table FROM information_schema.triggers WHERE trigger_name LIKE '%updated_at'"
                    )
                )
            }
        await engine.dispose()
        assert diff == [], diff
        assert {"users", "projects", "api_keys"} <= triggers
    finally:
        await drop_database(server_url, url)


async def test_updated_at_is_kept_by_the_database(database_url: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(text("INSERT INTO users (discord_id) VALUES (gen_random_uuid()::text) RETURNING id"))
        ).scalar()
        before = (await conn.execute(text("SELECT updated_at FROM users WHERE id = :id"), {"id": user_id})).scalar()
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE users SET name = 'x' WHERE id = :id"), {"id": user_id})
        after = (await conn.execute(text("SELECT updated_at FROM users WHERE id = :id"), {"id": user_id})).scalar()
    await engine.dispose()
    assert before is not None and after is not None and after > before
