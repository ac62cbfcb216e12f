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

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.api.context import Context, OperationScope
from app.api.errors import INTERNAL, BadUserInput, LodgeError, database_unavailable
from app.api.scalars import contains_nul
from app.audit import recorder as audit

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
    operation's transaction (`OperationScope.stands`) stands either way, and is audited as done."""
    await scope.settle()  # nothing may still use the session when it commits or rolls back
    if scope.committed_apart is not None:
        # The change is committed on a connection of its own (ingestion, a gateway batch; such a
        # field stands alone in its operation). It stands whatever failed after it (a nested
        # field): its audit rows say it happened, and need no transaction, only their INSERT.
        if scope.audit:
            try:
                async with ctx.deps.db.autocommit() as conn:
                    await audit.write(conn, ctx=ctx, entries=scope.audit)
            except Exception as exc:
                log.error(
                    "audit row lost after a committed change (%s; request %s): %r",
                    scope.committed_apart,
                    scope.request_id,
                    exc,
                )
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
    changes = ctx.deps.principals.channel
    for channel, payload in events:
        if channel == changes:
            ctx.deps.principals.announce(payload["channel"])
    for channel, payload in events:
        await ctx.deps.hub.publish(channel, payload, essential=channel == changes)


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
