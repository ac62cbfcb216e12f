"""The ASGI application: `create_app(deps)`, or `create_app_from_env()` for `uvicorn --factory`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from cross_web import HTTPException
from prometheus_client import start_http_server
from sqlalchemy import text
from sqlalchemy.orm import configure_mappers
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET

from app.accounts import authentication, credentials, watchdog
from app.accounts.email import sender_from_setting
from app.accounts.oidc import IdentityProvider
from app.accounts.principals import Principals
from app.api import graphiql
from app.api.context import Context
from app.api.errors import BAD_USER_INPUT, LodgeError, database_unavailable
from app.api.middleware import Edge
from app.api.pipeline import Pipeline, json_bytes
from app.api.ratelimit import RateLimiter
from app.api.schema import LodgeSchema, create_schema
from app.db import create_database, resolve_database_url
from app.deps import Deps
from app.gateway import service as gateway_service
from app.gateway.coalesce import Coalescer
from app.logs import keys
from app.logs import service as logs_service
from app.logs.http import ingest_endpoint
from app.logs.service import authenticate_api_key
from app.observability import metrics, tracing
from app.observability.logs import configure_logging
from app.pubsub import Hub
from app.request_state import request_state
from app.settings import Settings
from app.vendors.service import billing
from app.vendors.webhook import billing_webhook_endpoint
from app.workflows import content
from app.workflows import events as execution_events
from app.workflows.service import executions, files

log = logging.getLogger("lodge")


RETRY_LATER = 1013  # websocket close code: try again later


class LodgeWebSocketAdapter(ASGIWebSocketAdapter):
    async def close(self, code: int, reason: str) -> None:
        # A connection refused because the database is down is "try again later", not 4403.
        if request_state(self.ws.scope).close_retry_later:
            code, reason = RETRY_LATER, "database unavailable: retry"
        await super().close(code, reason)


class LodgeGraphQL(GraphQL[Context, None]):
    websocket_adapter_class = LodgeWebSocketAdapter

    def __init__(self, deps: Deps) -> None:
        settings = deps.settings
        protocols = [GRAPHQL_TRANSPORT_WS_PROTOCOL]
        if settings.legacy_graphql_ws:
            protocols.append(GRAPHQL_WS_PROTOCOL)
        super().__init__(
            create_schema(settings),
            subscription_protocols=protocols,
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_timeout_seconds),
            allowed_origins=settings.websocket_origins,
        )
        self.deps = deps
        self.graphiql = graphiql.load()
        schema = self.schema
        assert isinstance(schema, LodgeSchema)
        self.pipeline = Pipeline(deps, schema)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # Lodge's own page, whose files Lodge serves (strawberry's loads them from unpkg.com).
        return HTMLResponse(self.graphiql.page)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket | None = None) -> Context:
        return Context(deps=self.deps, request=request, response=response if isinstance(response, Response) else None)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # Apollo's persisted-query link sends a known hash by GET with `Accept: */*` and no
        # `query`: that is an operation, not a browser asking for GraphiQL.
        return super().should_render_graphql_ide(request) and request.query_params.get("extensions") is None

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if exc.status_code != 400:
                raise
            # A body that is not JSON (or nests deeper than orjson reads, 1024 levels) is the
            # client's to fix: said as every other GraphQL error is, not in plain text.
            body = {"errors": [{"message": exc.reason, "extensions": {"code": BAD_USER_INPUT}}]}
            return JSONResponse(body, status_code=400)

    def encode_json(self, data: object) -> str:
        return json_bytes(data).decode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            # Ordinary queries and mutations take the lean path; it hands the rest to strawberry.
            await self.pipeline.handle(scope, receive, send, self._strawberry_http)
            return
        state = request_state(scope)

        async def noting_close_code() -> Message:
            # Tells the operations the socket's end cancels why it ended (1012: the server stops).
            message = await receive()
            if message["type"] == "websocket.disconnect":
                state.ws_close_code = message.get("code")
            return message

        metrics.WEBSOCKETS.inc()
        try:
            await super().__call__(scope, noting_close_code, send)
        finally:
            metrics.WEBSOCKETS.dec()
            if state.watchdog is not None:
                state.watchdog.cancel()
                state.watchdog = None

    async def _strawberry_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    async def on_ws_connect(self, context: Context) -> Any:
        """Refuse a bad credential in `connection_init` (4403), and close the connection (4403)
        when the credential later expires or is revoked."""
        try:
            watched = await _principal_to_watch(context)
        except LodgeError as exc:
            raise ConnectionRejectionError({"message": exc.message}) from None
        except Exception as exc:
            if not database_unavailable(exc) or not isinstance(context.request, WebSocket):
                raise
            log.warning("database unavailable at connection_init: closing with %d", RETRY_LATER)
            request_state(context.request.scope).close_retry_later = True
            raise ConnectionRejectionError({"message": "database unavailable: retry"}) from None
        if watched is not None and isinstance(context.request, WebSocket):
            state = request_state(context.request.scope)
            if state.watchdog is not None:
                state.watchdog.cancel()  # the legacy protocol accepts connection_init more than once
            state.watchdog = asyncio.create_task(
                watchdog.watch(context, context.request, watched), name="lodge-ws-watchdog"
            )
        return None


async def _principal_to_watch(context: Context) -> watchdog.Watched | None:
    """The connection's credential, checked now (a bad one is refused), as what to watch."""
    creds = context.credentials
    if creds is not None and creds.scheme == "apikey":
        async with context.deps.db.session() as session:
            key = await authenticate_api_key(session, secret=creds.value)
            await session.commit()  # lastUsedAt
        keys.key_authenticated(context, key, creds.value)
        return watchdog.Watched.api_key(key.id, key.expires_at)
    viewer = await authentication.viewer(context)
    return watchdog.Watched.viewer(viewer) if viewer is not None else None


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0):  # a database that does not answer is down too
            async with deps.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    checks["broker"] = "ok" if await deps.hub.ping() else "down"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, status_code=200 if ready else 503)


