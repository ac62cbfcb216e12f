"""`POST /ingest`: logs from log shippers (Vector, Fluent Bit, Logstash, curl), same API key and
limits as `ingestLogs`.

The contract:

- Auth: `Authorization: ApiKey <secret>` or `X-API-Key: <secret>`.
- Body: newline-delimited JSON (one object a line; blank lines are skipped), or one JSON array of
  objects (a body whose first non-blank character is `[`). `Content-Type` is not needed; msgpack
  (`application/msgpack`, Fluent Bit's default format) is refused with 415.
- `Content-Encoding`: `gzip` (or `x-gzip`), `deflate` (zlib) or `identity`; anything else (`br`,
  `zstd`, more than one coding) is 415. A body that does not decompress is 400.
- Size: the body as sent and the body once decompressed are each at most `LODGE_MAX_BODY_BYTES`
  (413 above either; decompression stops there, so a gzip bomb is never inflated whole). A
  batch holds at most `LODGE_MAX_INGEST_RECORDS` logs (20,000), each at most `LODGE_MAX_LOG_BYTES`.
- Each object is read by `app.logs.records`: the message from `log`, `message`, `msg` or `body`,
  the event time from `timestamp`, `@timestamp`, `time` or `date`, the level from `level`,
  `severity`, ... with aliases; other fields become attributes.
- The batch is stored all or nothing. The answer is `{"accepted", "duplicates", "ids"}`, or
  `{"error": {"message", "code", ..., "requestId"}}`: 400 `BAD_USER_INPUT` (a record's error has
  `line`, its 1-based position: the line of a newline-delimited body, the element of an array),
  401 `UNAUTHENTICATED`, 413 and 415 `BAD_USER_INPUT` (413 with `limit`), 503 `INTERNAL` with
  `retryable` and `Retry-After` while the database is unreachable. `requestId` is the
  `X-Request-ID` response header.

Shippers retry a 5xx or 429 and drop a batch on another 4xx, which is what these codes mean.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.api.errors import INTERNAL, BadUserInput, LodgeError, Unauthenticated
from app.api.extensions import database_unavailable
from app.deps import Deps
from app.logs import events, records, service
from app.observability import metrics

_STATUS = {"BAD_USER_INPUT": 400, "UNAUTHENTICATED": 401, "FORBIDDEN": 403}
GZIP = 16 + zlib.MAX_WBITS
DEFLATE = zlib.MAX_WBITS
ENCODINGS = {"gzip": GZIP, "x-gzip": GZIP, "deflate": DEFLATE}
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack")

log = logging.getLogger("lodge.api")


class Refused(BadUserInput):
    """Bad input that HTTP answers with a status of its own (413, 415)."""

    def __init__(self, message: str, *, status: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status


def _secret(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "apikey" and value.strip():
        return value.strip()
    if key := request.headers.get("x-api-key"):
        return key.strip()
    raise Unauthenticated("an API key is required: send `Authorization: ApiKey <secret>` or `X-API-Key`")


def _wbits(request: Request) -> int | None:
    """The zlib window bits that decode the body, None for a body sent as is."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type in MSGPACK_TYPES:
        message = (
            "Lodge reads JSON, not msgpack: send a JSON array or newline-delimited JSON (Fluent Bit: `Format json`)"
        )
        raise Refused(message, status=415)
    header = request.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in ENCODINGS:
        message = f"Content-Encoding {header!r} is not supported: send gzip, deflate or identity"
        raise Refused(message, status=415, supported=["gzip", "deflate", "identity"])
    return ENCODINGS[codings[0]]


async def read_body(chunks: AsyncIterator[bytes], *, wbits: int | None, limit: int) -> bytes:
    """The body, decompressed, refused past `limit` bytes as sent or as decompressed."""
    inflater = _Inflater(wbits, limit) if wbits is not None else None
    sent = 0
    plain = bytearray()
    async for chunk in chunks:
        sent += len(chunk)
        if sent > limit:
            raise Refused(f"request body over {limit} bytes", status=413, limit=limit)
        if inflater is not None:
            inflater.feed(chunk)
        else:
            plain += chunk
    return inflater.finish() if inflater is not None else bytes(plain)


