"""Drill 2: Redis stopped (SIGTERM) or frozen (SIGSTOP, as a partition) under a live tail and steady
ingest."""

from __future__ import annotations

import argparse
import asyncio
import functools
import time

from bench.common import new_tenant
from bench.drills.cluster import TIMEOUT, cluster, say
from bench.drills.load import (
    INGEST_LOG,
    Ingest,
    Probe,
    Recorder,
    Tail,
    database_logs,
    every,
    first_log,
    graphql_ok,
    logs_reader,
)
from bench.drills.report import (
    Report,
    check_acknowledged,
    compare_tail,
    environment,
    examples,
    log_summary,
    ms,
    seconds_after,
    table,
)


async def run(args: argparse.Namespace) -> int:
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
            f"requests succeeded ({examples([r for r in outage if r.outcome != 'ok'])})",
        )
        report.check(
            down is not None and not wrongly_ok,
            f"/readyz said 503 broker down {seconds_after(down, t_stop)} after the stop and every probe until the "
            f"restart ({len(wrongly_ok)} probes said otherwise)",
        )
        report.check(
            ready_again is not None, f"/readyz 200 again {seconds_after(ready_again, t_up)} after Redis returned"
        )
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
