"""The typed GraphQL context.

strawberry builds one context per HTTP request but only one per websocket connection, so anything
that must not outlive an operation (the database session, dataloaders, events waiting for commit)
lives in an `OperationScope` held in a context variable. Every websocket operation runs in its own
task, and subscription resolvers open a fresh scope per event, so no scope is ever shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as _Info

from app.api.errors import LodgeError, Unauthenticated
from app.api.loaders import Loaders

if TYPE_CHECKING:
    from app.audit.recorder import AuditEntry
    from app.deps import Deps

T = TypeVar("T")


@dataclass(frozen=True)
class Viewer:
    """Who is calling: a user, through an access token or an opaque session."""

    user_id: uuid.UUID
    session_id: uuid.UUID | None
    expires_at: datetime  # when this credential stops working
    login_id: uuid.UUID | None = None  # an access token's login (refresh-token family)


@dataclass
class OperationScope:
    session: AsyncSession | None
    loaders: Loaders | None  # None until first used (subscription events)
    request_id: str
    # Subscription events open their session only if a field asks for it (most never do).
    lazy_session: async_sessionmaker[AsyncSession] | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    # Work that must happen even though the operation fails: run after its rollback, in the
    # transaction that records its audit rows.
    on_failure: list[Callable[[AsyncSession], Awaitable[None]]] = field(default_factory=list)
    viewer: Viewer | None = None
    viewer_known: bool = False
    permissions: frozenset[str] | None = None
    # Sibling resolvers run concurrently: the first to ask reads the database, the others wait for
    # its answer (and so resume together, which keeps their dataloader calls in one batch).
    pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # What a product remembers for the rest of the operation (the caller's API key, ...), by slot.
    slots: dict[Slot[Any], Any] = field(default_factory=dict)
    # What the operation committed on a connection of its own (log ingestion, a gateway batch),
    # set by the field that did it (`stands`): it stands whatever happens to the operation's own
    # transaction, which then must not report "nothing was saved".
    committed_apart: str | None = None
    # Published only if the operation fails, once its failure is recorded (a reused refresh token
    # ends its login in the failure's own transaction).
    failure_events: list[tuple[str, Any]] = field(default_factory=list)
    # A subscription event's scope: its loaders read through short sessions of their own unless a
    # field opened the event's session first.
    event: bool = False

    async def once(self, name: str, compute: Callable[[], Awaitable[T]]) -> T:
        """`compute()` once per scope however many resolvers ask at the same time.

        The work runs in its own task, which every caller (the first included) awaits through a
        shield: graphql-core cancels sibling resolvers when a non-null field fails, and one
        cancelled caller must neither cancel the answer the others are waiting for nor leave them
        hanging."""
        task = self.pending.get(name)
        if task is None:
            task = asyncio.ensure_future(compute())
            self.pending[name] = task

            def forget_failure(done: asyncio.Future[Any]) -> None:
                # An error is not an answer to keep: a later call may try again.
                if done.cancelled() or done.exception() is not None:
                    if self.pending.get(name) is done:
                        del self.pending[name]

            task.add_done_callback(forget_failure)
        found: T = await asyncio.shield(task)
        return found

    def stands(self, what: str) -> None:
        """Say that `what` was committed apart from the operation's transaction (the field then
        stands alone in its operation: see `finish_operation`)."""
        self.committed_apart = what

    async def settle(self) -> None:
        """Stop shared work nobody waits for any more (its callers were cancelled) before the
        session it uses is closed."""
        running = [task for task in self.pending.values() if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


class Slot(Generic[T]):
    """A typed place in an operation's scope for what a product keeps until the operation ends
    (`API_KEY: Slot[ApiKey] = Slot("api key")`), so the scope needs to know nothing of products."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"

    def get(self, scope: OperationScope | None) -> T | None:
        return None if scope is None else scope.slots.get(self)

    def put(self, scope: OperationScope | None, value: T) -> None:
        if scope is not None:
            scope.slots[self] = value


_scope: ContextVar[OperationScope | None] = ContextVar("lodge_operation_scope", default=None)


def current_scope() -> OperationScope | None:
    """The running operation's scope, or None outside one (a websocket's connection_init)."""
    return _scope.get()


@dataclass
class Credentials:
    scheme: str  # "bearer" or "apikey"
    value: str


