"""Failure drills: PostgreSQL restarted under ingest, Redis stopped under a live tail, a soak.

Run by hand, never in CI:

    uv run python -m bench.drills [--keep] [--ref COMMIT] postgres-restart [--outage 20] [--stop-mode fast|immediate]
    uv run python -m bench.drills [--keep] [--ref COMMIT] redis-stop [--outage 30] [--how stop|pause]
    uv run python -m bench.drills [--keep] [--ref COMMIT] soak [--minutes 10]

Each drill starts its own PostgreSQL (initdb into a temporary directory, as the `postgres` user when
run as root) and its own Redis on free ports, and `lodge serve` as a separate process against them;
the machine's shared servers (5432, 6379) are never touched. Everything is stopped and the directory
removed at the end, even on failure (`--keep` keeps it, with the server logs). `--ref` runs Lodge
from `git archive COMMIT` rather than the working tree. The drill prints a Markdown report and exits
1 when a check failed. Results are recorded in docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets
from websockets.typing import Subprotocol

from bench.common import Tenant, new_tenant, percentile
from bench.launch import ROOT, LodgeProcess, create_database, export, free_port, git, server_env

PG_BIN = Path(os.environ.get("DRILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "lodge"  # Lodge's own database; the drill's monitoring connects to `postgres`
TIMEOUT = 10.0  # a client waiting longer than this counts the request as hung
TRANSPORT_WS = Subprotocol("graphql-transport-ws")

INGEST_LOG = "mutation($input: LogInput!) { ingestLog(input: $input) { id cursor } }"
INGEST_LOGS = "mutation($inputs: [LogInput!]!) { ingestLogs(inputs: $inputs) { accepted duplicates ids } }"
LOGS = """query($p: ID!, $filter: LogFilter, $count: Boolean!) {
  logs(projectId: $p, filter: $filter, last: 50) { totalCount @include(if: $count) nodes { id level log } }
}"""
PROJECTS = "query { projects(first: 20) { nodes { id name apiKeys { prefix lastUsedAt } } } }"
TAIL = "subscription($p: ID!, $after: String) { logAdded(projectId: $p, after: $after) { id cursor createdAt } }"
CREATE_VENDOR = "mutation($i: VendorInput!) { createVendor(input: $i) { id } }"
MOVE_VENDOR = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id } }"
NEAR = "query($lat: Float!, $long: Float!) { vendorsNear(lat: $lat, long: $long, radiusKm: 5, first: 20) { distanceKm vendor { id name } } }"


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- the harness: our own PostgreSQL, Redis and `lodge serve` -------------------------------------------------------


class Postgres:
    """A PostgreSQL cluster of our own: initdb into `root`, trust auth, loopback only."""

    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.data = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.logfile = root / "postgres.log"

    def _run(self, *argv: str) -> str:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "60", "start")

    def _stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self._stop, mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL Lodge takes."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def version(self) -> str:
        return self._run("postgres", "--version").strip()


class Redis:
    """`redis-server` of our own, in the foreground, no persistence."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.logfile = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", str(self.root)]
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start (see {self.logfile})")

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # in case it is paused
        self.proc.terminate()  # SIGTERM: Redis closes every client connection and exits
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def pause(self, frozen: bool) -> None:
        """SIGSTOP / SIGCONT: connections stay open and nothing answers, as in a network partition."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def version() -> str:
        return subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()


class Lodge(LodgeProcess):
    """`lodge serve` (bench/launch.py), logging to `root`/lodge.log, and what the soak samples of its
    process in /proc."""

    def __init__(self, root: Path, port: int, source: Path) -> None:
        self.logfile = root / "lodge.log"
        # 40 s to stop: uvicorn lets requests in flight finish first.
        super().__init__(source, port, log=self.logfile, ready_seconds=90, stop_seconds=40)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def fd_count(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def sockets(self, peers: dict[int, str]) -> Counter[str]:
        """The process's sockets by what they connect to: `peers` (remote port -> name), `clients`
        (accepted on Lodge's port), `listening`, `other` (unix sockets and the rest)."""
        tcp: dict[str, tuple[int, int, str]] = {}  # inode -> (local port, remote port, state)
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]:
                    parts = line.split()
                    local, remote = (int(a.rsplit(":", 1)[1], 16) for a in parts[1:3])
                    tcp[parts[9]] = (local, remote, parts[3])
        kinds: Counter[str] = Counter()
        for entry in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(entry)
                if not link.startswith("socket:["):
                    continue
                local, remote, state = tcp.get(link[8:-1], (0, 0, ""))
                if state == "0A":
                    kinds["listening"] += 1
                elif remote in peers:
                    kinds[peers[remote]] += 1
                elif local == self.port:
                    kinds["clients"] += 1
                else:
                    kinds["other"] += 1
        return kinds

    def log_lines(self) -> list[str]:
        return self.logfile.read_text(errors="replace").splitlines() if self.logfile.exists() else []


