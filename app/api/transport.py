"""Subscriptions run over a websocket (graphql-transport-ws at /graphql), never over plain HTTP.

strawberry would run a subscription sent by POST or GET as if it were a query, and its root field
would then fail as a server error. GraphiQL sends one that way when Run is clicked before its
websocket is ready, and so does any client pointed at the wrong transport: both are told where to go.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from starlette.requests import Request
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from app.api.errors import BadUserInput

MESSAGE = "subscriptions need a websocket (graphql-transport-ws) at /graphql"


class SubscriptionsNeedAWebsocket(SchemaExtension):
    """Refuses a subscription sent over HTTP, with BAD_USER_INPUT, in place of its execution.

    Listed after ValidationCache, which has validated the document by the time this hook starts:
    an invalid document is told why first. (strawberry checks for errors before the validation
    hooks end, so the refusal cannot wait until after the yield.)"""

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        if not ec.pre_execution_errors and _over_http(ec.context) and _is_subscription(ec):
            error = BadUserInput(MESSAGE, transport="graphql-transport-ws")
            ec.pre_execution_errors = [GraphQLError(error.message, original_error=error, extensions=error.extensions)]
        yield


def _over_http(context: object) -> bool:
    return isinstance(getattr(context, "request", None), Request)  # a websocket's is a WebSocket


def _is_subscription(ec: ExecutionContext) -> bool:
    try:
        return ec.graphql_document is not None and ec.operation_type == OperationType.SUBSCRIPTION
    except RuntimeError:  # no operation of that name: strawberry has said so already
        return False
