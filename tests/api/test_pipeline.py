"""The lean HTTP pipeline answers exactly as strawberry's extension stack does, and costs less.

Every request below is sent to two real servers on one database: the shared one (lean path on)
and one with `LODGE_LEAN_PIPELINE` off, and the two answers (status and JSON) must be equal once
the values that differ by nature (new ids, request ids, times) are masked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import event, select
from sqlmodel import col
from starlette.types import Message

from app.api.persisted import Registry
from app.audit.models import AuditLog
from app.settings import Settings
from tests.support import LiveServer, asgi_post, live_server, new_api_key, new_project, new_user

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MASKED_KEYS = {"requestId", "createdAt", "updatedAt", "occurredAt", "cursor"}


@pytest.fixture(scope="module")
async def strawberry_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    # The shared server's settings (its secret key: tokens work on both), the lean path off.
    async with live_server(settings.model_copy(update={"lean_pipeline": False}), database_url) as live:
        yield live


def mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<masked>" if k in MASKED_KEYS else mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uuid>", value)
    return value


async def both(
    lean: LiveServer, plain: LiveServer, *, method: str = "POST", **request: Any
) -> tuple[int, dict[str, Any]]:
    answers = []
    for server in (lean, plain):
        response = await server.http.request(method, "/graphql", **request)
        answers.append((response.status_code, mask(response.json())))
    assert answers[0] == answers[1], f"lean path: {answers[0]}\nstrawberry: {answers[1]}"
    return answers[0]


async def test_both_paths_answer_the_same(server: LiveServer, strawberry_server: LiveServer) -> None:
    token = await new_user(server)
    auth = {"authorization": f"Bearer {token}"}
    project_id = await new_project(server, token)
    _, secret = await new_api_key(server, token, project_id)
    key = {"authorization": f"ApiKey {secret}"}
    cases: list[dict[str, Any]] = [
        {"json": {"query": "{ __typename }"}},
        {"json": {"query": "query Me { me { id email name } }"}, "headers": auth},
        {"json": {"query": "{ me { id } }"}},  # anonymous: null, no error
        {"json": {"query": "query P($id: ID!) { project(id: $id) { id name } }", "variables": {"id": project_id}}},
        {
            "json": {"query": "query P($id: ID!) { project(id: $id) { id name } }", "variables": {"id": project_id}},
            "headers": auth,
        },
        {"json": {"query": "query P($id: ID!) { project(id: $id) { id } }", "variables": {"id": str(uuid.uuid4())}}},
        {"json": {"query": "query P($id: ID!) { project(id: $id) { id } }", "variables": {"id": "not-a-uuid"}}},
        # Errors raised by resolvers, and a failed mutation whose data is cleared.
        {"json": {"query": 'mutation { createProject(input: {name: "x"}) { id } }'}},
        {"json": {"query": "mutation { deleteProject(id: $id) }"}},  # invalid: handed over
        {"json": {"query": "{ nope }"}},  # invalid: handed over
        {"json": {"query": "{ me { id } "}},  # does not parse: handed over
        {"json": {"query": "subscription { __typename }"}},  # subscriptions need a websocket
        {"json": {"query": "query A { __typename } query B { me { id } }", "operationName": "B"}, "headers": auth},
        {"json": {"query": "query A { __typename }", "operationName": "C"}},  # unknown name: handed over
        {"json": {"query": "{ __typename }", "variables": ["not", "an", "object"]}},
        {
            "json": {
                "query": "mutation($i: LogInput!) { ingestLog(input: $i) { log } }",
                "variables": {"i": {"log": "a\u0000"}},
            },
            "headers": key,
        },
        {"json": {"query": "{ vendors(first: 100000) { nodes { id } } }"}},  # over the page limit
        {"params": {"query": "{ __typename }"}, "method": "GET"},
        {"params": {"query": "query Me { me { id } }"}, "method": "GET", "headers": auth},
        {"params": {"query": 'mutation { createProject(input: {name: "x"}) { id } }'}, "method": "GET"},
        {"content": b'{"query": ', "headers": {"content-type": "application/json"}},
        {"content": b"[]", "headers": {"content-type": "application/json"}},
    ]
    for case in cases:
        method = case.pop("method", "POST")
        await both(server, strawberry_server, method=method, **case)


async def test_mutations_commit_and_audit_on_the_lean_path(server: LiveServer, strawberry_server: LiveServer) -> None:
    token = await new_user(server)
    auth = {"authorization": f"Bearer {token}"}
    mutation = "mutation($i: ProjectInput!) { createProject(input: $i) { id name } }"
    status, body = await both(
        server, strawberry_server, json={"query": mutation, "variables": {"i": {"name": "lean"}}}, headers=auth
    )
    assert status == 200 and body["data"]["createProject"]["name"] == "lean"
    assert server.app.state.graphql.pipeline.is_prepared(mutation, None)
    projects = await server.data("{ me { projects(first: 10) { nodes { name } } } }", token=token)
    assert [n["name"] for n in projects["me"]["projects"]["nodes"]] == ["lean", "lean"]
    me = await server.data("{ me { id } }", token=token)
    async with server.deps.db.session() as session:
        rows = await session.execute(
            select(col(AuditLog.action), col(AuditLog.success)).where(
                col(AuditLog.user_id) == uuid.UUID(me["me"]["id"])
            )
        )
        audited = sorted(tuple(row) for row in rows)
    assert audited == [("project.create", True), ("project.create", True), ("user.register", True)]


async def test_persisted_hash_runs_on_the_lean_path(server: LiveServer, strawberry_server: LiveServer) -> None:
    registry = Registry.from_directory(server.deps.settings.persisted_operations_dir)
    digest = next(d for d, name in registry.names.items() if name == "Vendors")
    body = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}, "variables": {"open": True}}
    status, answer = await both(server, strawberry_server, json=body)
    assert status == 200 and "vendors" in answer["data"]
    assert server.app.state.graphql.pipeline.is_prepared(registry.lookup(digest), None)


async def test_an_operation_that_reads_nothing_takes_no_connection(quiet_server: LiveServer) -> None:
    checkouts: list[object] = []

    def counted(*args: object) -> None:
        checkouts.append(args)

    pool = quiet_server.deps.db.engine.sync_engine.pool
    event.listen(pool, "checkout", counted)
    try:
        assert await quiet_server.data("{ __typename }") == {"__typename": "Query"}
        assert checkouts == []
        token = await new_user(quiet_server)
        checkouts.clear()
        assert (await quiet_server.data("{ me { id } }", token=token))["me"]["id"]
        assert len(checkouts) == 1  # authentication and the read share the operation's connection
    finally:
        event.remove(pool, "checkout", counted)


async def test_a_body_cut_short_by_a_disconnect_runs_nothing(server: LiveServer) -> None:
    """The client leaves before its whole body arrived (the ASGI server reports it): whatever part
    came is not run, though it may read as complete JSON."""
    token = await new_user(server)
    body = orjson.dumps({"query": 'mutation { createProject(input: {name: "cut short"}) { id } }'})
    incoming: list[Message] = [
        {"type": "http.request", "body": body, "more_body": True},  # more was announced...
        {"type": "http.disconnect"},  # ...and never came
    ]
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    sent, _ = await asgi_post(server, "/graphql", headers, incoming)
    assert not [m for m in sent if m["type"] == "http.response.start" and m["status"] == 200]
    projects = await server.data("{ me { projects(first: 10) { nodes { name } } } }", token=token)
    assert projects["me"]["projects"]["nodes"] == []
