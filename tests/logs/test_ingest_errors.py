"""`POST /ingest` refuses each class of bad input with its status and code, writes nothing, names
the record by its 1-based `line`, and leaves the server healthy."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.types import Message

from app.api.errors import BadUserInput
from app.logs.http import GZIP, INFLATE_STEP, Refused, parse_body, read_body
from tests.support import LiveServer, Tenant, asgi_post, new_tenant

COUNT = "query($p: ID!) { logs(projectId: $p) { totalCount } }"


async def refused(server: LiveServer, t: Tenant, body: Any, status: int, **headers: str) -> dict[str, Any]:
    """The error of a refused request, after checking that nothing was stored and the server still ingests."""
    response = await server.http.post("/ingest", content=body, headers={"x-api-key": t.secret, **headers})
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "BAD_USER_INPUT", error
    assert error["requestId"] == response.headers["x-request-id"]
    assert (await server.data(COUNT, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 0
    assert (await server.http.get("/healthz")).status_code == 200
    return error


async def still_ingests(server: LiveServer, t: Tenant) -> None:
    ok = await server.http.post("/ingest", content=gzip.compress(b'{"log": "fine"}'), headers=_gzip(t))
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
    await server.data("mutation { __typename }")  # GraphQL still answers


def _gzip(t: Tenant) -> dict[str, str]:
    return {"x-api-key": t.secret, "content-encoding": "gzip"}


def zeros_gzip(size: int) -> bytes:
    """gzip of `size` zero bytes, made a chunk at a time (~1 KB per MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, packer.flush()])


