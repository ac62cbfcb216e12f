"""What operators watch: /metrics in Prometheus format and one structured log record per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from app.observability.logs import JsonFormatter
from tests.conftest import make_settings
from tests.support import (
    FROM_START,
    LOG_ADDED,
    TIMEOUT,
    GraphQLWS,
    LiveServer,
    free_port,
    ingest,
    live_server,
    new_tenant,
    wait_for_subscriber,
)

OPERATIONS = "lodge_graphql_operations_total"


async def scrape(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await server.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_operations_subscriptions_and_fan_out(server: LiveServer) -> None:
    tenant = await new_tenant(server)
    before = await scrape(server)
    await server.data("query Me { me { id } }", token=tenant.token)
    bad = await server.gql("query Broken($id: ID!) { vendor(id: $id) { id } }", {"id": "not-a-uuid"})
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {tenant.secret}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": tenant.project_id, "after": FROM_START})
        await wait_for_subscriber(server, tenant.project_id)
        during = await scrape(server)
        assert value(during, "lodge_websocket_connections") >= 1
        assert value(during, "lodge_graphql_subscriptions_active", field="logAdded") >= 1
        assert value(during, "lodge_fanout_subscribers", kind="logs") >= 1
        await ingest(server, tenant.secret, ["one", "two"])
        assert (await ws.next_data())["logAdded"]["log"] == "one"
        assert (await ws.next_data())["logAdded"]["log"] == "two"
    after = await scrape(server)

    def grew(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert grew("lodge_graphql_operations_total", type="query", outcome="ok") >= 1
    assert grew("lodge_graphql_operations_total", type="query", outcome="BAD_USER_INPUT") >= 1
    assert grew("lodge_graphql_operation_duration_seconds_count", type="query", name="Me") >= 1
    assert grew("lodge_graphql_operation_duration_seconds_count", type="query", name="Broken") >= 1
    assert grew("lodge_logs_ingested_total", path="graphql", kind="new") >= 2
    assert grew("lodge_fanout_lag_seconds_count") >= 1
    assert grew("lodge_fanout_deliveries_total", path="live") >= 1
    assert grew("lodge_live_tail_catch_ups_total", reason="resume") >= 1
    assert grew("lodge_http_requests_total", route="/graphql", status="200") >= 2
    # The subscription ended with its socket.
    assert value(after, "lodge_graphql_subscriptions_active", field="logAdded") == value(
        before, "lodge_graphql_subscriptions_active", field="logAdded"
    )
    assert value(after, "lodge_db_pool_size") >= server.deps.settings.db_pool_size
    assert value(after, "process_resident_memory_bytes") > 0


async def test_operation_names_from_clients_cannot_grow_the_registry(server: LiveServer) -> None:
    from app.observability import metrics

    assert metrics.operation_label("x" * 200) == "_other"
    assert metrics.operation_label(None) == "_anonymous"
    assert metrics.operation_label("Fine_Name1") == "Fine_Name1"


async def test_metrics_can_be_turned_off_or_moved_to_another_port(database_url: str) -> None:
    async with live_server(make_settings(metrics_enabled=False), database_url) as off:
        assert (await off.http.get("/metrics")).status_code == 404
    port = free_port()
    async with live_server(make_settings(metrics_port=port), database_url) as moved:
        assert (await moved.http.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200 and "lodge_graphql_operations_total" in response.text


async def test_one_access_record_per_request_with_who_what_and_outcome(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await new_tenant(server)
    with caplog.at_level(logging.INFO, logger="lodge.access"):
        response = await server.http.post(
            "/graphql",
            json={"query": "query WhoAmI { me { id } }"},
            headers={"authorization": f"Bearer {tenant.token}", "x-request-id": "req-observability-1"},
        )
        assert response.headers["x-request-id"] == "req-observability-1"
        await server.http.post(
            "/graphql",
            json={"query": 'mutation Nope { deleteProject(id: "x") }'},
            headers={"x-request-id": "req-observability-2"},
        )
        await server.http.post(
            "/ingest", json={"log": "hi"}, headers={"x-api-key": tenant.secret, "x-request-id": "req-observability-3"}
        )
    records = {r.fields["request_id"]: r for r in caplog.records if r.name == "lodge.access"}  # type: ignore[attr-defined]
    me = await server.data("{ me { id } }", token=tenant.token)
    first = records["req-observability-1"].fields  # type: ignore[attr-defined]
    assert first["operation"] == "WhoAmI" and first["operation_type"] == "query" and first["outcome"] == "ok"
    assert first["user_id"] == me["me"]["id"] and first["status"] == 200 and first["duration_ms"] >= 0
    second = records["req-observability-2"].fields  # type: ignore[attr-defined]
    assert second["operation"] == "Nope" and second["outcome"] in ("UNAUTHENTICATED", "BAD_USER_INPUT")
    third = records["req-observability-3"].fields  # type: ignore[attr-defined]
    assert third["path"] == "/ingest" and third["api_key_id"] == tenant.key_id and third["status"] == 200
    # As a JSON line: one object, fields at the top level.
    line = json.loads(JsonFormatter().format(records["req-observability-1"]))
    assert line["request_id"] == "req-observability-1" and line["logger"] == "lodge.access"
    assert line["operation"] == "WhoAmI" and line["level"] == "info"


async def test_refusals_raised_by_hooks_count_as_errors_not_ok(server: LiveServer) -> None:
    costly = "query Costly { vendors(first: 500) { nodes { locations(first: 500) { nodes { lat } } } } }"
    before = await scrape(server)
    body = await server.gql(costly)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    after = await scrape(server)
    ok = ("lodge_graphql_operations_total", (("outcome", "ok"), ("type", "query")))
    bad = ("lodge_graphql_operations_total", (("outcome", "BAD_USER_INPUT"), ("type", "query")))
    # The scrape itself is not a GraphQL operation: nothing else ran in between.
    assert after.get(ok, 0) == before.get(ok, 0)
    assert after.get(bad, 0) == before.get(bad, 0) + 1


def operations(outcome: str, kind: str = "subscription") -> float:
    from app.observability import metrics

    sample = metrics.REGISTRY.get_sample_value(OPERATIONS, {"type": kind, "outcome": outcome})
    return sample or 0.0


def access_records(caplog: pytest.LogCaptureFixture, api_key_id: str) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "lodge.access" and r.fields.get("api_key_id") == api_key_id  # type: ignore[attr-defined]
    ]


async def test_a_subscription_ended_by_shutdown_is_counted_as_shutdown_not_internal(
    database_url: str, redis_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    before = {outcome: operations(outcome) for outcome in ("shutdown", "INTERNAL")}
    with caplog.at_level(logging.INFO):
        async with contextlib.AsyncExitStack() as client_side:
            async with live_server(make_settings(broadcast_url=redis_url or "memory://"), database_url) as server:
                tenant = await new_tenant(server)
                ws = await client_side.enter_async_context(
                    GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {tenant.secret}")
                )
                await ws.subscribe(LOG_ADDED, {"projectId": tenant.project_id, "after": FROM_START})
                await wait_for_subscriber(server, tenant.project_id)
            # The server has stopped (uvicorn waited for the subscription to end): the client was told 1012.
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert operations("shutdown") == before["shutdown"] + 1
    assert operations("INTERNAL") == before["INTERNAL"]
    (record,) = [f for f in access_records(caplog, tenant.key_id) if f["operation_type"] == "subscription"]
    assert record["outcome"] == "shutdown"
    errors = [r for r in caplog.records if r.name.startswith("lodge") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_subscription_the_client_ends_is_counted_as_cancelled(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await new_tenant(server)
    before = {outcome: operations(outcome) for outcome in ("cancelled", "INTERNAL")}
    with caplog.at_level(logging.INFO, logger="lodge.access"):
        async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {tenant.secret}") as ws:
            await ws.subscribe(LOG_ADDED, {"projectId": tenant.project_id, "after": FROM_START})
            await wait_for_subscriber(server, tenant.project_id)
        async with asyncio.timeout(TIMEOUT):  # the server notices the close on its own time
            while not access_records(caplog, tenant.key_id):
                await asyncio.sleep(0.01)
    (record,) = access_records(caplog, tenant.key_id)
    assert record["operation_type"] == "subscription" and record["outcome"] == "cancelled"
    assert operations("cancelled") == before["cancelled"] + 1
    assert operations("INTERNAL") == before["INTERNAL"]


async def test_requests_strawberry_refuses_before_execution_count_as_the_clients_mistake(server: LiveServer) -> None:
    before = operations("BAD_USER_INPUT", "unknown") + operations("BAD_USER_INPUT", "mutation")
    internal = operations("INTERNAL", "unknown") + operations("INTERNAL", "mutation")
    named = await server.http.post("/graphql", json={"query": "query A { me { id } }", "operationName": "B"})
    by_get = await server.http.get("/graphql", params={"query": 'mutation { deleteProject(id: "x") }'})
    assert named.status_code == by_get.status_code == 400
    assert named.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert operations("BAD_USER_INPUT", "unknown") + operations("BAD_USER_INPUT", "mutation") == before + 2
    assert operations("INTERNAL", "unknown") + operations("INTERNAL", "mutation") == internal