def tune_garbage_collector(threshold: int) -> None:
    """A request allocates tens of thousands of short-lived objects; with CPython's default
    threshold the collector runs every few hundred and walks the whole heap of long-lived objects
    (schema, ORM, modules) far too often: it cost 40% of a large query's time here. The objects
    alive at start-up are frozen (never scanned again) and young collections run less often."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


async def every(seconds: float, what: str, job: Callable[[], Awaitable[str | None]]) -> None:
    """Run `job` every `seconds` until cancelled; what it did (a line, or None for nothing) is
    logged, and a failed run is logged and retried next time (the database may be back)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            done = await job()
            if done:
                log.info("%s", done)
        except Exception:
            log.warning("%s failed", what, exc_info=True)


async def sweep_sessions(deps: Deps) -> str | None:
    """Delete expired sessions (they stop working at expiry either way), and mark billing
    subscriptions whose end date has passed as expired."""
    async with deps.db.sessionmaker() as session:
        removed = await credentials.delete_expired_sessions(session)
        expired = await billing.expire_subscriptions(session)
        await session.commit()
    if removed or expired:
        return f"deleted {removed} expired sessions; {expired} billing subscriptions expired"
    return None


async def sweep_reservations(deps: Deps) -> str | None:
    """Return the holds of flows nobody completed before `expiresAt` (any number of instances)."""
    async with deps.db.autocommit() as conn:
        released = await gateway_service.release_all_expired(conn)
    return f"released {released} expired reservations" if released else None


async def sweep_log_retention(deps: Deps) -> str | None:
    """Delete logs older than their project's retention, in batches (any number of instances)."""
    async with deps.db.autocommit() as conn:
        deleted = await logs_service.sweep_retention(conn)
    return f"deleted {deleted} logs past their project's retention" if deleted else None


async def sweep_file_contents(deps: Deps) -> str | None:
    """Remove what deleted files stored (any number of instances), a batch per transaction."""
    storage = content.storage_of(deps)
    removed = 0
    while True:
        async with deps.db.session() as session:
            swept = await files.sweep_deleted_contents(session, delete=storage.delete)
            await session.commit()
        removed += swept
        if swept < files.SWEEP_BATCH:  # the last batch (or one with a content that would not go)
            break
    return f"removed the content of {removed} deleted files" if removed else None


async def sweep_execution_leases(deps: Deps) -> str | None:
    """Hand back the executions of runners that stopped sending heartbeats (any number of instances)."""
    async with deps.db.session() as session:
        swept = await executions.sweep_leases(session, max_attempts=deps.settings.execution_max_attempts)
        await session.commit()
    for row in swept:
        await deps.hub.publish(*execution_events.status_changed(row))
    return f"{len(swept)} executions whose runner's lease ran out were handed back" if swept else None