@dataclass
class Context:
    deps: Deps
    request: Request | WebSocket
    response: Response | None = None
    connection_params: dict[str, Any] | None = None
    # Who called, once known (user_id, api_key_id): for the access log.
    caller: dict[str, str] = field(default_factory=dict)
    # The operation's compiled root fields by response key (app.api.compiled), set by the lean
    # pipeline for a prepared query.
    compiled: dict[str, Any] | None = None
    # Compiled roots run before graphql-core did (the pipeline's direct path gave up): their
    # answers and their failures, by response key.
    compiled_texts: dict[str, str] | None = None
    compiled_failures: dict[str, Exception] | None = None

    # -- per-operation state -------------------------------------------------------------------
    @property
    def scope(self) -> OperationScope:
        scope = _scope.get()
        if scope is None:
            raise RuntimeError("no operation scope: resolvers run inside OperationScopeExtension")
        return scope

    def open_scope(self, *, lazy: bool, read_only: bool = False) -> Any:
        """A scope for one operation. `lazy`: its session (so its transaction) is opened by the first
        resolver that needs it, so an operation that reads nothing from the database (`__typename`,
        a refused field) costs no pool checkout, no BEGIN and no COMMIT. `read_only` (queries): its
        statements run without a transaction (`Database.reader_sessionmaker`). Subscriptions pass
        `lazy=False`: their events open scopes of their own (`event_scope`)."""
        request_id = getattr(self.request.state, "request_id", None) or uuid.uuid4().hex
        db = self.deps.db
        sessionmaker = (db.reader_sessionmaker if read_only else db.sessionmaker) if lazy else None
        scope = OperationScope(session=None, loaders=None, request_id=request_id, lazy_session=sessionmaker)
        return _scope.set(scope)

    def close_scope(self, token: Any) -> None:
        _scope.reset(token)

    @asynccontextmanager
    async def event_scope(self) -> AsyncIterator[None]:
        """A scope for one subscription event: fresh loaders (rows of an earlier event are stale)
        and a session opened only if the event's fields need it and closed as soon as the event
        has been executed, so an idle or slow subscriber never pins a pool connection. Both are
        created on first use: most events of a live tail are rendered once and shared."""
        current = _scope.get()
        request_id = current.request_id if current else uuid.uuid4().hex
        scope = OperationScope(
            session=None, loaders=None, request_id=request_id, lazy_session=self.deps.db.sessionmaker, event=True
        )
        token = _scope.set(scope)
        try:
            yield
        finally:
            _scope.reset(token)
            await scope.settle()
            if scope.session is not None:
                await scope.session.close()

    @property
    def session(self) -> AsyncSession:
        scope = self.scope
        if scope.session is None and scope.lazy_session is not None:
            scope.session = scope.lazy_session()
        session = scope.session
        if session is None:
            raise RuntimeError("outside an event scope: wrap a subscription's yield in ctx.event_scope()")
        return session

    @property
    def loaders(self) -> Loaders:
        scope = self.scope
        if scope.loaders is None:
            # A query or mutation's loaders read through its session, so they see its writes. An
            # event's read through a short session per batch, unless the event has opened its own.
            reads_own_session = scope.lazy_session is not None and not scope.event
            scope.loaders = Loaders(self.deps.db, self.session if reads_own_session else scope.session)
        return scope.loaders

    @property
    def request_id(self) -> str:
        scope = _scope.get()
        if scope is not None:
            return scope.request_id
        return getattr(self.request.state, "request_id", "") or ""

    def publish_after_commit(self, channel: str, payload: Any) -> None:
        self.scope.events.append((channel, payload))

    # -- credentials ---------------------------------------------------------------------------
    @property
    def credentials(self) -> Credentials | None:
        raw: str | None = None
        if self.connection_params is not None:
            value = self.connection_params.get("authorization") or self.connection_params.get("Authorization")
            raw = value if isinstance(value, str) else None
        if raw is None:
            raw = self.request.headers.get("authorization")
        if raw is None and (key := self.request.headers.get("x-api-key")):
            return Credentials("apikey", key.strip())
        if not raw:
            return None
        scheme, _, value = raw.strip().partition(" ")
        scheme = scheme.lower()
        if scheme not in ("bearer", "apikey") or not value.strip():
            raise Unauthenticated("the Authorization header must be `Bearer <token>` or `ApiKey <secret>`")
        return Credentials(scheme, value.strip())

    def principal(self) -> str:
        """Who is calling, as a key: the same credential gives the same key, so the same rights.

        For sharing renderings within one principal; a digest, so it can sit in memory safely."""
        creds = self.credentials
        if creds is None:
            return "anonymous"
        return hashlib.sha256(f"{creds.scheme}:{creds.value}".encode()).hexdigest()

    @asynccontextmanager
    async def reader(self, session: AsyncSession | None = None) -> AsyncIterator[AsyncSession]:
        """The session given, else the operation's, else a short one (connection_init).

        Code already holding a session passes it: taking a second connection while holding one
        deadlocks a small pool under load."""
        scope = _scope.get()
        if session is not None:
            yield session
        elif scope is not None and (scope.session is not None or scope.lazy_session is not None):
            yield self.session
        else:
            async with self.deps.db.session() as session:
                yield session


Info = _Info[Context, None]

__all__ = ["Context", "Credentials", "Info", "LodgeError", "OperationScope", "Slot", "Viewer"]
