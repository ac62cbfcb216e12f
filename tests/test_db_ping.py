"""A pooled connection that died while idle is replaced before use, unseen by the client
(app/db.py ping_when_idle): PostgreSQL restarted, or something between cut the connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from app.db import OperationSession
from app.settings import Settings
from tests.conftest import QUIET_SWEEPERS, _asyncpg_dsn
from tests.support import LiveServer, live_server, new_user


@pytest.fixture
async def pinging_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    # 0: every checkout counts as idle, so the test needs no waiting; sweepers asleep, so the pool
    # holds only the connections the test's own requests used.
    quiet = {"db_ping_idle_seconds": 0, **QUIET_SWEEPERS}
    async with live_server(settings.model_copy(update=quiet), database_url) as live:
        yield live


async def kill_the_pooled_connection(server: LiveServer, database_url: str) -> None:
    """Terminate, from outside, the one connection the server's pool holds."""
    pool = server.deps.db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool) and pool.checkedin() == 1, pool.status()
    async with server.deps.db.engine.connect() as conn:
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
    outside = await asyncpg.connect(_asyncpg_dsn(database_url))
    try:
        assert await outside.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await outside.close()


async def test_a_connection_killed_while_idle_is_replaced_unseen(pinging_server: LiveServer, database_url: str) -> None:
    token = await new_user(pinging_server)
    await kill_the_pooled_connection(pinging_server, database_url)
    # The pool's only connection is dead: the ping finds out, the pool connects anew, the client sees nothing.
    created = await pinging_server.data('mutation { createProject(input: {name: "ping"}) { id } }', token=token)
    assert created["createProject"]["id"]
    await kill_the_pooled_connection(pinging_server, database_url)
    assert (await pinging_server.data("{ me { id } }", token=token))["me"]["id"]


async def test_raw_reads_run_only_outside_a_transaction(server: LiveServer) -> None:
    """`OperationSession.fetch_raw` bypasses SQLAlchemy: in a session with a transaction it would
    run outside it (asyncpg knows nothing of a BEGIN SQLAlchemy has not sent yet), so it refuses."""
    db = server.deps.db
    async with db.reader_sessionmaker() as reader:
        assert isinstance(reader, OperationSession)
        rows = await reader.fetch_raw("SELECT $1::int + 1 AS n", 41)
        assert [row["n"] for row in rows] == [42]
    async with db.sessionmaker() as writer:
        assert isinstance(writer, OperationSession)
        with pytest.raises(RuntimeError, match="without a transaction"):
            await writer.fetch_raw("SELECT 1")


async def test_a_raw_read_on_a_dead_connection_fails_once_and_the_pool_recovers(
    settings: Settings, database_url: str
) -> None:
    # No ping (a connection that dies while busy is the case): the raw read's failure must take
    # the dead connection out of the pool, or every request handed it would fail.
    quiet = {"db_ping_idle_seconds": 1000, **QUIET_SWEEPERS}
    async with live_server(settings.model_copy(update=quiet), database_url) as live:
        token = await new_user(live)
        assert (await live.data("{ me { id } }", token=token))["me"]["id"]  # the login is remembered now
        await kill_the_pooled_connection(live, database_url)
        failed = await live.gql("{ me { id } }", token=token)
        assert failed["errors"][0]["extensions"]["reason"] == "database_unavailable"
        assert (await live.data("{ me { id } }", token=token))["me"]["id"]


async def test_after_a_raw_read_fails_every_older_connection_is_checked(settings: Settings, database_url: str) -> None:
    """A raw read that finds its connection dead makes the pool ping every connection it held
    from before at its next checkout (PostgreSQL restarted: they are all dead), so only the first
    request fails, not one per pooled connection."""
    quiet = {"db_ping_idle_seconds": 1000, **QUIET_SWEEPERS}
    async with live_server(settings.model_copy(update=quiet), database_url) as live:
        token = await new_user(live)
        assert (await live.data("{ me { id } }", token=token))["me"]["id"]  # the login is remembered now
        engine = live.deps.db.engine
        async with engine.connect() as a, engine.connect() as b:  # two connections in the pool
            pids = [await c.scalar(text("SELECT pg_backend_pid()")) for c in (a, b)]
        outside = await asyncpg.connect(_asyncpg_dsn(database_url))
        try:
            for pid in pids:
                assert await outside.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        finally:
            await outside.close()
        failed = await live.gql("{ me { id } }", token=token)
        assert failed["errors"][0]["extensions"]["reason"] == "database_unavailable"
        for _ in range(3):  # the other dead connection is found by its ping, not by a request
            assert (await live.data("{ me { id } }", token=token))["me"]["id"]
