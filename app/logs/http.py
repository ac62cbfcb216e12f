"""`POST /ingest`: logs from log shippers (Vector, Fluent Bit, Logstash, curl), same API key and
limits as `ingestLogs`.

The contract:

- Auth: `Authorization: ApiKey <secret>` or `X-API-Key: <secret>`, checked before anything else:
  without a valid key the answer is 401 whatever the body, and the body is not read.
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

import asyncio
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator
from json import scanner as json_scanner
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from app.api.errors import BAD_USER_INPUT, INTERNAL, BadUserInput, LodgeError, Unauthenticated, database_unavailable
from app.audit import recorder
from app.audit.recorder import AuditEntry, action_for
from app.deps import Deps
from app.logs import events, models, records, service
from app.logs.access import require_scope
from app.observability import metrics
from app.request_state import request_state

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
            await inflater.feed(chunk)
        else:
            plain += chunk
    return await inflater.finish() if inflater is not None else bytes(plain)


class _Inflater:
    """zlib, asked for at most one byte past the limit: a bomb stops at limit + 1.

    The output comes INFLATE_STEP bytes at a time, with a turn of the event loop between steps,
    so that inflating a body of `limit` bytes never holds the loop for more than one step."""

    def __init__(self, wbits: int, limit: int) -> None:
        self.wbits = wbits
        self.limit = limit
        self.name = "gzip" if wbits == GZIP else "deflate"
        self.out = bytearray()
        self.started = False
        self.zlib = zlib.decompressobj(wbits)

    async def feed(self, data: bytes) -> None:
        self.started = self.started or bool(data)
        while True:
            if self.zlib.eof:
                if not data:
                    return
                if self.wbits != GZIP:
                    raise BadUserInput(f"the {self.name} body has data past its end")
                self.zlib = zlib.decompressobj(self.wbits)  # gzip allows several members, one after another
            want = min(INFLATE_STEP, self.limit + 1 - len(self.out))  # never 0, which zlib takes for "no limit"
            try:
                piece = self.zlib.decompress(data, want)
            except zlib.error as exc:
                raise BadUserInput(f"the body is not valid {self.name}: {exc}") from None
            self.out += piece
            if len(self.out) > self.limit:
                raise Refused(f"request body over {self.limit} bytes once decompressed", status=413, limit=self.limit)
            data = self.zlib.unused_data if self.zlib.eof else self.zlib.unconsumed_tail
            if not data and len(piece) < want:
                return  # all input used, and zlib holds no output back (a full step may have)
            await asyncio.sleep(0)

    async def finish(self) -> bytes:
        await self.feed(b"")  # output that a last full step held back
        if self.started and not self.zlib.eof:
            raise BadUserInput(f"the {self.name} body ends early (truncated?)")
        return bytes(self.out)


# What parsing a body within LODGE_MAX_BODY_BYTES costs, measured on 8 MiB bodies:
# - orjson holds the GIL while it parses: ~120 ms for shippers' records (~130 bytes each), making
#   ~17 bytes of Python objects per byte of body (~150 MB); the densest JSON, `[{},{},...]` or
#   `[[],[],...]`, takes 0.2-0.4 s and ~36 bytes per byte (~300 MB). Only the body limit bounds
#   this: one valid record whose attributes hold `[{},{},...]` is as dense.
# - Counting the records costs less, and comes first: newline-delimited bodies are counted line by
#   line and refused at `max_batch + 1` lines without reading the rest (blank lines are skipped by
#   C scans, SCAN_STEP bytes at a time); an array that holds more than `max_batch` elements within
#   its first ARRAY_PROBE_BYTES_PER_RECORD * (max_batch + 1) bytes (tiny elements, the cheapest way
#   to send too many) is refused before orjson sees it; any other array is counted once parsed,
#   before a record is read.
# - A body over INLINE_BYTES is parsed, read and checked in a worker thread: reading the records
#   (~10 us each, 0.2 s for 20,000) then lets the event loop run, though orjson's parse does not.
INFLATE_STEP = 64 * 1024
INLINE_BYTES = 16 * 1024
ARRAY_PROBE_BYTES_PER_RECORD = 16
SCAN_STEP = 1024 * 1024
SPACE_BYTES = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips
NEWLINE = ord("\n")
_SPACE = re.compile(b"[" + re.escape(SPACE_BYTES) + b"]*")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


async def read_batch(body: bytes, *, max_batch: int, max_bytes: int) -> service.Batch:
    """The body's logs, checked and ready to store; read in a worker thread past INLINE_BYTES."""
    if len(body) <= INLINE_BYTES:
        return _read_batch(body, max_batch, max_bytes)
    return await asyncio.to_thread(_read_batch, body, max_batch, max_bytes)


