"""What Lodge keeps about one HTTP request or websocket while it runs, typed, in one place.

ASGI gives every connection `scope["state"]` (Starlette's `request.state`): the request id stays
there under `request_id`, where Starlette code and logs look for it. Everything else Lodge notes
about a connection is a field of `RequestState`, held in that dict under one key, so no module
invents a string key of its own and every reader sees what a writer may put there.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

_KEY = "lodge"


@dataclass
class RequestState:
    # The access-log fields of the GraphQL operation an HTTP request ran (observability.graphql).
    operation: dict[str, Any] | None = None
    # Who called an endpoint that authenticates itself (`/ingest`: the API key's id), for the access log.
    caller: dict[str, Any] | None = None
    # Websockets: the close code the client (or uvicorn, 1012 on shutdown) ended the socket with.
    ws_close_code: int | None = None
    # Websockets: the task that closes the socket when its credential ends (accounts.watchdog).
    watchdog: asyncio.Task[Any] | None = None
    # Websockets: refused because the database was down: close with 1013 (try again later).
    close_retry_later: bool = False


def request_state(scope: MutableMapping[str, Any]) -> RequestState:
    """The connection's RequestState, made on first use."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get(_KEY)
    if found is None:
        found = state[_KEY] = RequestState()
    assert isinstance(found, RequestState)
    return found
