"""OpenTelemetry (the otel extra): one span per operation, with its SQL spans nested under it."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.observability import tracing
from tests.conftest import make_settings
from tests.support import live_server, new_user


async def test_operations_and_their_sql_are_traced(database_url: str) -> None:
    settings = make_settings(otel_enabled=True)
    exporter = InMemorySpanExporter()
    tracing.configure(settings, exporter=exporter)
    async with live_server(settings, database_url) as server:
        token = await new_user(server)
        exporter.clear()
        await server.data("query Me { me { id name } }", token=token)
        bad = await server.gql('query Bad { vendor(id: "nope") { id } }')
        assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    spans = exporter.get_finished_spans()
    operations = {span.name: span for span in spans if span.name.startswith("query ")}
    me = operations["query Me"]
    assert me.attributes is not None and me.attributes["graphql.operation.name"] == "Me"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == me.context.span_id]
    statements = [str((s.attributes or {}).get("db.statement", "")) for s in children]
    assert any("FROM users" in statement for statement in statements), statements
    failed = operations["query Bad"]
    assert failed.status.status_code.name == "ERROR"
    assert (failed.attributes or {})["graphql.error.code"] == "BAD_USER_INPUT"
