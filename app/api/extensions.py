"""Schema extensions: one transaction per operation, publish after commit, error policy.

The transaction wraps execution (`on_execute`), not the whole operation: over websockets strawberry
sends a result before `on_operation` finishes, and a client must never see a mutation succeed that
was then rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import GraphQLError, OperationType
from strawberry.extensions import SchemaExtension

from app.api.context import Context
from app.api.errors import BAD_USER_INPUT, INTERNAL, LodgeError

log = logging.getLogger("lodge.api")


class OperationScopeExtension(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        ctx: Context = self.execution_context.context
        if self.execution_context.operation_type == OperationType.SUBSCRIPTION:
            token = ctx.open_scope(None)
            try:
                yield
            finally:
                ctx.close_scope(token)
            return

        session = ctx.deps.db.sessionmaker()
        token = ctx.open_scope(session)
        scope = ctx.scope
        try:
            yield
            result = self.execution_context.result
            if result is not None and not result.errors:
                try:
                    await session.commit()
                except Exception as exc:
                    log.exception("commit failed (request %s)", scope.request_id)
                    raise CommitFailed(scope.request_id) from exc
                for channel, payload in scope.events:
                    await ctx.deps.hub.publish(channel, payload)
            else:
                await session.rollback()
        finally:
            await session.close()
            ctx.close_scope(token)


class CommitFailed(LodgeError):
    code = INTERNAL

    def __init__(self, request_id: str) -> None:
        super().__init__("Internal server error: nothing was saved", requestId=request_id)


class ErrorPolicy(SchemaExtension):
    """Every error leaves with an `extensions.code`; unexpected ones are masked as INTERNAL."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and getattr(result, "errors", None):
            result.errors = [self._shape(error) for error in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:  # type: ignore[override]
        if getattr(result, "errors", None):
            result.errors = [self._shape(error) for error in result.errors]
        yield

    def _shape(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if isinstance(original, LodgeError):
            return error
        if error.path is None:
            # Before execution: a malformed document, a failed validation rule or limit, a variable
            # of the wrong type. All are the client's to fix.
            error.extensions = {**(error.extensions or {}), "code": BAD_USER_INPUT}
            return error
        ctx: Context = self.execution_context.context
        request_id = ctx.request_id
        log.error(
            "unexpected error in %s (request %s)",
            self.execution_context.operation_name or "anonymous operation",
            request_id,
            exc_info=(type(original), original, original.__traceback__),
        )
        return GraphQLError(
            "Internal server error",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": INTERNAL, "requestId": request_id},
        )
