"""The drills' clients, each request recorded with what happened to it: steady ingestion that remembers
what was acknowledged, `/readyz` probes, live-tail subscribers that resume from their cursor, and
`every` to run them at a steady rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from bench.common import Tenant
from bench.drills.cluster import TIMEOUT, Cluster

TRANSPORT_WS = Subprotocol("graphql-transport-ws")

INGEST_LOG = "mutation($input: LogInput!) { ingestLog(input: $input) { id cursor } }"
INGEST_LOGS = "mutation($inputs: [LogInput!]!) { ingestLogs(inputs: $inputs) { accepted duplicates ids } }"
LOGS = """query($p: ID!, $filter: LogFilter, $count: Boolean!) {
  logs(projectId: $p, filter: $filter, last: 50) { totalCount @include(if: $count) nodes { id level log } }
}"""
TAIL = "subscription($p: ID!, $after: String) { logAdded(projectId: $p, after: $after) { id cursor createdAt } }"


@dataclass
class Result:
    path: str
    sent: float  # drill clock
    latency: float
    outcome: str  # ok | error | hang (no answer within TIMEOUT) | dropped (connection closed unanswered) | unreachable
    status: int | None = None
    code: str | None = None  # extensions.code / error.code; "(none)" when an error carried none
    request_id: str = ""
    note: str = ""


class Recorder:
    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.results: list[Result] = []

    async def call(
        self, path: str, send: Callable[[], Awaitable[httpx.Response]], accept: Callable[[Any], bool]
    ) -> tuple[Result, Any]:
        """Send one request; `accept(json body)` says whether a 200 is a success."""
        sent = self.c.now()
        start = time.monotonic()
        body: Any = None
        try:
            response = await send()
        except httpx.TimeoutException as exc:
            result = Result(path, sent, time.monotonic() - start, "hang", note=type(exc).__name__)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The server closed the connection without an answer.
            result = Result(path, sent, time.monotonic() - start, "dropped", note=f"{type(exc).__name__}: {exc}")
        except httpx.TransportError as exc:
            result = Result(path, sent, time.monotonic() - start, "unreachable", note=f"{type(exc).__name__}: {exc}")
        else:
            latency = time.monotonic() - start
            request_id = response.headers.get("x-request-id", "")
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code == 200 and body is not None and accept(body):
                result = Result(path, sent, latency, "ok", 200, request_id=request_id)
            else:
                code, detail = error_code(body)
                result = Result(
                    path,
                    sent,
                    latency,
                    "error",
                    response.status_code,
                    code,
                    request_id=detail.get("requestId", request_id) or "(no request id)",
                    note=detail.get("message") or response.text[:80],
                )
        self.results.append(result)
        return result, body


def error_code(body: Any) -> tuple[str, dict[str, Any]]:
    """The error's code from a GraphQL body (`errors[0].extensions`) or a /ingest body (`error`)."""
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            extensions = first.get("extensions") or {}
            return str(extensions.get("code", "(none)")), {**extensions, "message": first.get("message", "")}
        if isinstance(body.get("error"), dict):
            return str(body["error"].get("code", "(none)")), body["error"]
    return "(none)", {}


def graphql_ok(field_name: str) -> Callable[[Any], bool]:
    return lambda body: not body.get("errors") and (body.get("data") or {}).get(field_name) is not None


