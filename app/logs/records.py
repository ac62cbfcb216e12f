"""One log record as a shipper sends it (a JSON object) read into a `service.LogItem`.

Vector, Fluent Bit, Logstash and OpenTelemetry name the same things differently. For each of the
message, the event time and the level, the first field present (not null) in this order wins:

- message: `log`, `message`, `msg`, `body`. A string wins over a structured value (Filebeat's
  `log` is an object beside its `message` string); with no string, the first value is stored as
  its JSON text (an OpenTelemetry map body).
- event time: `timestamp`, `@timestamp`, `time`, `date`. An RFC 3339 / ISO 8601 string (no offset
  means UTC), or Unix epoch time as a number or a string of digits, its unit told by magnitude:
  below 1e11 seconds (Fluent Bit's `date` double), below 1e14 milliseconds, below 1e17
  microseconds, else nanoseconds. So any time after March 1973 reads right in every unit.
- level: `level`, `severity`, `severity_text`, `severityText`, `log.level` (flat, or nested as
  `{"log": {"level": ...}}`), then OpenTelemetry's `severity_number`/`severityNumber` (1-24).
  Names are case-insensitive with aliases (`LEVEL_NAMES`); numbers are syslog severities 0-7
  (0-3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG) or pino/bunyan levels 10-60. None given: INFO.

`attributes` (an object) and `idempotencyKey` are Lodge's own. Every other field, including the
candidates that did not win, is kept in the attributes; a key that `attributes` also holds keeps
`attributes`' value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.api.errors import BadUserInput
from app.api.scalars import contains_nul
from app.api.validation import MAX_JSON_DEPTH, nested_too_deep
from app.logs import service

MESSAGE_FIELDS = ("log", "message", "msg", "body")
TIME_FIELDS = ("timestamp", "@timestamp", "time", "date")
LEVEL_FIELDS = ("level", "severity", "severity_text", "severityText", "log.level")
OTEL_SEVERITY_FIELDS = ("severity_number", "severityNumber")

LEVEL_NAMES = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "dbg": "DEBUG",
    "verbose": "DEBUG",
    "info": "INFO",
    "information": "INFO",
    "informational": "INFO",
    "notice": "INFO",
    "warn": "WARN",
    "warning": "WARN",
    "error": "ERROR",
    "err": "ERROR",
    "critical": "ERROR",
    "crit": "ERROR",
    "alert": "ERROR",
    "emerg": "ERROR",
    "emergency": "ERROR",
    "fatal": "ERROR",
    "panic": "ERROR",
}
SYSLOG_SEVERITIES = {0: "ERROR", 1: "ERROR", 2: "ERROR", 3: "ERROR", 4: "WARN", 5: "INFO", 6: "INFO", 7: "DEBUG"}
PINO_LEVELS = {10: "DEBUG", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "ERROR"}
# OpenTelemetry severity numbers come in fours: TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
OTEL_LEVELS = ("DEBUG", "DEBUG", "INFO", "WARN", "ERROR", "ERROR")
ACCEPTED_LEVELS = (
    ", ".join(sorted(LEVEL_NAMES)) + " in any case; syslog severities 0-7; pino levels 10-60; "
    "OpenTelemetry severity numbers 1-24 (in `severity_number`)"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def read_record(data: Any, *, line: int, where: str) -> service.LogItem:
    """`line` is the record's 1-based position, `where` how messages name it ("line 3")."""
    if not isinstance(data, dict):
        raise BadUserInput(f"{where} is not a JSON object", line=line)
    if contains_nul(data):
        raise BadUserInput(f"{where}: text may not contain the NUL character (U+0000)", line=line)
    used: set[str] = {"attributes", "idempotencyKey"}

    message_field = _first(data, MESSAGE_FIELDS, want=str) or _first(data, MESSAGE_FIELDS)
    if message_field is None:
        raise BadUserInput(f"{where} has no message: send one of {_names(MESSAGE_FIELDS)}", line=line)
    used.add(message_field)
    message = data[message_field]
    if not isinstance(message, str):
        if nested_too_deep(message):
            raise BadUserInput(f"{where}: `{message_field}` nests deeper than {MAX_JSON_DEPTH} levels", line=line)
        message = orjson.dumps(message).decode()

    occurred_at = None
    if (time_field := _first(data, TIME_FIELDS)) is not None:
        used.add(time_field)
        try:
            occurred_at = parse_time(data[time_field])
        except (ValueError, OverflowError):
            raise BadUserInput(
                f"{where}: `{time_field}` is not a time Lodge reads: {_short(data[time_field])} (RFC 3339, or Unix "
                "epoch seconds, milliseconds, microseconds or nanoseconds, years 1 to 9999)",
                line=line,
                field=time_field,
            ) from None

    level = "INFO"
    if (level_field := _level_field(data)) is not None:
        used.add(level_field)
        value = data["log"]["level"] if level_field == "log.level" and "log.level" not in data else data[level_field]
        parsed = parse_level(value, otel=level_field in OTEL_SEVERITY_FIELDS)
        if parsed is None:
            raise BadUserInput(
                f"{where}: unknown level {_short(value)} in `{level_field}`; accepted: {ACCEPTED_LEVELS}",
                line=line,
                field=level_field,
                accepted=sorted(LEVEL_NAMES),
            )
        level = parsed

    key = data.get("idempotencyKey")
    if key is not None and not isinstance(key, str):
        raise BadUserInput(f"{where}: `idempotencyKey` must be a string", line=line, field="idempotencyKey")
    attributes = data.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise BadUserInput(f"{where}: `attributes` must be a JSON object", line=line, field="attributes")
    if extra := {name: value for name, value in data.items() if name not in used}:
        attributes = {**extra, **(attributes or {})}
    if nested_too_deep(attributes):
        raise BadUserInput(
            f"{where}: attributes may nest at most {MAX_JSON_DEPTH} levels", line=line, maxDepth=MAX_JSON_DEPTH
        )
    return service.LogItem(
        log=message, level=level, attributes=attributes, idempotency_key=key, occurred_at=occurred_at
    )


