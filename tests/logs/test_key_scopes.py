"""API key scopes: an ingest-only key stores logs and reads nothing, a read-only key reads and stores
nothing, ADMIN (every key made before scopes) does both; an environment's key ingests but reads
no logs unless given READ."""

from __future__ import annotations

from typing import Any

from tests.support import (
    FROM_START,
    INGEST_LOGS,
    LOG_ADDED,
    GraphQLWS,
    LiveServer,
    new_api_key,
    new_tenant,
)

LOGS = "query($p: ID!) { logs(projectId: $p) { totalCount nodes { log } } }"
PROJECT = "query($p: ID!) { project(id: $p) { name } }"
KEY = "query($p: ID!) { project(id: $p) { apiKeys { id scopes } } }"


async def _ingest_http(server: LiveServer, secret: str) -> int:
    response = await server.http.post("/ingest", content='{"log": "over http"}', headers={"x-api-key": secret})
    return response.status_code


async def _tail_error(server: LiveServer, secret: str, project_id: str) -> dict[str, Any]:
    async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {secret}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": project_id, "after": FROM_START})
        message = await ws.receive()
    return message


async def test_each_scope_does_what_it_says(server: LiveServer) -> None:
    t = await new_tenant(server)  # t.secret: a key made without scopes, ADMIN
    _, ingest_only = await new_api_key(server, t.token, t.project_id, scopes=["INGEST"])
    _, read_only = await new_api_key(server, t.token, t.project_id, scopes=["READ"])
    keys = (await server.data(KEY, {"p": t.project_id}, token=t.token))["project"]["apiKeys"]
    assert sorted(tuple(k["scopes"]) for k in keys) == [("ADMIN",), ("INGEST",), ("READ",)]

    # Ingesting: ADMIN and INGEST, through GraphQL and POST /ingest.
    for secret in (t.secret, ingest_only):
        await server.data(INGEST_LOGS, {"inputs": [{"log": "stored"}]}, api_key=secret)
        assert await _ingest_http(server, secret) == 200
    assert await server.error_code(INGEST_LOGS, {"inputs": [{"log": "refused"}]}, api_key=read_only) == "FORBIDDEN"
    assert await _ingest_http(server, read_only) == 403

    # Reading and tailing: ADMIN and READ; the ingest-only key sees nothing, on any path.
    for secret in (t.secret, read_only):
        assert (await server.data(LOGS, {"p": t.project_id}, api_key=secret))["logs"]["totalCount"] == 4
        assert (await server.data(PROJECT, {"p": t.project_id}, api_key=secret))["project"]["name"]
    for query in (LOGS, PROJECT):
        assert await server.error_code(query, {"p": t.project_id}, api_key=ingest_only) == "FORBIDDEN"
    tail = await _tail_error(server, ingest_only, t.project_id)
    assert tail["type"] == "error" or tail["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN", tail
    # Nothing the refused key tried was stored.
    texts = [n["log"] for n in (await server.data(LOGS, {"p": t.project_id}, token=t.token))["logs"]["nodes"]]
    assert "refused" not in texts and len(texts) == 4


async def test_an_environment_key_reads_logs_only_when_scoped_to(server: LiveServer) -> None:
    t = await new_tenant(server)
    env = await server.data(
        'mutation($p: ID!) { createEnvironment(projectId: $p, name: "prod") { id } }',
        {"p": t.project_id},
        token=t.token,
    )
    environment_id = env["createEnvironment"]["id"]
    _, gateway_key = await new_api_key(server, t.token, t.project_id, environmentId=environment_id)
    _, reader = await new_api_key(
        server, t.token, t.project_id, environmentId=environment_id, scopes=["INGEST", "READ"]
    )
    await server.data(INGEST_LOGS, {"inputs": [{"log": "from the gateway"}]}, api_key=gateway_key)
    assert await server.error_code(LOGS, {"p": t.project_id}, api_key=gateway_key) == "FORBIDDEN"
    assert (await server.data(LOGS, {"p": t.project_id}, api_key=reader))["logs"]["totalCount"] == 1
    # Gateway calls are an environment key's own business, whatever its scopes (requestLogs here).
    assert (await server.data("{ requestLogs { totalCount } }", api_key=gateway_key))["requestLogs"]["totalCount"] == 0


async def test_bad_scopes_are_refused(server: LiveServer) -> None:
    t = await new_tenant(server)
    create = "mutation($input: ApiKeyInput!) { createApiKey(input: $input) { apiKey { scopes } } }"
    base = {"projectId": t.project_id, "label": "x"}
    assert await server.error_code(create, {"input": {**base, "scopes": []}}, token=t.token) == "BAD_USER_INPUT"
    assert await server.error_code(create, {"input": {**base, "scopes": ["WRITE"]}}, token=t.token) == "BAD_USER_INPUT"
    both = await server.data(create, {"input": {**base, "scopes": ["READ", "INGEST", "READ"]}}, token=t.token)
    assert both["createApiKey"]["apiKey"]["scopes"] == ["INGEST", "READ"]
