"""Errors clients can act on, each with one `extensions.code` from API.md, and the error policy:
how any other exception (a database's, a library's) is classified before a client sees it."""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError

from app.observability import metrics

log = logging.getLogger("lodge.api")

BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"
RATE_LIMITED = "RATE_LIMITED"
INTERNAL = "INTERNAL"


class LodgeError(Exception):
    """Raised by services and resolvers; shown to the client as is, with `extensions.code`."""

    code = INTERNAL

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code, **details}


class BadUserInput(LodgeError):
    code = BAD_USER_INPUT


class Unauthenticated(LodgeError):
    code = UNAUTHENTICATED


class Forbidden(LodgeError):
    code = FORBIDDEN


class NotFound(LodgeError):
    code = NOT_FOUND


class Conflict(LodgeError):
    code = CONFLICT


# -- the error policy -------------------------------------------------------------------------------


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
    request_id = str(getattr(getattr(execution_context, "context", None), "request_id", "") or "")
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