@dataclass
class Cluster:
    root: Path
    pg: Postgres
    redis: Redis
    lodge: Lodge
    source: str
    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since the drill's clock started (reset with `start_clock`)."""
        return time.monotonic() - self.t0

    def start_clock(self) -> None:
        self.t0 = time.monotonic()

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.lodge.base, timeout=TIMEOUT, **kwargs)

    async def db(self, database: str = DATABASE) -> Any:
        return await asyncpg.connect(self.pg.dsn(database), timeout=10)


@contextlib.asynccontextmanager
async def cluster(args: argparse.Namespace, *, log_level: str = "INFO") -> AsyncIterator[Cluster]:
    """Our own PostgreSQL and Redis, and Lodge against them; all stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"lodge-drill-{args.drill}-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    source = root / "src" if args.ref else ROOT
    c = Cluster(
        root=root,
        pg=Postgres(root, free_port(55432)),
        redis=Redis(root, free_port(56379)),
        lodge=Lodge(root, free_port(58765), source),
        source=describe_source(args.ref),
    )
    failed = True
    try:
        if args.ref:
            await asyncio.to_thread(export, args.ref, source)
        await asyncio.to_thread(c.pg.init)
        await c.pg.start()
        database_url = await create_database(c.pg.url(), DATABASE)
        await c.redis.start()
        c.lodge.env = server_env(
            database_url,
            c.redis.url,
            LODGE_DATA_DIR=str(root / "lodge-data"),
            LOG_LEVEL=log_level,
            # Tokens must outlive the soak; nothing else differs from the defaults.
            LODGE_ACCESS_TOKEN_TTL="86400",
        )
        await c.lodge.start()
        say(f"postgres :{c.pg.port}, redis :{c.redis.port}, lodge :{c.lodge.port} (pid {c.lodge.pid}) in {root}")
        yield c
        failed = False
    finally:
        if failed:
            for path in (c.lodge.logfile, c.pg.logfile, c.redis.logfile):
                if path.exists():
                    tail = path.read_text(errors="replace").splitlines()[-25:]
                    print(f"--- last lines of {path.name} ---", *tail, sep="\n", file=sys.stderr)
        for step in (c.lodge.stop, c.redis.stop):
            with contextlib.suppress(Exception):
                await step()
        if c.pg.running():
            with contextlib.suppress(Exception):
                await c.pg.stop("immediate")
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def describe_source(ref: str | None) -> str:
    if ref:
        return f"`git archive {ref}` ({git('rev-parse', '--short', ref, check=False)})"
    dirty = git("status", "--porcelain", "--", "app", "migrations", check=False)
    return f"working tree at {git('rev-parse', '--short', 'HEAD', check=False)}" + (
        " + uncommitted changes in app/" if dirty else ""
    )


def environment(c: Cluster) -> list[str]:
    uname = platform.uname()
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores (nproc), Linux {uname.release}, Python {platform.python_version()}",
        f"- {c.pg.version()}; {Redis.version().split(' sha=')[0]}",
        "- load average (1/5/15 min) at the start: {:.2f} {:.2f} {:.2f} (the machine is shared)".format(
            *os.getloadavg()
        ),
        f"- Lodge: {c.source}; one `lodge serve` process, LODGE_ENV=production, default pool (20), Redis broker",
    ]


# -- clients that record what happened to every request -------------------------------------------------------------


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


# -- reporting ------------------------------------------------------------------------------------------------------


def ms(seconds: Sequence[float], p: float) -> str:
    return f"{1000 * percentile(list(seconds), p):.0f}" if seconds else "-"


def table(results: list[Result], phases: list[tuple[str, float, float]]) -> list[str]:
    lines = [
        "| phase | path | requests | ok | errors (HTTP status, code: count) | hung | dropped | p50 ms | p99 ms | max ms |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, start, end in phases:
        for path in sorted({r.path for r in results}):
            chosen = [r for r in results if r.path == path and start <= r.sent < end]
            if not chosen:
                continue
            codes = Counter(f"{r.status} {r.code}" for r in chosen if r.outcome == "error")
            latency = [r.latency for r in chosen]
            errors = ", ".join(f"{k}: {v}" for k, v in codes.most_common()) or "-"
            lines.append(
                f"| {phase} | {path} | {len(chosen)} | {sum(r.outcome == 'ok' for r in chosen)} | {errors} "
                f"| {sum(r.outcome == 'hang' for r in chosen)} "
                f"| {sum(r.outcome in ('dropped', 'unreachable') for r in chosen)} "
                f"| {ms(latency, 50)} | {ms(latency, 99)} | {ms([max(latency)], 50)} |"
            )
    return lines


def log_entries(lines: list[str]) -> list[str]:
    """Lodge's WARNING and ERROR records as one line each: level, logger, message and, for a
    traceback, its last line (the exception). Reads JSON lines and the plain text format."""
    out: list[str] = []
    for line in lines:
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            level = str(record.get("level", "")).upper()
            if level not in ("WARNING", "ERROR", "CRITICAL"):
                continue
            message = str(record.get("message", "")).strip().splitlines() or [""]
            trace = str(record.get("exc_info") or record.get("exception") or "").strip().splitlines() or message[1:]
            extra = {k: v for k, v in record.items() if k in ("request_id", "requestId")}
            # The exception that ended the traceback (SQLAlchemy adds a "Background on this error" line after it).
            last = [line for line in trace if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line)][-1:]
            out.append(" ".join([level, str(record.get("logger", "")), message[0], *last, *map(str, extra.values())]))
        elif re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) or re.match(r"^[A-Za-z_][\w.]*(Error|Exception):", line):
            out.append(re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", line))
    return out


def log_summary(lines: list[str], limit: int = 12) -> list[str]:
    """`log_entries`, grouped with ids and numbers masked: count x first example."""
    masked: Counter[str] = Counter()
    example: dict[str, str] = {}
    for entry in log_entries(lines):
        text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", "<id>", entry)
        text = re.sub(r"\d+(\.\d+)?", "N", text)[:160]
        masked[text] += 1
        example.setdefault(text, entry[:400])
    return [f"{count:5d} x {example[text]}" for text, count in masked.most_common(limit)] or ["(none)"]


def compare_tail(tail: Tail, expected: list[str]) -> tuple[bool, str]:
    got = [i for i, _, _ in tail.received]
    got_set, expected_set = set(got), set(expected)
    missing = len(expected_set - got_set)
    duplicates = len(got) - len(got_set)
    unexpected = len(got_set - expected_set)
    # In order: the logs received that are in the database come in the database's seq order.
    rank = {id_: n for n, id_ in enumerate(expected)}
    ranks = [rank[i] for i in got if i in rank]
    in_order = all(a < b for a, b in itertools.pairwise(ranks))
    ok = got == expected
    return ok, (
        f"{tail.name}: received {len(got)} of {len(expected)} in the database; missing {missing}, "
        f"duplicated {duplicates}, not in the database {unexpected}, in seq order: {in_order}; "
        f"websocket connections {tail.connects}"
    )


@dataclass
class Report:
    title: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def check(self, ok: bool, what: str) -> None:
        self.lines.append(f"- [{'x' if ok else ' '}] {what}")
        if not ok:
            self.failures.append(what)

    def print(self) -> int:
        self.lines.append("- load average (1/5/15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print(f"\n## {self.title}\n", *self.lines, sep="\n")
        verdict = "all checks passed" if not self.failures else f"{len(self.failures)} check(s) FAILED"
        print(f"\n**{verdict}**")
        return 1 if self.failures else 0


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


def check_acknowledged(report: Report, ingest: Ingest, stored: list[tuple[str, int, str | None]]) -> None:
    by_id = {id_ for id_, _, _ in stored}
    by_key = {key for _, _, key in stored if key is not None}
    lost = [key for key, id_ in ingest.acked.items() if id_ not in by_id]
    stored_anyway = {key: result for key, result in ingest.unacked.items() if key in by_key}
    report.add(
        f"- logs acknowledged: {len(ingest.acked)}; in the database afterwards: {len(ingest.acked) - len(lost)}; "
        f"logs of failed requests: {len(ingest.unacked)}, of which stored anyway: {len(stored_anyway)}"
    )
    requests = {id(r): r for r in stored_anyway.values()}.values()
    for r in requests:
        report.add(
            f"  - stored although the request failed: {r.path} at t={r.sent:.1f}s, {r.outcome} HTTP {r.status} "
            f"{r.code} {r.note[:70]!r} request {r.request_id}"
        )
    report.check(not lost, f"no acknowledged log missing from the database (missing: {len(lost)} {lost[:5]})")


# -- drill 1: PostgreSQL restarted under steady ingest --------------------------------------------------------------


async def postgres_restart(args: argparse.Namespace) -> int:
    report = Report(f"postgres-restart (stop mode `{args.stop_mode}`, outage {args.outage:.0f} s)")
    async with cluster(args) as c, c.http() as client:
        report.add(*environment(c), "")
        tenant = await new_tenant(client)
        cursor, start_seq = await first_log(c, client, tenant)
        rec = Recorder(c)
        ingest = Ingest(c, rec, client, tenant, batch=10)
        probe = Probe(c)
        tail = Tail(c, tenant, cursor, "tail")
        pid = c.lodge.pid

        stop = asyncio.Event()
        c.start_clock()
        tasks = [
            *(asyncio.create_task(every(0.1, stop, functools.partial(ingest.ndjson, f"ndjson{w}"))) for w in range(3)),
            asyncio.create_task(every(0.2, stop, lambda: ingest.graphql("gql"))),
            asyncio.create_task(every(0.5, stop, logs_reader(rec, client, tenant))),
            asyncio.create_task(probe.run(stop)),
            asyncio.create_task(tail.run(stop)),
        ]
        say(f"steady ingest for {args.warmup:.0f} s")
        await asyncio.sleep(args.warmup)
        t_stop = c.now()
        await c.pg.stop(args.stop_mode)
        t_down = c.now()
        say(f"postgres stopped ({args.stop_mode}) in {t_down - t_stop:.1f} s; outage of {args.outage:.0f} s")
        await asyncio.sleep(args.outage)
        t_start = c.now()
        await c.pg.start()
        t_up = c.now()
        say(f"postgres started in {t_up - t_start:.1f} s; ingest continues for {args.after:.0f} s")
        await asyncio.sleep(args.after)
        stop.set()
        t_end = c.now()
        await asyncio.gather(*tasks)
        # Let the tail catch up with everything stored, then compare.
        stored = await database_logs(c, tenant.project_id)
        expected = [id_ for id_, seq, _ in stored if seq > start_seq]
        drain = asyncio.Event()
        drainer = asyncio.create_task(tail.run(drain))
        deadline = time.monotonic() + 30
        while len(tail.received) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        drain.set()
        await drainer

        phases = [("before", 0.0, t_stop), ("outage", t_stop, t_up), ("after", t_up, 1e9)]
        report.add(
            f"Timeline (drill clock): PostgreSQL stop issued t={t_stop:.1f}s, down t={t_down:.1f}s, "
            f"start issued t={t_start:.1f}s, accepting connections t={t_up:.1f}s, load stopped t={t_end:.1f}s.",
            "",
            *table(rec.results, phases),
            "",
        )
        first_ok = min((r.sent + r.latency for r in rec.results if r.outcome == "ok" and r.sent >= t_up), default=None)
        outage = [r for r in rec.results if t_down <= r.sent < t_start]
        hangs = [r for r in rec.results if r.outcome == "hang"]
        uncoded = [r for r in rec.results if r.outcome == "error" and r.code == "(none)"]
        internal = [r for r in rec.results if r.code == "INTERNAL"]
        down = probe.first(t_stop, lambda s, b: s == 503 and str(b.get("database", "")).startswith("down"))
        ready_again = probe.first(t_up, lambda s, b: s == 200)
        report.add("`/readyz` transitions:", "", *(f"    {line}" for line in probe.transitions()), "")
        report.check(
            not hangs and not probe.hangs(),
            f"no request hung past {TIMEOUT:.0f} s ({len(hangs)} requests, {probe.hangs()} /readyz probes hung)",
        )
        report.check(
            all(r.outcome == "error" for r in outage),
            f"every request during the outage failed with an error response "
            f"({sum(r.outcome == 'error' for r in outage)} of {len(outage)}; the others: "
            f"{_examples([r for r in outage if r.outcome != 'error'])})",
        )
        report.check(not uncoded, f"every error carries a code ({len(uncoded)} without: {_examples(uncoded)})")
        report.check(not internal, f"no INTERNAL error for an outage ({len(internal)}: {_examples(internal)})")
        report.check(
            down is not None and ready_again is not None,
            f"/readyz: 503 database down {_after(down, t_stop)} after the stop, 200 {_after(ready_again, t_up)} "
            "after PostgreSQL accepted connections again",
        )
        report.check(
            first_ok is not None and c.lodge.alive() and c.lodge.pid == pid,
            f"ingest resumed without restarting Lodge: first success {_after(first_ok, t_up)} after PostgreSQL "
            f"was up (Lodge pid {pid} {'still running' if c.lodge.alive() else 'EXITED'})",
        )
        check_acknowledged(report, ingest, stored)
        ok, line = compare_tail(tail, expected)
        report.check(ok, f"live tail (resuming from its last cursor after an error) saw every log once: {line}")
        report.add("", "Tail stream events:", "", *(f"    {e}" for e in tail.events or ["(none)"]))
        report.add(
            "", "Lodge log (WARNING/ERROR lines, grouped):", "", *(f"    {s}" for s in log_summary(c.lodge.log_lines()))
        )
    return report.print()


def _after(t: float | None, since: float) -> str:
    return "never" if t is None else f"{t - since:.1f} s"


def _examples(results: list[Result]) -> str:
    kinds = Counter(f"{r.path} HTTP {r.status} {r.code} {r.note[:60]!r}" for r in results)
    sample = ", ".join(f"{k} x{v}" for k, v in kinds.most_common(3))
    ids = [r.request_id for r in results[:3]]
    return f"{sample}; request ids {ids}" if results else "-"


# -- drill 2: Redis stopped under a live tail -----------------------------------------------------------------------


async def redis_stop(args: argparse.Namespace) -> int:
    how = "stopped (SIGTERM)" if args.how == "stop" else "paused (SIGSTOP: connections open, nothing answers)"
    report = Report(f"redis-stop: Redis {how} for {args.outage:.0f} s, {args.subscribers} subscribers")
    async with cluster(args) as c, c.http() as client:
        report.add(*environment(c), "")
        tenant = await new_tenant(client)
        cursor, start_seq = await first_log(c, client, tenant)
        rec = Recorder(c)
        ingest = Ingest(c, rec, client, tenant, batch=5)
        probe = Probe(c)
        tails = [Tail(c, tenant, cursor, f"subscriber {n}") for n in range(args.subscribers)]
        key = {"authorization": f"ApiKey {tenant.secret}"}

        async def single() -> None:
            payload = {"query": INGEST_LOG, "variables": {"input": {"log": "single"}}}
            await rec.call(
                "ingestLog", lambda: client.post("/graphql", json=payload, headers=key), graphql_ok("ingestLog")
            )

        stop, stop_tails = asyncio.Event(), asyncio.Event()
        c.start_clock()
        tail_tasks = [asyncio.create_task(t.run(stop_tails)) for t in tails]
        tasks = [
            *(asyncio.create_task(every(0.2, stop, functools.partial(ingest.ndjson, f"ndjson{w}"))) for w in range(2)),
            asyncio.create_task(every(0.5, stop, lambda: ingest.graphql("gql"))),
            asyncio.create_task(every(0.5, stop, single)),
            asyncio.create_task(every(0.5, stop, logs_reader(rec, client, tenant))),
            asyncio.create_task(probe.run(stop)),
        ]
        await asyncio.sleep(args.warmup)
        live = sum(1 for t in tails if t.received)
        t_stop = c.now()
        await (c.redis.stop() if args.how == "stop" else asyncio.to_thread(c.redis.pause, True))
        t_down = c.now()
        say(f"redis {how} ({live}/{len(tails)} subscribers receiving); outage of {args.outage:.0f} s")
        await asyncio.sleep(args.outage)
        t_start = c.now()
        await (c.redis.start() if args.how == "stop" else asyncio.to_thread(c.redis.pause, False))
        t_up = c.now()
        say(f"redis back; ingest continues for {args.after:.0f} s")
        await asyncio.sleep(args.after)
        stop.set()
        t_end = c.now()
        await asyncio.gather(*tasks)
        stored = await database_logs(c, tenant.project_id)
        expected = [id_ for id_, seq, _ in stored if seq > start_seq]
        deadline = time.monotonic() + 30
        while any(len(t.received) < len(expected) for t in tails) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        caught_up = c.now() - t_end
        stop_tails.set()
        await asyncio.gather(*tail_tasks)

        phases = [("before", 0.0, t_stop), ("outage", t_stop, t_up), ("after", t_up, 1e9)]
        report.add(
            f"Timeline (drill clock): Redis {how} t={t_stop:.1f}s (done t={t_down:.1f}s), "
            f"back t={t_up:.1f}s, ingest stopped t={t_end:.1f}s; subscribers had everything "
            f"{caught_up:.1f} s later.",
            "",
            *table(rec.results, phases),
            "",
            "Live-tail delivery latency (receipt minus the log's createdAt), by when the log was created:",
            "",
            "| phase | deliveries | p50 ms | p99 ms | max ms |",
            "| --- | ---: | ---: | ---: | ---: |",
        )
        wall0 = time.time() - c.now()  # drill clock 0 on the wall clock
        split = min(t_stop + 10, t_up)  # a subscriber already waiting may not notice the outage for a while
        by_creation = [
            ("before", 0.0, t_stop),
            ("outage, its first 10 s", t_stop, split),
            ("outage, the rest", split, t_up),
            ("after", t_up, 1e9),
        ]
        for phase, start, end in by_creation:
            lat = [r - cr for t in tails for _, r, cr in t.received if start <= cr - wall0 < end]
            report.add(f"| {phase} | {len(lat)} | {ms(lat, 50)} | {ms(lat, 99)} | {ms(lat, 100)} |")
        report.add("", "`/readyz` transitions:", "", *(f"    {line}" for line in probe.transitions()), "")
        outage = [r for r in rec.results if t_stop <= r.sent < t_up]
        down = probe.first(t_stop, lambda s, b: s == 503 and b.get("broker") == "down")
        # Probes answered while Redis was down (asked a second after it went, answered before it returned).
        wrongly_ok = [t for t, took, s, _ in probe.samples if t_down + 1 <= t and t + took < t_start and s != 503]
        ready_again = probe.first(t_up, lambda s, b: s == 200 and b.get("broker") == "ok")
        hangs = [r for r in rec.results if r.outcome == "hang"]
        report.check(
            not hangs and not probe.hangs(),
            f"no request hung past {TIMEOUT:.0f} s ({len(hangs)} requests, {probe.hangs()} /readyz probes hung)",
        )
        report.check(
            bool(outage) and all(r.outcome == "ok" for r in outage),
            f"ingest kept committing during the outage: {sum(r.outcome == 'ok' for r in outage)} of {len(outage)} "
            f"requests succeeded ({_examples([r for r in outage if r.outcome != 'ok'])})",
        )
        report.check(
            down is not None and not wrongly_ok,
            f"/readyz said 503 broker down {_after(down, t_stop)} after the stop and every probe until the "
            f"restart ({len(wrongly_ok)} probes said otherwise)",
        )
        report.check(ready_again is not None, f"/readyz 200 again {_after(ready_again, t_up)} after Redis returned")
        check_acknowledged(report, ingest, stored)
        for tail in tails:
            ok, line = compare_tail(tail, expected)
            report.check(ok and tail.connects == 1, line)
            for event in tail.events:
                report.add(f"    {event}")
        report.add(
            "", "Lodge log (WARNING/ERROR lines, grouped):", "", *(f"    {s}" for s in log_summary(c.lodge.log_lines()))
        )
    return report.print()


# -- drill 3: soak --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss_mib: float
    cpu_seconds: float  # Lodge's user + system CPU time so far
    fds: int
    sockets: Counter[str]  # by peer: clients, postgres, redis, listening, other
    db_total: int  # pg_stat_activity: connections to Lodge's database
    db_busy: int
    logs: int
    requests: int
    failed: int


async def sample(c: Cluster, monitor: Any, ingest: Ingest, rec: Recorder) -> Sample:
    row = await monitor.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE state <> 'idle') AS busy FROM pg_stat_activity "
        "WHERE datname = $1 AND backend_type = 'client backend'",
        DATABASE,
    )
    return Sample(
        t=c.now(),
        rss_mib=c.lodge.rss_mib(),
        cpu_seconds=c.lodge.cpu_seconds(),
        fds=c.lodge.fd_count(),
        sockets=c.lodge.sockets({c.pg.port: "postgres", c.redis.port: "redis"}),
        db_total=int(row["total"]),
        db_busy=int(row["busy"]),
        logs=len(ingest.acked),
        requests=len(rec.results),
        failed=sum(r.outcome != "ok" for r in rec.results),
    )


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


def sample_row(s: Sample, previous: Sample | None, label: str = "") -> str:
    cpu = (s.cpu_seconds - previous.cpu_seconds) / (s.t - previous.t) if previous and s.t > previous.t else 0.0
    socks = s.sockets
    return (
        f"| {s.t:.0f}{label} | {s.rss_mib:.1f} | {100 * cpu:.0f}% | {s.fds} | {socks['clients']} | {socks['postgres']} "
        f"| {socks['redis']} | {s.db_total} ({s.db_busy}) | {s.logs} | {s.requests} | {s.failed} |"
    )


async def soak(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60
    report = Report(f"soak ({args.minutes:g} minutes of mixed load)")
    async with cluster(args, log_level="WARNING") as c:
        report.add(*environment(c), "")
        monitor = await c.db("postgres")
        rec = Recorder(c)
        tails: list[Tail] = []
        churned: Counter[str] = Counter()
        try:
            async with c.http() as client:
                tenant = await new_tenant(client)
                cursor, start_seq = await first_log(c, client, tenant)
                ingest = Ingest(c, rec, client, tenant, batch=20)
                before = await sample(c, monitor, ingest, rec)
                samples, load_end = await _soak_load(
                    c, client, tenant, cursor, rec, ingest, tails, churned, monitor, args
                )
                stored = await database_logs(c, tenant.project_id)
            # Every client connection is closed now: Lodge should hold none of them.
            await asyncio.sleep(5)
            idle = await sample(c, monitor, ingest, rec)
        finally:
            await monitor.close()

        expected = [id_ for id_, seq, _ in stored if seq > start_seq]
        report.add(
            f"Load for {load_end:.0f} s: POST /ingest 2 x 5 req/s x 20 logs, ingestLogs 1 req/s x 20 logs, "
            "logs queries 4/s (search or level filter, totalCount every 10th), projects 1/s, vendorsNear 2/s, "
            "recordVendorLocation 1/s, a request on a new TCP connection 1/s, "
            f"{len(tails)} live-tail subscribers, a short-lived subscriber every 5 s ({dict(churned)}).",
            "",
            "Lodge process: RSS, CPU (share of one core since the previous row), open file descriptors, TCP sockets "
            "by peer, and its connections as PostgreSQL sees them (pg_stat_activity, busy = not idle).",
            "",
            "| t (s) | RSS MiB | CPU | fds | client sockets | PostgreSQL sockets | Redis sockets "
            "| pg_stat_activity (busy) | logs acknowledged | requests | failed |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            sample_row(before, None, " (idle, before load)"),
            *(sample_row(s, samples[i - 1] if i else None) for i, s in enumerate(samples)),
            sample_row(idle, samples[-1], " (idle, clients gone)"),
            "",
            *table(rec.results, [("whole run", 0.0, 1e9)]),
            "",
        )
        start, end = samples[0], samples[-1]
        warm = next((s for s in samples if s.t >= seconds * 0.2), start)
        growth = end.rss_mib - warm.rss_mib
        slope = slope_per_minute([(s.t, s.rss_mib) for s in samples if s.t >= warm.t])
        busiest = max(s.db_total for s in samples)
        report.add(
            f"- RSS: {start.rss_mib:.1f} MiB at the start, {warm.rss_mib:.1f} MiB at t={warm.t:.0f}s (after warm-up), "
            f"{end.rss_mib:.1f} MiB at the end: {growth:+.1f} MiB after warm-up, trend {slope:+.2f} MiB/min; "
            f"{growth * 2**20 / max(1, end.logs - warm.logs):.0f} bytes per log ingested after warm-up "
            f"(each delivered to {len(tails)} subscribers)",
            f"- PostgreSQL connections held by Lodge: {start.db_total} at the start, at most {busiest} under load, "
            f"{end.db_total} at the end, {idle.db_total} when idle after",
            f"- open fds: {before.fds} idle before the load, {start.fds} at the start, {end.fds} at the end, "
            f"{idle.fds} idle after; client sockets idle after: {idle.sockets['clients']}",
        )
        failed = [r for r in rec.results if r.outcome != "ok"]
        report.check(not failed, f"no request failed or hung ({len(failed)}: {_examples(failed)})")
        report.check(
            growth <= max(0.1 * warm.rss_mib, 20.0) and slope < 1.0,
            f"memory flat after warm-up ({growth:+.1f} MiB, {slope:+.2f} MiB/min; limits: 10% or 20 MiB, 1 MiB/min)",
        )
        report.check(
            busiest <= 20 and all(s.sockets["postgres"] == s.db_total for s in [*samples, idle]),
            "PostgreSQL connections never above the pool size (20), and Lodge's sockets to PostgreSQL always "
            "match pg_stat_activity",
        )
        rest_before, rest_idle = (
            s.fds - s.sockets["clients"] - s.sockets["postgres"] - s.sockets["redis"] for s in (before, idle)
        )
        report.check(
            idle.sockets["clients"] == 0 and rest_idle <= rest_before + 3,
            f"no socket or fd leak: {idle.sockets['clients']} client sockets once every client has gone; "
            f"fds other than client, PostgreSQL and Redis connections: {rest_before} before the load, {rest_idle} after "
            f"(PostgreSQL {before.sockets['postgres']} -> {idle.sockets['postgres']}, "
            f"Redis {before.sockets['redis']} -> {idle.sockets['redis']}: pooled)",
        )
        for tail in tails:
            ok, line = compare_tail(tail, expected)
            report.check(ok, line)
        report.add(
            "", "Lodge log (WARNING/ERROR lines, grouped):", "", *(f"    {s}" for s in log_summary(c.lodge.log_lines()))
        )
    return report.print()


async def _soak_load(
    c: Cluster,
    client: httpx.AsyncClient,
    tenant: Tenant,
    cursor: str,
    rec: Recorder,
    ingest: Ingest,
    tails: list[Tail],
    churned: Counter[str],
    monitor: Any,
    args: argparse.Namespace,
) -> tuple[list[Sample], float]:
    """Run the mixed load for `args.minutes`, sampling the Lodge process; returns the samples and the load's end."""
    seconds = args.minutes * 60
    bearer = {"authorization": f"Bearer {tenant.token}"}
    vendors = []
    for n in range(20):
        i = {"name": f"drill vendor {n}", "lat": 40.70 + n / 1000, "long": -74.0 + n / 1000}
        created = await client.post("/graphql", json={"query": CREATE_VENDOR, "variables": {"i": i}}, headers=bearer)
        vendors.append(created.json()["data"]["createVendor"]["id"])
    tails.extend(Tail(c, tenant, cursor, f"subscriber {n}") for n in range(args.subscribers))
    tick = 0

    def gql(path: str, query: str, variables: dict[str, Any], field_name: str) -> Callable[[], Awaitable[Any]]:
        payload = {"query": query, "variables": variables}
        return lambda: rec.call(
            path, lambda: client.post("/graphql", json=payload, headers=bearer), graphql_ok(field_name)
        )

    async def logs_query() -> None:
        nonlocal tick
        tick += 1
        search = {"search": f"served in {tick % 250} ms"} if tick % 2 else {"level": "WARN"}
        await gql("logs query", LOGS, {"p": tenant.project_id, "filter": search, "count": tick % 10 == 0}, "logs")()

    async def move() -> None:
        variables = {"v": vendors[tick % len(vendors)], "lat": 40.7 + tick % 7 / 100, "long": -74.0}
        await gql("recordVendorLocation", MOVE_VENDOR, variables, "recordVendorLocation")()

    async def fresh_connection() -> None:
        """A request on a new TCP connection, closed after: sockets must not pile up."""
        async with c.http() as once:
            await rec.call("GET /readyz (new connection)", lambda: once.get("/readyz"), lambda b: True)

    async def short_tail() -> None:
        """A subscriber that connects, receives one log and leaves."""
        try:
            async with websockets.connect(
                c.lodge.ws_url, subprotocols=[TRANSPORT_WS], open_timeout=TIMEOUT, max_queue=None
            ) as ws:
                await ws.send(
                    json.dumps({"type": "connection_init", "payload": {"authorization": bearer["authorization"]}})
                )
                await asyncio.wait_for(ws.recv(), TIMEOUT)
                sub = {"query": TAIL, "variables": {"p": tenant.project_id, "after": None}}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": sub}))
                message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                churned["received a log" if message.get("type") == "next" else str(message.get("type"))] += 1
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            churned[type(exc).__name__] += 1

    stop, stop_tails = asyncio.Event(), asyncio.Event()
    c.start_clock()
    samples = [await sample(c, monitor, ingest, rec)]
    say(f"soak for {args.minutes:g} min; start: RSS {samples[0].rss_mib:.1f} MiB, fds {samples[0].fds}")
    tail_tasks = [asyncio.create_task(t.run(stop_tails)) for t in tails]
    tasks = [
        *(asyncio.create_task(every(0.2, stop, functools.partial(ingest.ndjson, f"ndjson{w}"))) for w in range(2)),
        asyncio.create_task(every(1.0, stop, lambda: ingest.graphql("gql"))),
        asyncio.create_task(every(0.25, stop, logs_query)),
        asyncio.create_task(every(1.0, stop, gql("projects query", PROJECTS, {}, "projects"))),
        asyncio.create_task(every(0.5, stop, gql("vendorsNear", NEAR, {"lat": 40.71, "long": -74.0}, "vendorsNear"))),
        asyncio.create_task(every(1.0, stop, move)),
        asyncio.create_task(every(1.0, stop, fresh_connection)),
        asyncio.create_task(every(5.0, stop, short_tail)),
    ]
    interval = max(10.0, seconds / 20)
    while c.now() < seconds - 1:
        await asyncio.sleep(min(interval, seconds - c.now()))
        samples.append(await sample(c, monitor, ingest, rec))
        s = samples[-1]
        say(f"t={s.t:5.0f}s RSS {s.rss_mib:6.1f} MiB fds {s.fds} db {s.db_total} logs {s.logs} failed {s.failed}")
    stop.set()
    load_end = c.now()
    await asyncio.gather(*tasks)
    stored = len(await database_logs(c, tenant.project_id)) - 1  # the tails start after the first log
    deadline = time.monotonic() + 60
    while any(len(t.received) < stored for t in tails) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    stop_tails.set()
    await asyncio.gather(*tail_tasks)
    return samples, load_end


