"""One transaction per operation with publish after commit, and the error policy.

The transaction wraps execution (`on_execute`), not the whole operation: over websockets strawberry
sends a result before `on_operation` finishes, and a client must never see a mutation succeed that
was then rolled back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.accounts.events import AUTH_CHANGES
from app.api.context import Context, OperationScope
from app.api.errors import BAD_USER_INPUT, CONFLICT, INTERNAL, BadUserInput, LodgeError
from app.api.scalars import contains_nul
from app.audit import recorder as audit
from app.observability import metrics

log = logging.getLogger("lodge.api")


class RefuseNulCharacters(SchemaExtension):
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it up front instead of failing a statement."""

    def on_execute(self) -> Iterator[None]:
        if contains_nul(self.execution_context.variables or {}):
            raise BadUserInput("text may not contain the NUL character (U+0000)")
        yield


class OperationScopeExtension(SchemaExtension):
    """The operation's scope around execution, for operations strawberry runs (websockets, and
    HTTP requests the lean pipeline hands over): see `finish_operation`."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx: Context = self.execution_context.context
        if self.execution_context.operation_type == OperationType.SUBSCRIPTION:
            token = ctx.open_scope(lazy=False)
            try:
                yield
            finally:
                ctx.close_scope(token)
            return

        mutation = self.execution_context.operation_type == OperationType.MUTATION
        token = ctx.open_scope(lazy=True, read_only=not mutation)
        scope = ctx.scope
        try:
            yield
            await finish_operation(ctx, scope, self.execution_context.result, mutation=mutation)
        finally:
            await close_operation(scope)
            ctx.close_scope(token)


async def finish_operation(ctx: Context, scope: OperationScope, result: Any, *, mutation: bool) -> None:
    """Commit (writing the audit rows first) and publish, or roll back and record the failure.

    The session is lazy (`Context.open_scope`): an operation that never opened one and has
    nothing to record commits nothing. A failed mutation's `data` is cleared: nothing was saved,
    so fields that had succeeded must not look as if they were. A change committed outside the
    operation's transaction (`committed_outside`) stands either way, and is audited as done."""
    await scope.settle()  # nothing may still use the session when it commits or rolls back
    if scope.committed_outside:
        # The change is committed on a connection of its own (ingestion, a gateway batch; such a
        # field stands alone in its operation). It stands whatever failed after it (a nested
        # field): its audit rows say it happened, and need no transaction, only their INSERT.
        if scope.audit:
            try:
                async with ctx.deps.db.autocommit() as conn:
                    await audit.write(conn, ctx=ctx, entries=scope.audit)
            except Exception as exc:
                log.error("audit row lost after a committed change (request %s): %r", scope.request_id, exc)
        await _publish(ctx, scope.events)
        return
    if result is not None and not result.errors:
        if scope.session is not None or scope.audit:
            session = ctx.session
            try:
                if scope.audit:
                    await audit.write(session, ctx=ctx, entries=scope.audit)
                await session.commit()
            except Exception as exc:
                log.exception("commit failed (request %s)", scope.request_id)
                await _record_failure(session, ctx, "the commit failed")
                raise CommitFailed(scope.request_id) from exc
        await _publish(ctx, scope.events)
        return
    first = result.errors[0].message if result is not None and result.errors else "error"
    if scope.session is not None or scope.audit or scope.on_failure:
        await _record_failure(ctx.session, ctx, first)
    if result is not None and mutation:
        result.data = None


async def _publish(ctx: Context, events: list[tuple[str, Any]]) -> None:
    # This process forgets ended credentials at once, before any message goes out (a slow
    # broker must not delay it) and before the answer is sent; the others when the broker
    # delivers `auth:changes`, which is published even while publishing is paused after a failure.
    for channel, payload in events:
        if channel == AUTH_CHANGES:
            ctx.deps.principals.announce(payload["channel"])
    for channel, payload in events:
        await ctx.deps.hub.publish(channel, payload, essential=channel == AUTH_CHANGES)


async def close_operation(scope: OperationScope) -> None:
    await scope.settle()
    if scope.session is not None:
        await scope.session.close()


async def _record_failure(session: AsyncSession, ctx: Context, reason: str) -> None:
    """Roll back, then record the attempt (and run what must survive it) in a transaction of its own."""
    try:
        await session.rollback()
    except Exception:
        # The connection died under the transaction (nothing was saved): record on a new one.
        log.warning("rollback failed (request %s); recording the failure apart", ctx.scope.request_id)
        async with ctx.deps.db.sessionmaker() as fresh:
            await _record(fresh, ctx, reason)
        return
    await _record(session, ctx, reason)


