"""OpenTelemetry spans for GraphQL operations and their SQL, when LODGE_OTEL is on.

Optional: the packages come with the `otel` extra (`uv sync --extra otel`). The exporter is
OTLP over HTTP, configured by the standard OTEL_EXPORTER_OTLP_* variables.

One span per operation (named after its type and name), made current so that the SQL spans of
SQLAlchemy's instrumentation nest under it. Not one span per resolver, as strawberry's own
OpenTelemetryExtension does: its field middleware would turn off Lodge's fast completion and
cost a span per object of every list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from strawberry.extensions import SchemaExtension

from app.observability.graphql import describe

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.settings import Settings

_provider: Any = None


def configure(settings: Settings, exporter: Any = None) -> Any:
    """The process's tracer provider (set up once), or None when tracing is off."""
    global _provider
    if not settings.otel_enabled:
        return None
    if _provider is not None:
        return _provider
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("LODGE_OTEL=1 needs the otel extra: `uv sync --extra otel` (or lodge[otel])") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def instrument_engine(engine: AsyncEngine, provider: Any) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentation declares SQLAlchemy < 2.1; the event hooks it uses are unchanged in 2.1 (the
    # test of this module checks that statements are traced).
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True)


class TracingExtension(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = trace.get_tracer("lodge")
        with tracer.start_as_current_span("graphql.operation", kind=SpanKind.SERVER) as span:
            yield
            ec = self.execution_context
            kind, name, outcome = describe(ec)
            span.update_name(f"{kind} {name or '_anonymous'}")
            span.set_attribute("graphql.operation.type", kind)
            if name:
                span.set_attribute("graphql.operation.name", name)
            ctx = ec.context
            request_id = getattr(ctx, "request_id", None) if ctx is not None else None
            if request_id:
                span.set_attribute("lodge.request_id", request_id)
            if outcome != "ok":
                span.set_attribute("graphql.error.code", outcome)
                span.set_status(Status(StatusCode.ERROR, outcome))