async def test_corrupt_and_truncated_gzip_are_400(server: LiveServer) -> None:
    t = await new_tenant(server)
    good = gzip.compress(b'{"log": "a"}\n{"log": "b"}\n')
    for body in (b"this is not gzip", good[: len(good) // 2], good + b"trailing junk", b"\x1f\x8b" + b"\x00" * 20):
        error = await refused(server, t, body, 400, **{"content-encoding": "gzip"})
        assert "gzip" in error["message"], error
    error = await refused(server, t, b"not zlib at all", 400, **{"content-encoding": "deflate"})
    assert "deflate" in error["message"]
    # Two gzip members one after the other are one body (gzip allows it).
    two = gzip.compress(b'{"log": "a"}\n') + gzip.compress(b'{"log": "b"}\n')
    response = await server.http.post("/ingest", content=two, headers=_gzip(t))
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text


async def test_a_gzip_bomb_is_413_without_inflating_it(server: LiveServer) -> None:
    t = await new_tenant(server)
    limit = server.deps.settings.max_body_bytes
    bomb = zeros_gzip(64 * 1024 * 1024)  # 64 MiB of zeros in ~64 KB
    assert len(bomb) < limit // 64
    error = await refused(server, t, bomb, 413, **{"content-encoding": "gzip", "content-type": "application/json"})
    assert error["limit"] == limit and "decompressed" in error["message"], error
    # Just under the limit once decompressed is read (and refused for what it is, not for its size).
    under = gzip.compress(b" " * (limit - 20) + b'{"log": "x"}')
    response = await server.http.post("/ingest", content=under, headers=_gzip(t))
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text[:300]


async def test_decompression_stops_at_the_limit() -> None:
    """The reader pulls compressed chunks only while the output stays within the limit: a bomb of
    100 MiB stops after the first megabyte's worth, and never holds more than limit + 1 bytes."""
    bomb = zeros_gzip(100 * 1024 * 1024)
    chunks = [bomb[i : i + 512] for i in range(0, len(bomb), 512)]
    pulled = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal pulled
        for chunk in chunks:
            pulled += 1
            yield chunk

    with pytest.raises(Refused) as refusal:
        await read_body(stream(), wbits=16 + zlib.MAX_WBITS, limit=1024 * 1024)
    assert refusal.value.status == 413 and refusal.value.extensions["limit"] == 1024 * 1024
    assert pulled < len(chunks) // 50, (pulled, len(chunks))
    # The same reader returns a body within the limit whole, and names a truncated one.
    text = b"hello" * 20
    small = gzip.compress(text)
    assert await read_body(_once(small), wbits=16 + zlib.MAX_WBITS, limit=len(text)) == text
    with pytest.raises(Refused, match="decompressed"):
        await read_body(_once(gzip.compress(text + b"!")), wbits=16 + zlib.MAX_WBITS, limit=len(text))
    with pytest.raises(BadUserInput, match="ends early"):
        await read_body(_once(small[:-4]), wbits=16 + zlib.MAX_WBITS, limit=len(text))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_unknown_encodings_and_msgpack_are_415(server: LiveServer) -> None:
    t = await new_tenant(server)
    for encoding in ("br", "zstd", "compress", "gzip, gzip", "gzip, br"):
        error = await refused(server, t, b'{"log": "x"}', 415, **{"content-encoding": encoding})
        assert error["supported"] == ["gzip", "deflate", "identity"], error
    # Fluent Bit's default format, unless `Format json` is set.
    error = await refused(server, t, b"\x81\xa3log\xa1x", 415, **{"content-type": "application/msgpack"})
    assert "Format json" in error["message"]
    # identity is no coding at all.
    response = await server.http.post(
        "/ingest", content=b'{"log": "x"}', headers={"x-api-key": t.secret, "content-encoding": "identity"}
    )
    assert response.status_code == 200, response.text


async def test_too_large_bodies_are_413_with_the_limit_and_request_id(server: LiveServer) -> None:
    t = await new_tenant(server)
    limit = server.deps.settings.max_body_bytes
    line = b'{"log": "' + b"x" * 1000 + b'"}\n'
    body = line * (limit // len(line) + 1)
    assert len(body) > limit
    error = await refused(server, t, body, 413, **{"x-request-id": "too-large-1"})
    assert error == {
        "message": f"request body over {limit} bytes",
        "code": "BAD_USER_INPUT",
        "limit": limit,
        "requestId": "too-large-1",
    }

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    error = await refused(server, t, chunked(), 413)
    assert error["limit"] == limit
    # A gzip body over the limit as sent is refused before it is decompressed.
    error = await refused(server, t, os.urandom(limit + 1), 413, **{"content-encoding": "gzip"})
    assert error["limit"] == limit and "decompressed" not in error["message"]
    await still_ingests(server, t)


async def test_bad_event_times_name_the_line(server: LiveServer) -> None:
    t = await new_tenant(server)
    cases: list[tuple[bytes, int, str]] = [
        (b'{"log": "ok"}\n\n{"log": "x", "timestamp": "yesterday"}', 3, "timestamp"),
        (b'{"log": "ok"}\n{"log": "x", "date": 1e30}', 2, "date"),
        (b'{"log": "x", "@timestamp": "2024-13-01T00:00:00Z"}', 1, "@timestamp"),
        (b'{"log": "x", "time": true}', 1, "time"),
        (b'{"log": "x", "time": "10000-01-01T00:00:00Z"}', 1, "time"),
        (b'[{"log": "ok", "date": 1712345678.5}, {"log": "ok"}, {"log": "x", "date": {"s": 1}}]', 3, "date"),
    ]
    for body, line, field in cases:
        error = await refused(server, t, body, 400)
        assert error["line"] == line and error["field"] == field, (body, error)
        assert f"`{field}`" in error["message"] and str(line) in error["message"], error


async def test_bad_levels_name_the_line_and_list_the_accepted_values(server: LiveServer) -> None:
    t = await new_tenant(server)
    for body, line in (
        (b'{"log": "ok", "level": "warning"}\n{"log": "x", "level": "LOUD"}', 2),
        (b'{"log": "x", "severity": 8}', 1),
        (b'{"log": "x", "level": true}', 1),
        (b'{"log": "x", "severity_number": 25}', 1),
        (b'[{"log": "x", "level": {"name": "info"}}]', 1),
    ):
        error = await refused(server, t, body, 400)
        assert error["line"] == line, (body, error)
        assert {"warning", "fatal", "trace", "notice", "error"} <= set(error["accepted"])
        assert "syslog severities 0-7" in error["message"], error


async def test_every_record_error_names_its_line(server: LiveServer) -> None:
    t = await new_tenant(server)
    max_log = server.deps.settings.max_log_bytes
    cases: list[tuple[bytes, int]] = [
        (b'{"log": "ok"}\n\n{"no": "message"}', 3),
        (b'{"log": "ok"}\n["not", "an", "object"]', 2),
        (b'{"log": "ok"}\n{not json', 2),
        (b'{"log": "ok"}\n{"log": "x", "attributes": [1]}', 2),
        (b'{"log": "ok"}\n{"log": "x", "idempotencyKey": 5}', 2),
        (b'{"log": "ok"}\n\n\n{"log": "' + b"x" * (max_log + 1) + b'"}', 4),  # too big: found after reading
        (b'{"log": "ok"}\n{"log": "x", "idempotencyKey": ""}', 2),
        (b'[{"log": "ok"}, 5]', 2),
        (b'{"log": "a\\u0000"}', 1),
    ]
    for body, line in cases:
        error = await refused(server, t, body, 400)
        assert error["line"] == line and "index" not in error, (body[:80], error)
    # Errors of the body as a whole carry no line.
    error = await refused(server, t, b'[{"log": "x"}, {"log":', 400)
    assert "line" not in error and "JSON array" in error["message"]
    too_many = b"\n".join(b'{"log": "x"}' for _ in range(server.deps.settings.max_ingest_records + 1))
    error = await refused(server, t, too_many, 400)
    assert error["limit"] == server.deps.settings.max_ingest_records and "line" not in error
    await still_ingests(server, t)


async def asgi_ingest(server: LiveServer, headers: dict[str, str], messages: list[Message]) -> tuple[int, Any, int]:
    """POST /ingest straight to the server's ASGI app (`asgi_post`). Returns the status, the JSON
    answer and how many messages the app asked for."""
    sent, asked = await asgi_post(server, "/ingest", headers, messages)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], orjson.loads(body), asked


def _bomb_array(size: int) -> bytes:
    """`[{},{},...]` of `size` bytes: millions of dicts once parsed."""
    return b"[" + b",".join([b"{}"] * ((size - 2) // 3)) + b"]"


async def test_a_caller_without_a_valid_key_is_401_before_its_body_is_read(server: LiveServer) -> None:
    t = await new_tenant(server)
    limit = server.deps.settings.max_body_bytes
    bomb = zeros_gzip(64 * 1024 * 1024)
    cases: list[tuple[bytes, dict[str, str]]] = [
        (bomb, {"content-encoding": "gzip"}),  # 413 once inflated, for a caller with a key
        (b"\x81\xa3log\xa1x", {"content-type": "application/msgpack"}),  # 415
        (b'{"log": "x"}', {"content-encoding": "br"}),  # 415
        (b"this is not gzip", {"content-encoding": "gzip"}),  # 400
        (gzip.compress(_bomb_array(limit)), {"content-encoding": "gzip"}),  # 400, too many records
    ]
    for key in ({}, {"x-api-key": "lodge_unknown0123456789"}, {"authorization": "ApiKey nope"}):
        for body, headers in cases:
            response = await server.http.post("/ingest", content=body, headers={**key, **headers})
            assert response.status_code == 401, (key, headers, response.text)
            assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    # Not even read: the app never asks for the body (here one Content-Length says is too big).
    status, answer, asked = await asgi_ingest(
        server,
        {"x-api-key": "lodge_unknown0123456789", "content-encoding": "gzip", "content-length": str(limit + 1)},
        [{"type": "http.request", "body": bomb, "more_body": False}],
    )
    assert (status, answer["error"]["code"], asked) == (401, "UNAUTHENTICATED", 0)
    # The same request with the key is refused for what it is.
    status, answer, asked = await asgi_ingest(
        server,
        {"x-api-key": t.secret, "content-encoding": "gzip"},
        [{"type": "http.request", "body": bomb, "more_body": False}],
    )
    assert (status, answer["error"]["code"]) == (413, "BAD_USER_INPUT") and "decompressed" in answer["error"]["message"]
    await still_ingests(server, t)


async def test_a_client_gone_mid_body_is_no_internal_error(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    t = await new_tenant(server)
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"log": "first"}\n{"log": "sec', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level(logging.INFO, logger="lodge.api"):
        status, answer, _ = await asgi_ingest(server, {"x-api-key": t.secret}, messages)
    assert status == 400 and answer["error"]["code"] == "BAD_USER_INPUT", answer
    ours = [r for r in caplog.records if r.name == "lodge.api"]
    assert ours and all(r.levelno <= logging.INFO and r.exc_info is None for r in ours), ours
    assert "disconnected" in ours[0].getMessage()
    assert (await server.data(COUNT, {"p": t.project_id}, token=t.token))["logs"]["totalCount"] == 0
    await still_ingests(server, t)


async def test_too_many_records_are_refused_without_parsing_the_body(server: LiveServer) -> None:
    t = await new_tenant(server)
    limit = server.deps.settings.max_body_bytes
    max_records = server.deps.settings.max_ingest_records
    tiny_lines = b'{"log":"x"}\n' * (limit // 12)
    for body in (_bomb_array(limit), b"[" + b",".join([b'{"log":"x"}'] * (limit // 12 - 1)) + b"]", tiny_lines):
        assert len(body) <= limit
        error = await refused(server, t, gzip.compress(body), 400, **{"content-encoding": "gzip"})
        assert error["limit"] == max_records and "line" not in error, error
    # Blank lines count as lines, not records: the record after 8 MiB of them is named by its line.
    blank = limit - 100
    error = await refused(server, t, gzip.compress(b"\r\n" * (blank // 2) + b'{"no": "message"}'), 400, **_gzip(t))
    assert error["line"] == blank // 2 + 1, error
    await still_ingests(server, t)


def test_counting_records_builds_no_objects() -> None:
    """Refusing a body of millions of tiny records (or skipping millions of blank lines) costs
    little memory: before, `[{},{},...]` of 8 MiB became ~300 MB of dicts before it was counted,
    and 8 MiB of newlines a list of 8 million lines (~70 MB)."""
    size = 8 * 1024 * 1024
    bodies = [
        _bomb_array(size),
        b"[" + b",".join([b'{"log":"x"}'] * (size // 12 - 1)) + b"]",
        b'{"log":"x"}\n' * (size // 12),
        b"\n" * size + b'{"log":"x"}',
    ]
    for body in bodies:
        tracemalloc.start()
        try:
            try:
                items, _ = parse_body(body, max_batch=20_000)
            except BadUserInput as refusal:
                assert refusal.extensions["limit"] == 20_000
            else:
                assert len(items) == 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < size, (body[:20], peak)  # less than the body itself


async def test_inflating_gives_the_event_loop_turns() -> None:
    """A bomb in one chunk is inflated a step at a time, with the loop free in between."""
    limit = 16 * INFLATE_STEP
    turns = 0
    inflating = True

    async def other_requests() -> None:
        nonlocal turns
        while inflating:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_requests())
    await asyncio.sleep(0)
    before = turns
    try:
        with pytest.raises(Refused):
            await read_body(_once(zeros_gzip(4 * 1024 * 1024)), wbits=GZIP, limit=limit)
    finally:
        inflating = False
        await other
    assert turns - before >= 15, turns - before


async def test_the_limit_holds_at_every_step_boundary() -> None:
    """Exactly `limit` decompressed bytes are read, `limit + 1` refused, wherever the steps fall."""
    for size in (INFLATE_STEP - 1, INFLATE_STEP, INFLATE_STEP + 1, 3 * INFLATE_STEP, 3 * INFLATE_STEP + 7):
        text = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        for wbits, packed in ((GZIP, gzip.compress(text)), (zlib.MAX_WBITS, zlib.compress(text))):
            for piece in (len(packed), 7):
                chunks = [packed[i : i + piece] for i in range(0, len(packed), piece)]
                assert await read_body(_each(chunks), wbits=wbits, limit=size) == text
                with pytest.raises(Refused):
                    await read_body(_each(chunks), wbits=wbits, limit=size - 1)


async def _each(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
