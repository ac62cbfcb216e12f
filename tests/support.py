"""Helpers the tests share: a live server, a GraphQL client, a graphql-transport-ws client, factories."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.types import Message
from websockets.typing import Subprotocol

from app.api.pagination import encode_cursor
from app.deps import Deps
from app.main import create_app
from app.settings import Settings

REQUIRE_SERVICES = os.environ.get("LODGE_REQUIRE_SERVICES") == "1"
TRANSPORT_WS = Subprotocol("graphql-transport-ws")
TIMEOUT = 20.0
# Requests a test has in flight at once, however many it starts: enough to race every conditional
# statement, few enough that a request queued behind its peers' row locks answers within TIMEOUT
# on a slow or busy 2-core machine.
CLIENT_CONNECTIONS = 32


def need(condition: bool, reason: str) -> None:
    """Skip for lack of a server, unless CI says every server must be there."""
    if not condition:
        if REQUIRE_SERVICES:
            pytest.fail(f"LODGE_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A real uvicorn serving a real app on a loopback port."""

    app: Starlette
    deps: Deps
    port: int
    http: httpx.AsyncClient
    # The client shares the test's event loop with the server. httpx's pool rescans every queued
    # request whenever one finishes, which for hundreds of queued requests starves the server of
    # CPU; so requests beyond the pool's connections wait here, where waking one is cheap.
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CLIENT_CONNECTIONS))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        api_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if api_key:
            headers["authorization"] = f"ApiKey {api_key}"
        async with self.slots:
            response = await self.http.post(
                "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None, **auth: str | None) -> dict[str, Any]:
        body = await self.gql(query, variables, **auth)
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def error_code(self, query: str, variables: dict[str, Any] | None = None, **auth: str | None) -> str:
        body = await self.gql(query, variables, **auth)
        assert body.get("errors"), f"expected an error, got {body}"
        code: str = body["errors"][0]["extensions"]["code"]
        return code


@contextlib.asynccontextmanager
async def live_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    from app.main import build_deps

    deps = build_deps(settings, database_url)
    app = create_app(deps)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        ws_per_message_deflate=settings.websocket_compression,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        # The client lets an idle connection go before uvicorn does (its keep-alive timeout is 5 s,
        # httpx's default expiry too): reusing one the server is closing at that very moment fails
        # the request with ReadError (seen once in CI, in a gateway test after an idle pause).
        limits = httpx.Limits(
            max_connections=CLIENT_CONNECTIONS, max_keepalive_connections=CLIENT_CONNECTIONS, keepalive_expiry=2.0
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, limits=limits) as http:
            yield LiveServer(app=app, deps=deps, port=port, http=http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


class GraphQLWS:
    """A graphql-transport-ws client over a real websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, *, authorization: str | None = None, **kwargs: Any) -> AsyncIterator[GraphQLWS]:
        async with websockets.connect(url, subprotocols=[TRANSPORT_WS], open_timeout=TIMEOUT, **kwargs) as ws:
            client = cls(ws)
            payload = {"authorization": authorization} if authorization else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
            yield client

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            message: dict[str, Any] = json.loads(raw)
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            return message

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._ids += 1
        op_id = str(self._ids)
        await self.ws.send(
            json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
        )
        return op_id

    async def next_data(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        message = await self.receive(timeout)
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message["payload"]["errors"]
        data: dict[str, Any] = message["payload"]["data"]
        return data


# -- factories: plain functions over the public API, so invariants hold in test data ----------


async def asgi_post(
    server: LiveServer, path: str, headers: dict[str, str], messages: list[Message]
) -> tuple[list[Message], int]:
    """POST `path` straight to the server's ASGI app, whose receive() hands over `messages` in
    order (the ASGI protocol itself, as uvicorn speaks it), then a disconnect. Returns what the
    app sent and how many messages it asked for."""
    asked = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal asked
        asked += 1
        return messages[asked - 1] if asked <= len(messages) else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", server.port),
        "state": {},
    }
    await server.app(scope, receive, send)
    return sent, asked


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


PASSWORD = "correct horse battery staple"


async def new_user(server: LiveServer, email: str | None = None) -> str:
    data = await server.data(
        "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
        {"input": {"email": email or unique_email(), "password": PASSWORD, "name": "Test"}},
    )
    token: str = data["register"]["accessToken"]
    return token


async def new_project(server: LiveServer, token: str, name: str = "p") -> str:
    data = await server.data(
        "mutation($input: ProjectInput!) { createProject(input: $input) { id } }",
        {"input": {"name": name}},
        token=token,
    )
    project_id: str = data["createProject"]["id"]
    return project_id


async def new_api_key(server: LiveServer, token: str, project_id: str, **extra: Any) -> tuple[str, str]:
    data = await server.data(
        "mutation($input: ApiKeyInput!) { createApiKey(input: $input) { apiKey { id } secret } }",
        {"input": {"projectId": project_id, "label": "test", **extra}},
        token=token,
    )
    return data["createApiKey"]["apiKey"]["id"], data["createApiKey"]["secret"]


@dataclass
class Tenant:
    token: str
    project_id: str
    key_id: str
    secret: str


async def new_tenant(server: LiveServer) -> Tenant:
    token = await new_user(server)
    project_id = await new_project(server, token)
    key_id, secret = await new_api_key(server, token, project_id)
    return Tenant(token=token, project_id=project_id, key_id=key_id, secret=secret)


# A subscription without `after` starts at the project's head when the server has set it up,
# which a client cannot observe; tests on fresh projects replay from the very start instead.
FROM_START = encode_cursor("log", 0)
INGEST_LOGS = "mutation($inputs: [LogInput!]!) { ingestLogs(inputs: $inputs) { accepted duplicates ids } }"
LOG_ADDED = """
subscription($projectId: ID!, $after: String, $filter: LogFilter) {
  logAdded(projectId: $projectId, after: $after, filter: $filter) { id log level cursor }
}
"""


async def ingest(server: LiveServer, secret: str, logs: list[str], **fields: Any) -> list[str]:
    data = await server.data(INGEST_LOGS, {"inputs": [{"log": text, **fields} for text in logs]}, api_key=secret)
    ids: list[str] = data["ingestLogs"]["ids"]
    return ids


async def wait_for_subscriber(server: LiveServer, project_id: str, count: int = 1) -> None:
    """The hub lists the subscription (no sleeping for a message: poll the hub with a deadline)."""
    async with asyncio.timeout(10):
        while len(server.deps.hub.subscribers(f"logs:{project_id}")) < count:
            await asyncio.sleep(0.005)


async def new_admin(server: LiveServer, permissions: tuple[str, ...] = ("*",)) -> tuple[str, str]:
    """A signed-in user holding a role with `permissions`; returns (access token, user id)."""
    from app.accounts import roles

    token = await new_user(server)
    me = await server.data("{ me { id } }", token=token)
    user_id = uuid.UUID(me["me"]["id"])
    async with server.deps.db.session() as session:
        role = await roles.create_role(
            session, name=f"role-{uuid.uuid4().hex[:8]}", description=None, permissions=list(permissions)
        )
        await roles.assign_role(session, user_id=user_id, role_id=role.id, assigned_by=None)
        await session.commit()
    return token, str(user_id)


async def counted(server: LiveServer, query: str, variables: dict[str, Any], token: str) -> tuple[dict[str, Any], int]:
    """The data of one query and the number of SQL statements it ran (transaction control aside)."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = server.deps.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    server.deps.db.raw_listeners.append(statements.append)  # reads past SQLAlchemy (fetch_raw)
    try:
        data = await server.data(query, variables, token=token)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        server.deps.db.raw_listeners.remove(statements.append)
    control = ("BEGIN", "COMMIT", "ROLLBACK")
    return data, len([s for s in statements if not s.lstrip().upper().startswith(control)])