def build_deps(settings: Settings, database_url: str | None = None) -> Deps:
    url = database_url or resolve_database_url(settings)
    db = create_database(url, settings)
    if (provider := tracing.configure(settings)) is not None:
        tracing.instrument_engine(db.engine, provider)
    secret_key = settings.resolved_secret_key()
    return Deps(
        settings=settings,
        db=db,
        limiter=RateLimiter(
            settings, secret_key, functools.partial(authentication.bearer_bucket, secret_key=secret_key)
        ),
        hub=Hub(settings.broadcast_url, queue_bytes=settings.subscriber_queue_bytes),
        secret_key=secret_key,
        principals=Principals(seconds=settings.auth_cache_seconds),
        lanes=Coalescer(),
        compiled_caller=keys.compiled_caller,
        identity_provider=IdentityProvider.from_settings(settings),
        email_sender=sender_from_setting(settings.email_sender),
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) in the JSON shapes
    clients already parse, with a code: GraphQL's `errors` list, `/ingest`'s `error` object."""
    assert isinstance(exc, StarletteHTTPException)
    code = "NOT_FOUND" if exc.status_code == 404 else BAD_USER_INPUT
    error = {"message": exc.detail, "code": code, "requestId": getattr(request.state, "request_id", "")}
    if request.url.path == "/ingest":
        body: dict[str, object] = {"error": error}
    else:
        body = {"errors": [{"message": exc.detail, "extensions": {k: v for k, v in error.items() if k != "message"}}]}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(deps: Deps) -> Starlette:
    settings = deps.settings
    # Rows built with model_construct (reads past the ORM: fetch_raw, INSERT ... RETURNING) need
    # the mappers configured, which SQLAlchemy otherwise does on the first ORM query: a new worker
    # whose first request was such a read failed with AttributeError.
    configure_mappers()
    graphql_app = LodgeGraphQL(deps)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tune_garbage_collector(deps.settings.gc_threshold)
        await deps.hub.connect()
        sweeps = [
            ("session sweep", settings.session_sweep_seconds, sweep_sessions),
            ("reservation sweep", settings.reservation_sweep_seconds, sweep_reservations),
            ("lease sweep", settings.lease_sweep_seconds, sweep_execution_leases),
            ("retention sweep", settings.retention_sweep_seconds, sweep_log_retention),
            ("file sweep", settings.file_sweep_seconds, sweep_file_contents),
        ]
        sweepers = [
            asyncio.create_task(every(seconds, what, functools.partial(job, deps)), name=f"lodge-{what}")
            for what, seconds, job in sweeps
        ]
        sweepers.append(asyncio.create_task(deps.principals.listen(deps.hub), name="lodge-auth-cache"))
        metrics.track(deps)
        metrics_server = None
        if settings.metrics_enabled and settings.metrics_port is not None:
            metrics_server, _ = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=metrics.REGISTRY
            )
            log.info("metrics at http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
        try:
            yield
        finally:
            metrics.untrack(deps)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            for sweeper in sweepers:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await deps.hub.disconnect()
            await deps.limiter.close()
            await deps.db.dispose()

    serve_metrics_here = settings.metrics_enabled and settings.metrics_port is None
    cors = (
        {
            "allow_origins": settings.cors_origins,
            # PUT: file contents to their signed upload URL (app/workflows/content.py).
            "allow_methods": ["GET", "HEAD", "POST", "PUT", "OPTIONS"],
            "allow_headers": ["authorization", "content-type", "x-api-key", "x-request-id"],
            "expose_headers": ["x-request-id"],
        }
        if settings.cors_origins
        else None
    )
    edge = Middleware(Edge, limiter=deps.limiter, max_bytes=settings.max_body_bytes, graphql=graphql_app, cors=cors)
    middleware = [edge]
    app = Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            Route(f"{graphiql.ASSET_PATH}/{{name:path}}", graphql_app.graphiql.serve, methods=["GET"]),
            Route("/ingest", ingest_endpoint, methods=["POST"]),
            Route("/webhooks/billing", billing_webhook_endpoint, methods=["POST"]),
            Route("/files/{file_id}/content", content.upload_endpoint, methods=["PUT"]),
            Route("/files/{file_id}/content", content.download_endpoint, methods=["GET", "HEAD"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *([Route("/metrics", metrics.metrics_endpoint)] if serve_metrics_here else []),
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={StarletteHTTPException: http_error},
    )
    app.state.deps = deps
    app.state.graphql = graphql_app
    return app


def create_app_from_env() -> Starlette:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(build_deps(settings))
