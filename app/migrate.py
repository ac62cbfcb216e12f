"""Alembic, driven from Python: `lodge migrate`, `lodge serve` on start, and the tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def _run(fn_name: str, database_url: str, *args: str) -> None:
    fn = getattr(command, fn_name)
    fn(alembic_config(database_url), *args)


async def upgrade(database_url: str, revision: str = "head") -> None:
    # env.py runs its own event loop, so alembic goes to a worker thread.
    await asyncio.to_thread(_run, "upgrade", database_url, revision)


async def downgrade(database_url: str, revision: str) -> None:
    await asyncio.to_thread(_run, "downgrade", database_url, revision)


async def current(database_url: str) -> str | None:
    """The revision the database is at (None before the first migration)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()


def head() -> str | None:
    """The newest revision in `migrations/`."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