class Ingest:
    """Steady ingestion with an idempotency key per log; remembers which logs were acknowledged."""

    def __init__(self, c: Cluster, rec: Recorder, client: httpx.AsyncClient, tenant: Tenant, batch: int) -> None:
        self.c, self.rec, self.client, self.batch = c, rec, client, batch
        self.key = {"authorization": f"ApiKey {tenant.secret}"}
        self.acked: dict[str, str] = {}  # idempotency key -> id
        self.unacked: dict[str, Result] = {}  # idempotency key -> the failed request that carried it
        self.count = 0

    def _items(self, worker: str) -> list[dict[str, Any]]:
        items = []
        for i in range(self.batch):
            self.count += 1
            items.append(
                {
                    "log": f"drill {worker} {self.count} request served in {self.count % 250} ms",
                    "level": ("INFO", "WARN", "ERROR")[self.count % 3],
                    "attributes": {"route": "/checkout", "i": i},
                    "idempotencyKey": f"{worker}-{self.count}",
                }
            )
        return items

    def _settle(self, result: Result, items: list[dict[str, Any]], ids: list[str] | None) -> None:
        keys = [item["idempotencyKey"] for item in items]
        if result.outcome == "ok" and ids is not None and len(ids) == len(keys):
            self.acked.update(zip(keys, ids, strict=True))
        else:
            self.unacked.update(dict.fromkeys(keys, result))

    async def ndjson(self, worker: str) -> Result:
        items = self._items(worker)
        content = "\n".join(json.dumps(item) for item in items)
        result, body = await self.rec.call(
            "POST /ingest",
            lambda: self.client.post("/ingest", content=content, headers=self.key),
            lambda b: isinstance(b.get("ids"), list),
        )
        self._settle(result, items, body.get("ids") if result.outcome == "ok" else None)
        return result

    async def graphql(self, worker: str) -> Result:
        items = self._items(worker)
        payload = {"query": INGEST_LOGS, "variables": {"inputs": items}}
        result, body = await self.rec.call(
            "ingestLogs",
            lambda: self.client.post("/graphql", json=payload, headers=self.key),
            graphql_ok("ingestLogs"),
        )
        self._settle(result, items, body["data"]["ingestLogs"]["ids"] if result.outcome == "ok" else None)
        return result


async def every(period: float, stop: asyncio.Event, work: Callable[[], Awaitable[Any]]) -> None:
    """Call `work` every `period` seconds (a steady rate, not as fast as possible) until `stop`."""
    next_at = time.monotonic()
    while not stop.is_set():
        await work()
        next_at += period
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()  # fell behind (a slow request): do not burst to catch up
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, delay))