async def _record(session: AsyncSession, ctx: Context, reason: str) -> None:
    scope = ctx.scope
    if not scope.audit and not scope.on_failure:
        return
    try:
        for hook in scope.on_failure:
            await hook(session)
        if scope.audit:
            audit.mark_rolled_back(scope.audit, reason)
            await audit.write(session, ctx=ctx, entries=scope.audit)
        await session.commit()
        await _publish(ctx, scope.failure_events)
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("could not record a failed operation (request %s): database unavailable", scope.request_id)
        else:
            log.exception("could not record a failed operation (request %s)", scope.request_id)
        with contextlib.suppress(Exception):
            await session.rollback()


class CommitFailed(LodgeError):
    code = INTERNAL

    def __init__(self, request_id: str) -> None:
        super().__init__("Internal server error: nothing was saved", requestId=request_id)


def shape_errors(errors: list[GraphQLError], execution_context: Any) -> None:
    """Give every error an `extensions.code`; mask unexpected ones as INTERNAL (in place).

    strawberry calls `Schema.process_errors` on every path that produces errors (parsing, limits,
    validation, execution, each subscription event), which an extension hook does not see.
    """
    for index, error in enumerate(errors):
        errors[index] = _shape(error, execution_context)


# character_not_in_repertoire (NUL in text), untranslatable_character (\u0000 in jsonb)
TEXT_POSTGRES_REFUSES = frozenset({"22021", "22P05"})
# deadlock_detected, serialization_failure: nothing was saved, and the same request may succeed.
RETRYABLE = frozenset({"40P01", "40001"})
# query_canceled: the statement timeout (LODGE_STATEMENT_TIMEOUT_MS) cancelled it in PostgreSQL.
CANCELLED = "57014"
# in_failed_sql_transaction: an earlier statement of this operation failed (a timeout, say) and its
# siblings ran on into the aborted transaction; the first error says why.
ABORTED = "25P02"


# connection_exception (class 08), admin_shutdown, crash_shutdown, cannot_connect_now.
UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException | None) -> bool:
    """True when `exc` says the database cannot be reached (down, restarting, connection lost),
    not that a statement failed: the same request can succeed once it is back."""
    seen = 0
    while exc is not None and seen < 6:
        if isinstance(exc, OSError | ConnectionError):
            return True
        if getattr(exc, "connection_invalidated", False):
            return True
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state.startswith(UNAVAILABLE_STATES):
            return True
        name = type(exc).__name__
        if name in ("ConnectionDoesNotExistError", "InternalClientError", "InterfaceError") and "asyncpg" in (
            type(exc).__module__ or ""
        ):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None) or exc.__context__
        seen += 1
    return False


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE behind an exception, through SQLAlchemy's and asyncpg's wrappers."""
    seen = 0
    while exc is not None and seen < 5:
        state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
        if state:
            return str(state)
        exc = exc.__cause__ or getattr(exc, "orig", None)
        seen += 1
    return None


def _shape(error: GraphQLError, execution_context: Any) -> GraphQLError:
    original = error.original_error
    if isinstance(original, LodgeError):
        return error
    if error.path is None and (original is None or isinstance(original, GraphQLError) or error.nodes):
        # Before execution: a malformed document, a failed validation rule or limit, a variable
        # of the wrong type. All are the client's to fix.
        error.extensions = {**(error.extensions or {}), "code": BAD_USER_INPUT}
        return error
    if sqlstate(original) in TEXT_POSTGRES_REFUSES:
        # U+0000 in an inline literal (variables are checked up front): the client's to fix.
        return GraphQLError(
            "text may not contain the NUL character (U+0000)",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": BAD_USER_INPUT},
        )
    if sqlstate(original) == CANCELLED:
        metrics.REFUSED.labels("timeout").inc()
        return GraphQLError(
            "the operation ran past the statement timeout and was cancelled; nothing was saved: "
            "ask for less (smaller pages, fewer nested lists) or retry later",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": BAD_USER_INPUT, "reason": "statement_timeout"},
        )
    if sqlstate(original) == ABORTED:
        return GraphQLError(
            "not run: an earlier error in this operation undid its transaction",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": BAD_USER_INPUT, "reason": "transaction_aborted"},
        )
    if sqlstate(original) in RETRYABLE:
        return GraphQLError(
            "the operation collided with a concurrent one and was undone: retry it",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": CONFLICT, "retryable": True},
        )
    ctx = getattr(execution_context, "context", None)
    request_id = ctx.request_id if isinstance(ctx, Context) else ""
    operation = getattr(execution_context, "operation_name", None) or "anonymous operation"
    if original is not None and database_unavailable(original):
        log.warning("database unavailable in %s (request %s): %r", operation, request_id, original)
        return GraphQLError(
            "the database is unavailable; nothing was saved: retry shortly",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": INTERNAL, "retryable": True, "reason": "database_unavailable", "requestId": request_id},
        )
    if original is not None:
        log.error(
            "unexpected error in %s (request %s)",
            operation,
            request_id,
            exc_info=(type(original), original, original.__traceback__),
        )
    else:
        log.error("unexpected error in %s (request %s): %s", operation, request_id, error.message)
    return GraphQLError(
        "Internal server error",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": INTERNAL, "requestId": request_id},
    )
