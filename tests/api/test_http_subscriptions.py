"""A subscription sent over plain HTTP (GraphiQL's Run before its websocket is ready, a misconfigured
client) is a clear BAD_USER_INPUT pointing at the websocket, whatever the Accept header asks for:
no server error, no traceback, counted and logged as the client's mistake."""

from __future__ import annotations

import logging

import pytest

from app.api.transport import MESSAGE
from tests.api.test_observability import scrape, value
from tests.support import FROM_START, LOG_ADDED, GraphQLWS, LiveServer, ingest, new_tenant, wait_for_subscriber

SUBSCRIPTION = (
    'subscription OverHttp { vendorLocationUpdated(vendorId: "00000000-0000-0000-0000-000000000000") { lat } }'
)
ACCEPTS = [
    None,
    "application/json",
    "application/graphql-response+json, application/json",
    "text/event-stream",
    "multipart/mixed;subscriptionSpec=1.0,application/json",
]
OPERATIONS = "lodge_graphql_operations_total"


async def test_a_subscription_over_http_is_told_to_use_the_websocket(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await new_tenant(server)
    before = await scrape(server)
    with caplog.at_level(logging.INFO):
        for accept in ACCEPTS:
            headers = {"accept": accept} if accept else {}
            response = await server.http.post("/graphql", json={"query": SUBSCRIPTION}, headers=headers)
            assert response.status_code == 200, (accept, response.text)
            assert response.headers["content-type"].startswith("application/json"), accept
            body = response.json()
            assert body["data"] is None and body["errors"][0]["message"] == MESSAGE, (accept, body)
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        by_get = await server.http.get(
            "/graphql", params={"query": SUBSCRIPTION}, headers={"accept": "text/event-stream"}
        )
        assert by_get.status_code == 200 and by_get.json()["errors"][0]["message"] == MESSAGE
    after = await scrape(server)

    errors = [r for r in caplog.records if r.name.startswith("lodge") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    access = [r.fields for r in caplog.records if r.name == "lodge.access" and r.fields.get("operation") == "OverHttp"]  # type: ignore[attr-defined]
    assert len(access) == len(ACCEPTS) + 1
    assert {(f["operation_type"], f["outcome"], f["status"]) for f in access} == {
        ("subscription", "BAD_USER_INPUT", 200)
    }
    refused = value(after, OPERATIONS, type="subscription", outcome="BAD_USER_INPUT") - value(
        before, OPERATIONS, type="subscription", outcome="BAD_USER_INPUT"
    )
    assert refused == len(ACCEPTS) + 1
    assert value(after, OPERATIONS, type="subscription", outcome="INTERNAL") == value(
        before, OPERATIONS, type="subscription", outcome="INTERNAL"
    )

    # The server is healthy, and the same subscription over the websocket runs as ever.
    assert (await server.http.get("/healthz")).json() == {"status": "ok"}
    assert (await server.data("{ me { id } }", token=tenant.token))["me"]["id"]
    await ingest(server, tenant.secret, ["after"])
    async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {tenant.secret}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": tenant.project_id, "after": FROM_START})
        await wait_for_subscriber(server, tenant.project_id)
        assert (await ws.next_data())["logAdded"]["log"] == "after"


async def test_an_invalid_subscription_over_http_is_told_what_is_wrong_first(server: LiveServer) -> None:
    body = await server.gql("subscription { vendorLocationUpdated { nope } }")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"] != MESSAGE