# -- command line ---------------------------------------------------------------------------------------------------


DRILLS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "postgres-restart": postgres_restart,
    "redis-stop": redis_stop,
    "soak": soak,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drills", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    parser.add_argument("--ref", help="run Lodge from `git archive REF` instead of the working tree")
    sub = parser.add_subparsers(dest="drill", required=True)
    pg = sub.add_parser("postgres-restart", help="PostgreSQL stopped and started again under steady ingest")
    pg.add_argument("--outage", type=float, default=20, help="seconds PostgreSQL stays down")
    pg.add_argument("--stop-mode", choices=["fast", "immediate"], default="fast", help="pg_ctl stop -m")
    redis = sub.add_parser("redis-stop", help="Redis stopped under a live tail")
    redis.add_argument("--outage", type=float, default=30, help="seconds Redis stays down")
    redis.add_argument("--subscribers", type=int, default=3)
    redis.add_argument("--how", choices=["stop", "pause"], default="stop", help="stop Redis, or freeze it (SIGSTOP)")
    for p in (pg, redis):
        p.add_argument("--warmup", type=float, default=10, help="seconds of load before the outage")
        p.add_argument("--after", type=float, default=20, help="seconds of load after the outage")
    soak_ = sub.add_parser("soak", help="steady mixed load; RSS, DB connections and sockets over time")
    soak_.add_argument("--minutes", type=float, default=10)
    soak_.add_argument("--subscribers", type=int, default=4)
    args = parser.parse_args(argv)
    return asyncio.run(DRILLS[args.drill](args))


if __name__ == "__main__":
    raise SystemExit(main())
