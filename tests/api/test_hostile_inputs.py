"""Hostile input that used to be INTERNAL: text past what an index holds, JSON nested hundreds deep.

Each is BAD_USER_INPUT (POST /ingest: its 400 error), writes nothing and logs no traceback."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import pytest
import websockets

from app.api.validation import MAX_JSON_DEPTH
from app.audit.recorder import _jsonable
from tests.support import TRANSPORT_WS, GraphQLWS, LiveServer, new_admin, new_tenant

DEPTH = 600


def nested_lists(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def errors_only(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def post_raw(server: LiveServer, query: str, variables_json: str, token: str | None = None) -> Any:
    """A body with JSON that json.dumps could not even build: spliced in as text."""
    body = '{"query": %s, "variables": %s}' % (json.dumps(query), variables_json)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return await server.http.post("/graphql", content=body, headers=headers)


CREATE_ENVIRONMENT = "mutation($p: ID!, $n: String!) { createEnvironment(projectId: $p, name: $n) { id name } }"


async def test_a_12000_character_environment_name_is_bad_input_not_internal(server: LiveServer) -> None:
    t = await new_tenant(server)
    # Random text does not compress: PostgreSQL's unique index refused it (INTERNAL) before.
    name = secrets.token_urlsafe(9000)[:12000]
    body = await server.gql(CREATE_ENVIRONMENT, {"p": t.project_id, "n": name}, token=t.token)
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "name", "maxLength": 200}
    assert error["message"] == "name is longer than 200 characters"
    project = "query($id: ID!) { project(id: $id) { environments { id } } }"
    assert (await server.data(project, {"id": t.project_id}, token=t.token))["project"]["environments"] == []
    # The bound fits the index even in four-byte characters.
    widest = "".join(chr(0x1F600 + i % 80) for i in range(200))
    stored = await server.data(CREATE_ENVIRONMENT, {"p": t.project_id, "n": widest}, token=t.token)
    assert stored["createEnvironment"]["name"] == widest


async def test_stored_bounds_fit_their_indexes_in_four_byte_characters(server: LiveServer) -> None:
    """Indexed text at its declared bound, in the widest characters, is stored (not INTERNAL)."""
    admin, _ = await new_admin(server)
    wide = "".join(chr(0x1F600 + i % 80) for i in range(500))
    guild = "mutation($i: GuildInput!) { upsertGuild(input: $i) { id } }"
    await server.data(guild, {"i": {"discordId": wide[:64], "name": wide[:200]}}, token=admin)
    integration = "mutation($i: IntegrationInput!) { upsertIntegration(input: $i) { id } }"
    values = {"service": wide[:100], "externalId": wide[:500], "internalId": wide[:500]}
    await server.data(integration, {"i": values}, token=admin)
    role = "mutation($i: RoleInput!) { createRole(input: $i) { id } }"
    await server.data(role, {"i": {"name": wide[:200], "permissions": ["logs:read"]}}, token=admin)
    discord = "mutation($i: DiscordUserInput!) { upsertDiscordUser(input: $i) { id } }"
    await server.data(discord, {"i": {"discordId": wide[:255]}}, token=admin)


CREATE_WORKFLOW = 'mutation($c: JSON) { createWorkflow(input: {name: "w", configuration: $c}) { id } }'
# The caller's own: other tests' public workflows are visible on the shared server.
WORKFLOWS = "{ me { workflows { totalCount } } }"
INGEST_ONE = 'mutation($a: JSON) { ingestLog(input: {log: "x", attributes: $a}) { id } }'
LOGS = "query($p: ID!) { logs(projectId: $p) { totalCount } }"


async def test_deeply_nested_json_variables_are_bad_input(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    t = await new_tenant(server)
    with caplog.at_level(logging.WARNING, logger="lodge"):
        for deep in (nested_lists(DEPTH), nested_objects(DEPTH)):
            response = await post_raw(server, CREATE_WORKFLOW, '{"c": %s}' % deep, token=t.token)
            error = response.json()["errors"][0]
            assert error["extensions"]["code"] == "BAD_USER_INPUT", error
            assert f"at most {MAX_JSON_DEPTH} levels" in error["message"]
            response = await server.http.post(
                "/graphql",
                content='{"query": %s, "variables": {"a": {"k": %s}}}' % (json.dumps(INGEST_ONE), deep),
                headers={"content-type": "application/json", "authorization": f"ApiKey {t.secret}"},
            )
            assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", response.text
        # Deep JSON in a variable the operation does not use is ignored, not a crash.
        response = await post_raw(server, "{ me { id } }", '{"junk": %s}' % nested_lists(DEPTH), token=t.token)
        assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert not errors_only(caplog)
    assert (await server.data(WORKFLOWS, token=t.token))["me"]["workflows"]["totalCount"] == 0
    assert (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 0


async def test_json_one_level_past_the_bound_is_refused_and_at_it_is_stored(server: LiveServer) -> None:
    t = await new_tenant(server)
    at_bound: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):
        at_bound = [at_bound]
    assert (await server.data(INGEST_ONE, {"a": {"k": at_bound[0]}}, api_key=t.secret))["ingestLog"]["id"]
    body = await server.gql(INGEST_ONE, {"a": {"k": at_bound}}, api_key=t.secret)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 1


async def test_deeply_nested_inline_literals_are_bad_input(server: LiveServer) -> None:
    t = await new_tenant(server)
    for depth in (100, DEPTH):  # 100 parses (the scalar refuses it), 600 does not parse
        inline = 'mutation { ingestLog(input: {log: "x", attributes: {k: %s}}) { id } }' % nested_lists(depth)
        body = await server.gql(inline, api_key=t.secret)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
        objects = "{a: " * depth + "1" + "}" * depth
        inline = 'mutation { createWorkflow(input: {name: "w", configuration: %s}) { id } }' % objects
        body = await server.gql(inline, token=t.token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 0
    assert (await server.data(WORKFLOWS, token=t.token))["me"]["workflows"]["totalCount"] == 0


async def test_deeply_nested_ndjson_lines_are_a_400(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    t = await new_tenant(server)
    headers = {"x-api-key": t.secret}
    with caplog.at_level(logging.WARNING, logger="lodge"):
        # 600 levels orjson reads; 1,100 it refuses: both are the client's error.
        for deep in (nested_lists(DEPTH), nested_objects(DEPTH), nested_lists(1100)):
            lines = '{"log": "ok"}\n{"log": "x", "attributes": {"k": %s}}\n' % deep
            response = await server.http.post("/ingest", content=lines, headers=headers)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "BAD_USER_INPUT" and error["line"] == 2, error
    assert not errors_only(caplog)
    assert (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 0


async def test_deeply_nested_websocket_frames(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    t = await new_tenant(server)
    with caplog.at_level(logging.WARNING, logger="lodge"):
        async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
            frame = '{"id": "1", "type": "subscribe", "payload": {"query": %s, "variables": {"c": %s}}}'
            await ws.ws.send(frame % (json.dumps(CREATE_WORKFLOW), nested_lists(DEPTH)))
            message = await ws.receive()
            errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", message
            if message["type"] == "next":
                assert (await ws.receive())["type"] == "complete"
            # The connection is still usable.
            await ws.subscribe("{ me { id } }")
            assert (await ws.next_data())["me"]["id"]
        # Deeper than orjson reads: not JSON at all, which the protocol answers by closing with 4400.
        async with websockets.connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as raw:
            await raw.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await raw.recv())["type"] == "connection_ack"
            await raw.send('{"id": "1", "type": "subscribe", "payload": %s}' % nested_lists(1100))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await raw.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    assert not errors_only(caplog)
    assert (await server.data(WORKFLOWS, token=t.token))["me"]["workflows"]["totalCount"] == 0


async def test_a_body_deeper_than_the_json_parser_reads_is_bad_input(server: LiveServer) -> None:
    response = await post_raw(server, "{ me { id } }", '{"a": %s}' % nested_lists(1100))
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.http.get("/healthz")).status_code == 200


def test_audit_details_of_any_depth_are_bounded_without_recursing_without_end() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"a": deep}
    details = _jsonable({"input": deep})
    levels = 0
    while isinstance(details, dict):
        details, levels = details.get("a", details.get("input")), levels + 1
    assert details == "[nested too deeply]" and levels < 100
