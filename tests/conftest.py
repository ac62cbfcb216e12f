"""Session fixtures: a throwaway database (on TEST_DATABASE_URL's server, or an embedded one), Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app import migrate
from app.settings import Settings
from tests.support import REQUIRE_SERVICES, LiveServer, live_server

ROOT = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    if REQUIRE_SERVICES:
        pytest.fail("LODGE_REQUIRE_SERVICES=1 but TEST_DATABASE_URL is not set")
    from app.db import embedded_database_url

    return embedded_database_url(ROOT / ".lodge" / "test")


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(server_url: str) -> str:
    name = f"lodge_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    url = await create_database(server_url)
    await migrate.upgrade(url)
    yield url
    await drop_database(server_url, url)


@pytest.fixture(scope="session")
def redis_url() -> str | None:
    url = os.environ.get("TEST_REDIS_URL")
    if not url and REQUIRE_SERVICES:
        pytest.fail("LODGE_REQUIRE_SERVICES=1 but TEST_REDIS_URL is not set")
    return url


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "secret_key": "test-secret-" + uuid.uuid4().hex,
        "data_dir": ROOT / ".lodge" / "test",
        "gc_threshold": 0,  # the test process keeps CPython's collector as it is
        # Tests call from one address, many times a second; the rate limiter's own tests turn it on.
        "rate_limit_api_key_per_second": 0,
        "rate_limit_user_per_second": 0,
        "rate_limit_anonymous_per_second": 0,
        "rate_limit_login_address_per_minute": 0,
        "rate_limit_login_email_per_minute": 0,
    }
    values.update(overrides)
    # model_validate reads no environment: a test's settings are exactly these.
    return Settings.model_validate(values)


# The in-process sweepers asleep: a server whose SQL statements a test counts runs only the test's.
QUIET_SWEEPERS: dict[str, object] = {
    "session_sweep_seconds": 3600,
    "reservation_sweep_seconds": 3600,
    "lease_sweep_seconds": 3600,
    "retention_sweep_seconds": 3600,
    "file_sweep_seconds": 3600,
}


@pytest.fixture(scope="session")
def settings(redis_url: str | None) -> Settings:
    # The shared server uses the real broker whenever there is one.
    return make_settings(broadcast_url=redis_url or "memory://")


@pytest.fixture(scope="session")
async def server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings, database_url) as live:
        yield live


__all__ = ["QUIET_SWEEPERS", "asyncio", "make_settings"]


@pytest.fixture(scope="module")
async def quiet_server(database_url: str) -> AsyncIterator[LiveServer]:
    """A server of its own whose sweepers sleep, so that every SQL statement counted is the query's."""
    settings = make_settings(**QUIET_SWEEPERS)
    async with live_server(settings, database_url) as live:
        yield live


@pytest.fixture(scope="module")
async def resolver_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    """A second server on the shared database with compiled reads off: the reference answers
    (tests/api/compiled_support.py)."""
    async with live_server(settings.model_copy(update={"compiled_reads": False}), database_url) as live:
        yield live
