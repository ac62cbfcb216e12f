"""What operators rely on: readiness, masked internal errors, CORS and origins, pool use, settings."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import websockets
from pydantic import ValidationError
from websockets.typing import Origin

from app.api.pagination import encode_cursor
from app.settings import Settings
from tests.conftest import create_database, drop_database, make_settings
from tests.support import (
    FROM_START,
    LOG_ADDED,
    TRANSPORT_WS,
    GraphQLWS,
    LiveServer,
    ingest,
    live_server,
    new_admin,
    new_tenant,
    new_user,
)


async def test_readyz_is_503_when_the_broker_is_down(database_url: str) -> None:
    # Nothing listens on port 1: Lodge starts anyway and says it is not ready.
    async with live_server(make_settings(broadcast_url="redis://127.0.0.1:1/0"), database_url) as server:
        ready = await server.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["broker"] == "down" and ready.json()["database"] == "ok"
        assert (await server.http.get("/healthz")).status_code == 200


async def test_unexpected_errors_are_masked_with_a_request_id(
    server_url: str, server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = await new_user(server)
    gone = await create_database(server_url)
    await drop_database(server_url, gone)
    # Same secret, a database that no longer exists: every statement fails unexpectedly.
    settings = make_settings(secret_key=server.deps.secret_key)
    async with live_server(settings, gone) as broken:
        with caplog.at_level(logging.ERROR, logger="lodge.api"):
            response = await broken.http.post(
                "/graphql", json={"query": "{ me { id } }"}, headers={"authorization": f"Bearer {token}"}
            )
        error = response.json()["errors"][0]
        assert error["message"] == "Internal server error"
        assert error["extensions"]["code"] == "INTERNAL"
        request_id = error["extensions"]["requestId"]
        assert request_id == response.headers["x-request-id"]
        assert any(request_id in record.getMessage() for record in caplog.records)
        assert "does not exist" not in response.text  # the cause stays in the log
        assert (await broken.http.get("/healthz")).status_code == 200
        assert (await broken.http.get("/readyz")).status_code == 503


async def test_nul_characters_are_bad_input_and_write_nothing(server: LiveServer) -> None:
    t = await new_tenant(server)
    ingest_one = "mutation($input: LogInput!) { ingestLog(input: $input) { id } }"
    for bad in ({"log": "a\x00b"}, {"log": "ok", "attributes": {"k": "v\x00"}}):
        body = await server.gql(ingest_one, {"input": bad}, api_key=t.secret)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    search = "query($p: ID!, $f: LogFilter) { logs(projectId: $p, filter: $f) { totalCount } }"
    body = await server.gql(search, {"p": t.project_id, "f": {"search": "\x00"}}, token=t.token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    response = await server.http.post("/ingest", content='{"log": "a\\u0000"}', headers={"x-api-key": t.secret})
    assert response.status_code == 400
    total = await server.data(search, {"p": t.project_id}, token=t.token)
    assert total["logs"]["totalCount"] == 0


async def test_cors_and_websocket_origins(database_url: str) -> None:
    import websockets

    settings = make_settings(cors_origins=["https://app.example"], websocket_origins=["https://app.example"])
    async with live_server(settings, database_url) as server:
        preflight = await server.http.options(
            "/graphql",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert preflight.headers["x-request-id"]  # the edge answers for preflights too
        answered = await server.http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://app.example"}
        )
        assert answered.headers["access-control-allow-origin"] == "https://app.example"
        assert answered.headers["access-control-expose-headers"] == "x-request-id" and answered.headers["x-request-id"]
        refused = await server.http.options(
            "/graphql", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
        )
        assert "access-control-allow-origin" not in refused.headers

        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(
                server.ws_url, subprotocols=[TRANSPORT_WS], origin=Origin("https://evil.example")
            ):
                pass
        async with GraphQLWS.connect(server.ws_url, origin="https://app.example"):
            pass


async def test_idle_subscribers_do_not_hold_pool_connections(database_url: str) -> None:
    settings = make_settings(db_pool_size=2, db_max_overflow=0)
    async with live_server(settings, database_url) as server:
        t = await new_tenant(server)
        async with asyncio.TaskGroup() as group:
            clients = []
            for _ in range(15):
                client = GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}")
                ws = await client.__aenter__()
                clients.append((client, ws))
                await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
            query = "query($p: ID!) { logs(projectId: $p) { totalCount } }"
            results = [group.create_task(server.data(query, {"p": t.project_id}, token=t.token)) for _ in range(10)]
        assert all(r.result()["logs"]["totalCount"] == 0 for r in results)
        await ingest(server, t.secret, ["to everyone"])
        for _, ws in clients:
            assert (await ws.next_data())["logAdded"]["log"] == "to everyone"
        for client, _ in clients:
            await client.__aexit__(None, None, None)


async def test_subscription_events_never_see_stale_rows(server: LiveServer) -> None:
    t = await new_tenant(server)
    query = "subscription($p: ID!, $a: String) { logAdded(projectId: $p, after: $a) { log project { name } } }"
    rename = "mutation($id: ID!, $n: String!) { updateProject(id: $id, input: {name: $n}) { name } }"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(query, {"p": t.project_id, "a": FROM_START})
        await ingest(server, t.secret, ["first"])
        assert (await ws.next_data())["logAdded"]["project"]["name"] == "p"
        await server.data(rename, {"id": t.project_id, "n": "renamed"}, token=t.token)
        await ingest(server, t.secret, ["second"])
        assert (await ws.next_data())["logAdded"]["project"]["name"] == "renamed"


def test_placeholder_secrets_are_refused_outside_development() -> None:
    for secret in (None, "change-me", "secret"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, environment="production", secret_key=secret)
    assert Settings(_env_file=None, environment="development").environment == "development"


async def test_nul_in_an_inline_literal_is_bad_input_too(server: LiveServer) -> None:
    token = await new_user(server)
    body = await server.gql('mutation { createProject(input: {name: "a\\u0000b"}) { id } }', token=token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    listed = await server.data("{ projects { totalCount } }", token=token)
    assert listed["projects"]["totalCount"] == 0


async def test_datetimes_outside_the_calendar_in_utc_are_bad_input(server: LiveServer) -> None:
    # Year 1 at +05:00 is year 0 in UTC: Python and PostgreSQL cannot hold it. The client hears so.
    admin, _ = await new_admin(server, ("audit:read",))
    query = "query($since: DateTime) { auditLogStats(since: $since) { action count } }"
    for since in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "yesterday", "2026-13-01T00:00:00Z"):
        body = await server.gql(query, {"since": since}, token=admin)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (since, body)
    literal = await server.gql('{ auditLogStats(since: "0001-01-01T00:00:00+05:00") { action } }', token=admin)
    assert literal["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # An offset is honoured and the value is UTC inside Lodge; no offset means UTC.
    assert "errors" not in await server.gql(query, {"since": "2026-12-02T10:00:00+05:00"}, token=admin)
    assert "errors" not in await server.gql(query, {"since": "2026-12-02T10:00:00"}, token=admin)
    # A forged keyset cursor with such a time is refused the same way, and the server stays healthy.
    forged = encode_cursor("vendor", f"0001-01-01T00:00:00+05:00|{uuid.uuid4()}")
    body = await server.gql("query($after: String) { vendors(after: $after) { totalCount } }", {"after": forged})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert (await server.http.get("/healthz")).status_code == 200


async def test_numbers_beyond_64_bits_are_stored_and_read_back_as_json(server: LiveServer) -> None:
    # jsonb prints 1e308 as a 309-digit integer: reading it back must not break the response.
    admin, _ = await new_admin(server, ("guilds:write",))
    guild = 'mutation($d: String!, $s: JSON) { upsertGuild(input: {discordId: $d, name: "g", settings: $s}) { id settings } }'
    made = await server.data(guild, {"d": uuid.uuid4().hex, "s": {"huge": 1e308, "big": 1e20}}, token=admin)
    assert made["upsertGuild"]["settings"] == {"huge": 1e308, "big": 1e20}
    again = await server.data(
        "query($id: ID!) { guild(id: $id) { settings } }", {"id": made["upsertGuild"]["id"]}, token=admin
    )
    assert again["guild"]["settings"]["big"] == 1e20
    # An inline integer beyond 64 bits in log attributes is the client's error, not INTERNAL.
    tenant = await new_tenant(server)
    body = await server.gql(
        'mutation { ingestLog(input: {log: "x", attributes: {n: 340282366920938463463374607431768211456}}) { id } }',
        api_key=tenant.secret,
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_database_outage_is_a_retryable_error_not_a_bare_500(database_url: str) -> None:
    # Nothing listens on port 1: every connection is refused, as while PostgreSQL restarts.
    down = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"
    async with live_server(make_settings(), down) as server:
        body = await server.gql("{ vendors { totalCount } }")
        error = body["errors"][0]
        assert error["extensions"]["code"] == "INTERNAL" and error["extensions"]["retryable"] is True
        assert error["extensions"]["reason"] == "database_unavailable" and error["extensions"]["requestId"]
        response = await server.http.post("/ingest", content='{"log": "x"}', headers={"x-api-key": "lodge_whatever"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["retryable"] is True and response.headers["x-request-id"]
        assert (await server.http.get("/healthz")).status_code == 200
        assert (await server.http.get("/readyz")).status_code == 503
        # A websocket whose credential cannot be checked now is closed with 1013: try again later.
        from app.accounts.security import issue_access_token

        token = issue_access_token(uuid.uuid4(), login_id=uuid.uuid4(), secret=server.deps.secret_key, ttl_seconds=60)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {token.token}"):
                pass
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_a_browser_reads_the_429(database_url: str) -> None:
    """CORS answers before the rate limit refuses: the refusal carries the CORS headers."""
    settings = make_settings(
        cors_origins=["https://app.example"],
        rate_limit_anonymous_per_second=0.001,
        rate_limit_anonymous_burst=1,
        broadcast_url="memory://",  # buckets in the process: this server's own
    )
    async with live_server(settings, database_url) as server:
        headers = {"origin": "https://app.example"}
        first = await server.http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
        assert first.status_code == 200
        refused = await server.http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
        assert refused.status_code == 429 and refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert refused.headers["access-control-allow-origin"] == "https://app.example"
        assert refused.headers["x-request-id"]
