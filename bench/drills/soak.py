"""Drill 3: a soak, steady mixed load for `--minutes`, sampling Lodge's memory, CPU, file descriptors,
sockets and PostgreSQL connections."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

from bench.common import Tenant, new_tenant
from bench.drills.cluster import DATABASE, TIMEOUT, Cluster, cluster, say
from bench.drills.load import (
    LOGS,
    TAIL,
    TRANSPORT_WS,
    Ingest,
    Recorder,
    Tail,
    database_logs,
    every,
    first_log,
    graphql_ok,
)
from bench.drills.report import Report, compare_tail, environment, examples, log_summary, table

PROJECTS = "query { projects(first: 20) { nodes { id name apiKeys { prefix lastUsedAt } } } }"
CREATE_VENDOR = "mutation($i: VendorInput!) { createVendor(input: $i) { id } }"
MOVE_VENDOR = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id } }"
NEAR = "query($lat: Float!, $long: Float!) { vendorsNear(lat: $lat, long: $long, radiusKm: 5, first: 20) { distanceKm vendor { id name } } }"


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


async def run(args: argparse.Namespace) -> int:
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
                samples, load_end = await _load(c, client, tenant, cursor, rec, ingest, tails, churned, monitor, args)
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
        report.check(not failed, f"no request failed or hung ({len(failed)}: {examples(failed)})")
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


async def _load(
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