@dataclass
class Probe:
    """GET /readyz every half second (one at a time, as an orchestrator's probe would)."""

    c: Cluster
    samples: list[tuple[float, float, int | None, dict[str, Any]]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        async with self.c.http() as client:

            async def once() -> None:
                sent, start = self.c.now(), time.monotonic()
                try:
                    response = await client.get("/readyz")
                    status, body = response.status_code, response.json()
                except httpx.TimeoutException:
                    status, body = None, {"hang": f"no answer within {TIMEOUT:.0f} s"}
                except (httpx.TransportError, ValueError) as exc:
                    status, body = None, {"error": type(exc).__name__}
                self.samples.append((sent, time.monotonic() - start, status, body))

            await every(0.5, stop, once)

    def transitions(self) -> list[str]:
        """Each change of answer (or of slow / fast: over 2 s is slow), with when it was asked."""
        out: list[str] = []
        previous: tuple[Any, ...] | None = None
        for t, latency, status, body in self.samples:
            state = (status, json.dumps(body, sort_keys=True), latency > 2)
            if state != previous:
                out.append(
                    f"t={t:6.1f}s  HTTP {status}  {json.dumps(body, sort_keys=True)}  (answered in {latency:.1f} s)"
                )
                previous = state
        return out

    def first(self, since: float, test: Callable[[int | None, dict[str, Any]], bool]) -> float | None:
        return next((t for t, _, status, body in self.samples if t >= since and test(status, body)), None)

    def hangs(self) -> int:
        return sum(1 for _, _, _, body in self.samples if "hang" in body)


class Tail:
    """A live-tail subscriber (graphql-transport-ws) that resumes from its last cursor if the stream ends."""

    def __init__(self, c: Cluster, tenant: Tenant, after: str | None, name: str) -> None:
        self.c, self.tenant, self.cursor, self.name = c, tenant, after, name
        self.received: list[tuple[str, float, float]] = []  # (id, received at, createdAt), wall clock
        self.events: list[str] = []  # what ended a stream, errors
        self.connects = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._stream(stop)
            except TimeoutError:
                self.events.append(f"t={self.c.now():.1f}s no connection_ack within {TIMEOUT:.0f}s (hang)")
            except websockets.ConnectionClosed as exc:
                self.events.append(f"t={self.c.now():.1f}s closed by the server: code {exc.code} {exc.reason!r}")
            except (OSError, websockets.WebSocketException) as exc:
                self.events.append(f"t={self.c.now():.1f}s {type(exc).__name__}: {exc}")
            if not stop.is_set():
                await asyncio.sleep(1)  # then resume from the last cursor, as a client should

    async def _stream(self, stop: asyncio.Event) -> None:
        # max_queue=None: keep reading the socket even when this client lags, so that a close
        # handshake is never stuck behind unread frames (a client-side stall, not the server's).
        ws = await websockets.connect(
            self.c.lodge.ws_url, subprotocols=[TRANSPORT_WS], open_timeout=TIMEOUT, max_size=None, max_queue=None
        )
        self.connects += 1
        try:
            await self._converse(ws, stop)
        finally:
            started = time.monotonic()
            await ws.close()  # waits up to 10 s for the server's close frame
            if (took := time.monotonic() - started) > 2:
                self.events.append(f"t={self.c.now():.1f}s the server took {took:.1f} s to answer our close frame")

    async def _converse(self, ws: Any, stop: asyncio.Event) -> None:
        init = {"authorization": f"Bearer {self.tenant.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if ack.get("type") != "connection_ack":
            self.events.append(f"t={self.c.now():.1f}s connection_init answered {ack}")
            return
        variables = {"p": self.tenant.project_id, "after": self.cursor}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": TAIL, "variables": variables}}))
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif kind == "next" and message["payload"].get("errors"):
                code, detail = error_code(message["payload"])
                self.events.append(f"t={self.c.now():.1f}s error {code} {detail.get('requestId', '')}".rstrip())
            elif kind == "next":
                log = message["payload"]["data"]["logAdded"]
                created = datetime.fromisoformat(log["createdAt"]).timestamp()
                self.received.append((log["id"], time.time(), created))
                self.cursor = log["cursor"]
            elif kind == "error":
                code, detail = error_code({"errors": message.get("payload") or [{}]})
                self.events.append(f"t={self.c.now():.1f}s error {code} {detail.get('requestId', '')}".rstrip())
                return
            elif kind == "complete":
                self.events.append(f"t={self.c.now():.1f}s the server completed the subscription")
                return


async def database_logs(c: Cluster, project_id: str) -> list[tuple[str, int, str | None]]:
    conn = await c.db()
    try:
        rows = await conn.fetch(
            "SELECT id::text, seq, idempotency_key FROM logs WHERE project_id = $1 ORDER BY seq", uuid.UUID(project_id)
        )
    finally:
        await conn.close()
    return [(row["id"], int(row["seq"]), row["idempotency_key"]) for row in rows]


async def first_log(c: Cluster, client: httpx.AsyncClient, tenant: Tenant) -> tuple[str, int]:
    """Ingest a marker log; tails start after it. Returns its cursor and seq."""
    response = await client.post(
        "/graphql",
        json={"query": INGEST_LOG, "variables": {"input": {"log": "drill start"}}},
        headers={"authorization": f"ApiKey {tenant.secret}"},
    )
    log = response.json()["data"]["ingestLog"]
    seq = next(seq for id_, seq, _ in await database_logs(c, tenant.project_id) if id_ == log["id"])
    return log["cursor"], seq


def logs_reader(rec: Recorder, client: httpx.AsyncClient, tenant: Tenant) -> Callable[[], Awaitable[Any]]:
    """A `logs` query (the owner's token, ERROR logs, newest page), recorded as "logs query"."""
    payload = {"query": LOGS, "variables": {"p": tenant.project_id, "filter": {"level": "ERROR"}, "count": False}}
    bearer = {"authorization": f"Bearer {tenant.token}"}
    return lambda: rec.call(
        "logs query", lambda: client.post("/graphql", json=payload, headers=bearer), graphql_ok("logs")
    )