def _read_batch(body: bytes, max_batch: int, max_bytes: int) -> service.Batch:
    items, lines = parse_body(body, max_batch=max_batch)
    return service.prepare_batch(items, max_batch=max_batch, max_bytes=max_bytes, lines=lines)


def parse_body(body: bytes, *, max_batch: int) -> tuple[list[service.LogItem], list[int]]:
    """The body's logs and each one's 1-based line (see the module docstring)."""
    first = _skip_space(body, 0)
    if body[first : first + 1] == b"[":
        return _read_array(body, max_batch)
    return _read_lines(body, _line_spans(body, max_batch))


def _read_array(body: bytes, max_batch: int) -> tuple[list[service.LogItem], list[int]]:
    _refuse_plainly_long_array(body, max_batch)
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadUserInput(f"the body starts as a JSON array but is not valid JSON: {exc}") from None
    if len(data) > max_batch:
        raise _too_many(max_batch, len(data))
    items = [records.read_record(value, line=n, where=f"record {n}") for n, value in enumerate(data, start=1)]
    return items, list(range(1, len(items) + 1))


def _refuse_plainly_long_array(body: bytes, max_batch: int) -> None:
    """Refuse an array whose first elements alone are more than `max_batch`, before parsing it.

    Sound (a body it refuses has too many records) and cheap: it reads at most
    ARRAY_PROBE_BYTES_PER_RECORD * (max_batch + 1) bytes, element by element, with the standard
    library's scanner keeping nothing; so `[{},{},...]` is refused after ~60 KB instead of
    becoming millions of dicts. Anything it cannot tell (bigger elements, a syntax error) is left
    to orjson, which reads the whole body and counts."""
    if body.count(b",") < max_batch:
        return  # at most max_batch elements
    window = body[: ARRAY_PROBE_BYTES_PER_RECORD * (max_batch + 1)].decode("latin-1")  # one char a byte
    if _count_elements(window, stop=max_batch + 1) > max_batch:
        raise _too_many(max_batch)


def _count_elements(window: str, *, stop: int) -> int:
    """The elements of the array that starts `window`, up to `stop` (0 when it cannot tell)."""
    position = _after_space(window, window.index("[") + 1)
    count = 0
    try:
        while count < stop and window[position : position + 1] not in ("", "]"):
            position = _after_space(window, _SKIP(window, position)[1])
            count += 1
            if window[position : position + 1] != ",":
                break
            position = _after_space(window, position + 1)
    except (StopIteration, ValueError, RecursionError):
        return 0
    return count


def _after_space(text: str, position: int) -> int:
    space = _JSON_SPACE.match(text, position)
    return space.end() if space is not None else position


def _nothing(*_: Any) -> None:
    return None


# One JSON value from a position, read and dropped (objects and numbers are not even built).
_SKIP = json_scanner.make_scanner(
    json.JSONDecoder(  # type: ignore[arg-type]  # typeshed asks for a scanner; it reads a decoder's hooks
        object_pairs_hook=_nothing, parse_float=_nothing, parse_int=_nothing, parse_constant=_nothing
    )
)


def _line_spans(body: bytes, max_batch: int) -> list[tuple[int, int, int]]:
    """(line number, start, end) of each non-blank line, refused at `max_batch + 1` of them.

    Lines break where bytes.splitlines() breaks them (\\n, \\r, \\r\\n). Blank lines are skipped by C
    scans (a body of 8 MiB of newlines is no list of millions of lines), a step of SCAN_STEP bytes
    at a time so that another thread (the event loop) may run in between."""
    spans: list[tuple[int, int, int]] = []
    size = len(body)
    number, position = 1, 0  # the number of the line at `position`, where the last line ended
    next_lf = next_cr = -1  # the next \n and \r at or after the current line's first byte
    while position < size:
        if body[position] == NEWLINE and position + 1 < size and body[position + 1] not in SPACE_BYTES:
            first = start = position + 1  # the usual case: one \n, then the next record
            number += 1
        else:
            if (first := _skip_space(body, position)) == size:
                break
            previous_end = max(body.rfind(b"\n", position, first), body.rfind(b"\r", position, first))
            start = previous_end + 1 if previous_end >= 0 else position
            number += body.count(b"\n", position, start) + body.count(b"\r", position, start)
            number -= body.count(b"\r\n", position, start)
        if next_lf < first:
            next_lf = _find(body, b"\n", first)
        if next_cr < first:
            next_cr = _find(body, b"\r", first)
        if len(spans) == max_batch:
            raise _too_many(max_batch)
        position = min(next_lf, next_cr)
        spans.append((number, start, position))
    return spans