class _Inflater:
    """zlib, asked for at most one byte past the limit at a time: a bomb stops at limit + 1."""

    def __init__(self, wbits: int, limit: int) -> None:
        self.wbits = wbits
        self.limit = limit
        self.name = "gzip" if wbits == GZIP else "deflate"
        self.out = bytearray()
        self.started = False
        self.zlib = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> None:
        self.started = self.started or bool(data)
        while data:
            if self.zlib.eof:
                if self.wbits != GZIP:
                    raise BadUserInput(f"the {self.name} body has data past its end")
                self.zlib = zlib.decompressobj(self.wbits)  # gzip allows several members, one after another
            try:
                self.out += self.zlib.decompress(data, self.limit + 1 - len(self.out))
            except zlib.error as exc:
                raise BadUserInput(f"the body is not valid {self.name}: {exc}") from None
            if len(self.out) > self.limit:
                raise Refused(f"request body over {self.limit} bytes once decompressed", status=413, limit=self.limit)
            data = self.zlib.unused_data if self.zlib.eof else self.zlib.unconsumed_tail

    def finish(self) -> bytes:
        if self.started and not self.zlib.eof:
            raise BadUserInput(f"the {self.name} body ends early (truncated?)")
        return bytes(self.out)


def parse_body(body: bytes, *, max_batch: int) -> tuple[list[service.LogItem], list[int]]:
    """The body's logs and each one's 1-based line (see the module docstring)."""
    if body.lstrip()[:1] == b"[":
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadUserInput(f"the body starts as a JSON array but is not valid JSON: {exc}") from None
        _check_count(len(data), max_batch)
        items = [records.read_record(value, line=n, where=f"record {n}") for n, value in enumerate(data, start=1)]
        return items, list(range(1, len(items) + 1))
    numbered = [(number, line) for number, line in enumerate(body.splitlines(), start=1) if line.strip()]
    _check_count(len(numbered), max_batch)
    items, lines = [], []
    for number, line in numbered:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadUserInput(f"line {number} is not valid JSON", line=number) from None
        items.append(records.read_record(value, line=number, where=f"line {number}"))
        lines.append(number)
    return items, lines


def _check_count(count: int, max_batch: int) -> None:
    """Before reading a record: a body of a million tiny logs is refused at once."""
    if count > max_batch:
        raise BadUserInput(f"at most {max_batch} logs per call, got {count}", limit=max_batch)


async def ingest_endpoint(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    settings = deps.settings
    request_id = getattr(request.state, "request_id", "")
    try:
        secret = _secret(request)
        wbits = _wbits(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_body_bytes:
            limit = settings.max_body_bytes
            raise Refused(f"request body over {limit} bytes", status=413, limit=limit)
        body = await read_body(request.stream(), wbits=wbits, limit=settings.max_body_bytes)
        async with deps.db.autocommit() as conn:
            key = await service.authenticate_api_key(conn, secret=secret)
            request.scope.setdefault("state", {})["lodge_caller"] = {"api_key_id": str(key.id)}
            deps.limiter.vouch(secret)
            items, lines = parse_body(body, max_batch=settings.max_ingest_records)
            batch = service.prepare_batch(
                items, max_batch=settings.max_ingest_records, max_bytes=settings.max_log_bytes, lines=lines
            )
            outcome = await service.ingest(conn, api_key=key, batch=batch)
    except LodgeError as exc:
        status = exc.status if isinstance(exc, Refused) else _STATUS.get(exc.code, 400)
        return JSONResponse(
            {"error": {"message": exc.message, **exc.extensions, "requestId": request_id}}, status_code=status
        )
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("database unavailable for /ingest (request %s): %r", request_id, exc)
            message = "the database is unavailable; nothing was saved: retry shortly"
            extensions = {"code": INTERNAL, "retryable": True, "reason": "database_unavailable"}
            status, headers = 503, {"retry-after": "1"}
        else:
            log.exception("unexpected error in /ingest (request %s)", request_id)
            message, extensions, status, headers = "Internal server error", {"code": INTERNAL}, 500, {}
        return JSONResponse(
            {"error": {"message": message, **extensions, "requestId": request_id}}, status_code=status, headers=headers
        )
    metrics.logs_ingested("http", new=len(outcome.inserted), duplicates=outcome.duplicates)
    if (event := outcome.event()) is not None:
        await deps.hub.publish(events.project_channel(key.project_id), event)
    return JSONResponse(
        {"accepted": len(outcome.inserted), "duplicates": outcome.duplicates, "ids": [str(i) for i in outcome.ids]}
    )
