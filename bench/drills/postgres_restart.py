"""Drill 1: PostgreSQL stopped (`pg_ctl stop -m fast|immediate`) and started again under steady ingest,
a `logs` reader, `/readyz` probes and a live tail."""

from __future__ import annotations

import argparse
import asyncio
import functools
import time

from bench.common import new_tenant
from bench.drills.cluster import TIMEOUT, cluster, say
from bench.drills.load import Ingest, Probe, Recorder, Tail, database_logs, every, first_log, logs_reader
from bench.drills.report import (
    Report,
    check_acknowledged,
    compare_tail,
    environment,
    examples,
    log_summary,
    seconds_after,
    table,
)


async def run(args: argparse.Namespace) -> int:
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
            f"{examples([r for r in outage if r.outcome != 'error'])})",
        )
        report.check(not uncoded, f"every error carries a code ({len(uncoded)} without: {examples(uncoded)})")
        report.check(not internal, f"no INTERNAL error for an outage ({len(internal)}: {examples(internal)})")
        report.check(
            down is not None and ready_again is not None,
            f"/readyz: 503 database down {seconds_after(down, t_stop)} after the stop, 200 {seconds_after(ready_again, t_up)} "
            "after PostgreSQL accepted connections again",
        )
        report.check(
            first_ok is not None and c.lodge.alive() and c.lodge.pid == pid,
            f"ingest resumed without restarting Lodge: first success {seconds_after(first_ok, t_up)} after PostgreSQL "
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