def _skip_space(body: bytes, position: int) -> int:
    """The position of the first byte from `position` on that bytes.strip() would keep, or the size."""
    while position < len(body):
        stop = min(position + SCAN_STEP, len(body))
        space = _SPACE.match(body, position, stop)
        end = space.end() if space is not None else position
        if end < stop:
            return end
        position = end
    return len(body)


def _find(body: bytes, byte: bytes, start: int) -> int:
    found = body.find(byte, start)
    return found if found >= 0 else len(body)


def _read_lines(body: bytes, spans: list[tuple[int, int, int]]) -> tuple[list[service.LogItem], list[int]]:
    items, lines = [], []
    for number, start, end in spans:
        try:
            value = orjson.loads(body[start:end])
        except orjson.JSONDecodeError:
            raise BadUserInput(f"line {number} is not valid JSON", line=number) from None
        items.append(records.read_record(value, line=number, where=f"line {number}"))
        lines.append(number)
    return items, lines


def _too_many(max_batch: int, count: int | None = None) -> BadUserInput:
    """Before reading a record: a body of a million tiny logs is refused at once (uncounted)."""
    got = "more" if count is None else count
    return BadUserInput(f"at most {max_batch} logs per call, got {got}", limit=max_batch)


INGEST_ACTION, INGEST_RESOURCE = action_for("ingest_logs")


async def _audit(conn: AsyncConnection, request: Request, request_id: str, entry: AuditEntry) -> None:
    try:
        await recorder.write_for_request(conn, viewer=None, request=request, request_id=request_id, entries=[entry])
    except Exception:
        log.exception("could not write the audit row of /ingest (request %s)", request_id)


async def ingest_endpoint(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    settings = deps.settings
    request_id = getattr(request.state, "request_id", "")
    key: Any = None
    submitted: int | None = None
    try:
        # The key first: a caller without a valid one learns nothing of the body rules, and
        # makes the server read (or inflate) nothing. The connection goes back to the pool
        # while the body arrives, and another is taken to store it.
        secret = _secret(request)
        key = service.remembered_api_key(deps.principals, secret)
        if key is None:
            async with deps.db.autocommit() as conn:
                key = await service.authenticate_api_key_cached(deps.principals, conn, secret=secret)
        request_state(request.scope).caller = {"api_key_id": str(key.id)}
        require_scope(key, models.INGEST)
        deps.limiter.vouch(secret)
        wbits = _wbits(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_body_bytes:
            limit = settings.max_body_bytes
            raise Refused(f"request body over {limit} bytes", status=413, limit=limit)
        body = await read_body(request.stream(), wbits=wbits, limit=settings.max_body_bytes)
        batch = await read_batch(body, max_batch=settings.max_ingest_records, max_bytes=settings.max_log_bytes)
        del body  # only the batch is needed while it is stored
        submitted = len(batch.items)
        async with deps.db.autocommit() as conn:
            # Again, now that the body is in: the key may have been revoked while it arrived (a
            # revocation makes this process forget the key, so this asks PostgreSQL then).
            key = await service.authenticate_api_key_cached(deps.principals, conn, secret=secret)
            outcome = await service.ingest(conn, api_key=key, batch=batch)
            # As ingestLogs: one audit row, counts and ids only. The logs are committed already
            # (the ingest statement commits by itself), so a failure here is logged, not answered.
            details = service.ingestion_audit(submitted, len(outcome.inserted), outcome.duplicates, outcome.ids)
            await _audit(conn, request, request_id, AuditEntry(INGEST_ACTION, INGEST_RESOURCE, None, details))
    except LodgeError as exc:
        if key is not None:  # a known key's request refused (its body, a revocation): recorded as failed
            counts = {"submitted": submitted} if submitted is not None else None
            entry = AuditEntry(INGEST_ACTION, INGEST_RESOURCE, None, counts, False, exc.message)
            async with deps.db.autocommit() as conn:
                await _audit(conn, request, request_id, entry)
        status = exc.status if isinstance(exc, Refused) else _STATUS.get(exc.code, 400)
        return JSONResponse(
            {"error": {"message": exc.message, **exc.extensions, "requestId": request_id}}, status_code=status
        )
    except ClientDisconnect:
        # The client hung up before sending its whole body: nothing was saved, and nobody reads this.
        log.info("client disconnected during its /ingest body (request %s); nothing was saved", request_id)
        message = "the client disconnected before sending the whole body; nothing was saved"
        return JSONResponse(
            {"error": {"message": message, "code": BAD_USER_INPUT, "requestId": request_id}}, status_code=400
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
