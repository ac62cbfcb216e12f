"""The edge of every request: one ASGI middleware, one pass (issue 15).

For each HTTP request and websocket `Edge` does, in order:

1. its request id: a sane `X-Request-ID` kept, else a new one; in `scope["state"]` and echoed back;
2. the rate limit (`app.api.ratelimit`): over it, 429 before any work (websockets: closed with 4429);
3. the body limit: a body over `max_bytes` is refused with 413, whether or not Content-Length is
   sent (`/ingest` bounds its own, as sent and decompressed);
4. the request itself: `/graphql` by POST or GET goes straight to the GraphQL app (past
   Starlette's exception middleware and router, which have nothing to do for it), anything else
   to Starlette;
5. the access-log record and the request metrics, once answered.

These were four middlewares, each wrapping `send` and `receive` again; one pass does the same
with one wrapper each. CORS, when configured, runs inside the edge between steps 1 and 2: every
answer, a preflight too, has its request id and access record, and a browser can read a 429.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Collection
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.ratelimit import RateLimiter, is_limited, refuse
from app.observability.logs import log_request

# Endpoints that bound their bodies themselves: `POST /ingest` limits the body as sent and as
# decompressed, and answers in its own error shape (app/logs/http.py); a file's content is as
# large as the file registered, up to LODGE_FILE_MAX_BYTES (app/workflows/content.py).
SELF_LIMITED_PATHS = frozenset({"/ingest"})
SELF_LIMITED_PREFIXES = ("/files/",)

# Whole-value match (`$` would let a trailing newline through into log lines).
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        max_bytes: int,
        graphql: ASGIApp | None = None,
        exempt: Collection[str] = SELF_LIMITED_PATHS,
        cors: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.max_bytes = max_bytes
        self.graphql = graphql
        self.exempt = exempt
        # CORS (when configured) between the request id and access log, which every answer gets,
        # preflights included, and the rate limit, whose 429 a browser must be able to read.
        self.serve: ASGIApp = self._serve if cors is None else CORSMiddleware(self._serve, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                incoming = value
        text = incoming.decode("latin-1")
        request_id = text if text and _SAFE_ID.fullmatch(text) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        if kind == "websocket":
            await self._websocket(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500
        responded = False

        async def edge_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = int(message["status"])
                responded = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.serve(scope, receive, edge_send)
        except _TooLarge:
            if not responded:
                await self._too_large(edge_send)
        finally:
            log_request(scope, status, started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The rate limit, the body limit, then the request's handler."""
        if await self._refused(scope, send):
            return
        path = scope["path"]
        inner = self.app
        if self.graphql is not None and path == "/graphql" and scope["method"] in ("POST", "GET"):
            inner = self.graphql
        if path in self.exempt or path.startswith(SELF_LIMITED_PREFIXES):
            await inner(scope, receive, send)
            return
        length = next((value for name, value in scope.get("headers") or () if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise _TooLarge
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        await inner(scope, limited_receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._refused(scope, send):
            await self.app(scope, receive, send)

    async def _refused(self, scope: Scope, send: Send) -> bool:
        """Take the caller's token; over the limit, answer (429 or close 4429) and say so."""
        if not (self.limiter.enabled and is_limited(scope)):
            return False
        principal, key = self.limiter.principal(scope)
        wait = await self.limiter.take(principal, key)
        if wait <= 0:
            return False
        await refuse(scope, send, principal, wait)
        return True

    async def _too_large(self, send: Send) -> None:
        message = f"request body over {self.max_bytes} bytes"
        body = json.dumps({"errors": [{"message": message, "extensions": {"code": "BAD_USER_INPUT"}}]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
