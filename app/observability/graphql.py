"""Per-operation metrics and access-log fields, from a strawberry schema extension."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from graphql import FieldNode, OperationDefinitionNode
from starlette.websockets import WebSocket
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from app.api.errors import BAD_USER_INPUT
from app.observability import metrics
from app.observability.logs import log_operation
from app.request_state import request_state

CANCELLED = "cancelled"
SHUTDOWN = "shutdown"
# Raised by strawberry before execution (no operation of the name asked for, a mutation over GET,
# no query at all): the client's to fix.
CLIENT_MISTAKES = (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError)
# The websocket's close code, as the ASGI server reported it (set by the GraphQL view).
SERVICE_RESTART = 1012


class ObservabilityExtension(SchemaExtension):
    """Counts every operation by type and outcome, times queries and mutations by name, keeps the
    gauge of running subscriptions, and hands the access log what it needs to know."""

    _subscription: str | None = None
    _valid = False

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        self._subscription = None
        self._valid = False
        raised: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            # Raised by a hook (the cost limit, a failed commit): strawberry turns it into the
            # response's error only after this hook has ended.
            raised = exc
            raise
        finally:
            self._finish(time.perf_counter() - started, raised)

    def on_validate(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        if ec.pre_execution_errors or ec.graphql_document is None:
            return
        self._valid = True
        try:
            is_subscription = ec.operation_type == OperationType.SUBSCRIPTION
        except RuntimeError:
            return
        if is_subscription:
            self._subscription = _root_field(ec.graphql_document, ec.operation_name)
            metrics.SUBSCRIPTIONS.labels(self._subscription).inc()

    def _finish(self, duration: float, raised: BaseException | None = None) -> None:
        ec = self.execution_context
        if self._subscription is not None:
            metrics.SUBSCRIPTIONS.labels(self._subscription).dec()
        kind, name, outcome = describe(ec, raised)
        _record(ec.context, kind, name, outcome, duration, valid=self._valid)


def record_operation(
    ctx: Any, kind: str, name: str | None, duration: float, *, result: Any, raised: BaseException | None
) -> None:
    """The metrics and access-log fields of a query or mutation run by the lean HTTP pipeline
    (app/api/pipeline.py), which runs only documents that validated."""
    errors = result.errors if result is not None else None
    _record(ctx, kind, name, _outcome(raised, errors), duration, valid=True)


def _record(ctx: Any, kind: str, name: str | None, outcome: str, duration: float, *, valid: bool) -> None:
    request = getattr(ctx, "request", None)
    if outcome == CANCELLED and _closed_for_restart(request):
        outcome = SHUTDOWN
    metrics.OPERATIONS.labels(kind, outcome).inc()
    if kind in ("query", "mutation"):
        # Only names of documents that validated take a label of their own.
        label = metrics.operation_label(name) if valid else "_invalid"
        metrics.LATENCY.labels(kind, label).observe(duration)
    if name is not None and (len(name) > 100 or not name.isprintable()):
        name = name[:100].encode("unicode_escape").decode()
    fields: dict[str, Any] = {
        "operation": name,
        "operation_type": kind,
        "outcome": outcome,
        **(getattr(ctx, "caller", None) or {}),
    }
    if isinstance(request, WebSocket):
        fields["request_id"] = getattr(request.state, "request_id", None)
        fields["duration_ms"] = round(duration * 1000, 2)
        log_operation(fields)
    elif request is not None:
        request_state(request.scope).operation = fields


def describe(ec: Any, raised: BaseException | None = None) -> tuple[str, str | None, str]:
    """(type, name, outcome) of a finished operation: outcome is "ok" or the first error's code
    (or the code of what a hook raised, which strawberry turns into the error after the hooks), or
    "cancelled" when it was ended from outside before it finished."""
    try:
        kind = ec.operation_type.value if ec.graphql_document is not None else "unknown"
        name = ec.operation_name
    except RuntimeError:
        kind, name = "unknown", None
    errors = ec.pre_execution_errors or (ec.result.errors if ec.result is not None else None)
    return kind, name, _outcome(raised, errors)


def _outcome(raised: BaseException | None, errors: Any) -> str:
    outcome = "ok"
    if isinstance(raised, asyncio.CancelledError | GeneratorExit):
        # Ended from outside: the client completed it or left, or the server is stopping.
        outcome = CANCELLED
    elif isinstance(raised, CLIENT_MISTAKES):
        outcome = BAD_USER_INPUT  # strawberry answers these with HTTP 400
    elif raised is not None:
        extensions = getattr(raised, "extensions", None)
        outcome = str((extensions or {}).get("code") or "INTERNAL") if isinstance(extensions, dict) else "INTERNAL"
    elif errors:
        outcome = str((errors[0].extensions or {}).get("code") or "ERROR")
    return outcome


def _closed_for_restart(request: object) -> bool:
    """The operation's websocket was closed because the server is stopping (uvicorn closes every
    websocket with 1012, service restart, before its lifespan ends)."""
    if not isinstance(request, WebSocket):
        return False
    return request_state(request.scope).ws_close_code == SERVICE_RESTART


def _root_field(document: Any, operation_name: str | None) -> str:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name is not None and definition.name.value == operation_name)
        ):
            for selection in definition.selection_set.selections:
                if isinstance(selection, FieldNode):
                    return selection.name.value
    return "unknown"