def parse_time(value: Any) -> datetime:
    """An event time as shippers write it, in UTC (see the module docstring); ValueError if not."""
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER.fullmatch(text):
            parsed = datetime.fromisoformat(text)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        value = float(text) if "." in text else int(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a time")
    size = abs(value)
    scale = 1 if size < 1e11 else 1_000 if size < 1e14 else 1_000_000 if size < 1e17 else 1_000_000_000
    if isinstance(value, int):
        # Integer arithmetic: nanoseconds since 1970 do not fit a float's 53 bits.
        seconds, rest = divmod(value, scale)
        return _EPOCH + timedelta(seconds=seconds, microseconds=rest * 1_000_000 // scale)
    return _EPOCH + timedelta(seconds=value / scale)


def parse_level(value: Any, *, otel: bool = False) -> str | None:
    """One of models.LOG_LEVELS, or None for a level Lodge does not know."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name in LEVEL_NAMES:
            return LEVEL_NAMES[name]
        if not (name.isascii() and name.isdigit()):
            return None
        value = int(name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if otel:
        return OTEL_LEVELS[(value - 1) // 4] if 1 <= value <= 24 else None
    return SYSLOG_SEVERITIES.get(value) or PINO_LEVELS.get(value)


def _first(data: dict[str, Any], names: tuple[str, ...], want: type | None = None) -> str | None:
    for name in names:
        value = data.get(name)
        if value is not None and (want is None or isinstance(value, want)):
            return name
    return None


def _level_field(data: dict[str, Any]) -> str | None:
    for name in LEVEL_FIELDS:
        if data.get(name) is not None:
            return name
        if name == "log.level" and isinstance(data.get("log"), dict) and data["log"].get("level") is not None:
            # ECS nests it; the `log` object itself stays an attribute.
            return name
    return _first(data, OTEL_SEVERITY_FIELDS)


def _names(fields: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in fields)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
