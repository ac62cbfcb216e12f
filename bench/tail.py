"""Live-tail delivery latency on one worker: commit (the log's createdAt) to receipt by a subscriber.

Run by hand: `uv run python -m bench.tail [--seconds 10]`. Subscribers run in a separate process
(websockets over loopback, graphql-transport-ws); logs are ingested one by one at a steady rate.
The "distinct" case gives each of 1000 subscribers an API key of its own: the selection does not
depend on the viewer, so each event must still be rendered once, not once per principal (the
server's lodge_subscription_shared_renders_total is printed to show it). Record results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from datetime import datetime
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from bench.common import gql, machine, new_tenant, percentile
from bench.launch import bench_database, lodge_server

SUBSCRIPTION = "subscription($p: ID!) { logAdded(projectId: $p) { id log level createdAt cursor } }"
GRACE = float(__import__("os").environ.get("TAIL_GRACE", "2"))
INGEST_LOG = "mutation($input: LogInput!) { ingestLog(input: $input) { id } }"


async def _subscribers(
    url: str, authorizations: list[str], project_id: str, count: int, seconds: float, ready: Any, out: Any
) -> None:
    latencies: list[float] = []
    received = 0
    stop = asyncio.Event()

    warmed: set[int] = set()
    per: dict[int, int] = {}

    async def one(n: int) -> None:
        nonlocal received
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None, open_timeout=60
        ) as ws:
            authorization = authorizations[n % len(authorizations)]
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": authorization}}))
            await ws.recv()
            await ws.send(
                json.dumps(
                    {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"p": project_id}}}
                )
            )
            connected.append(1)
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 1)
                except TimeoutError:
                    continue
                now = time.time()
                message = json.loads(raw)
                if message.get("type") != "next":
                    continue
                log = message["payload"]["data"]["logAdded"]
                if log["log"].startswith("warm-up"):
                    warmed.add(n)
                    continue
                latencies.append(now - datetime.fromisoformat(log["createdAt"]).timestamp())
                received += 1
                per[n] = per.get(n, 0) + 1

    connected: list[int] = []
    tasks = [asyncio.create_task(one(n)) for n in range(count)]
    # Measure only once every subscription is live on the server: each has received a warm-up log.
    while len(warmed) < count:
        await asyncio.sleep(0.05)
    ready.set()
    await asyncio.sleep(seconds + GRACE)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts = sorted(per.get(n, 0) for n in range(count))
    print("per-subscriber min/median/max", counts[0], counts[len(counts) // 2], counts[-1], file=sys.stderr)
    out.put((received, latencies))


def _subscriber_process(*args: object) -> None:
    asyncio.run(_subscribers(*args))  # type: ignore[arg-type]


async def _own_keys(client: httpx.AsyncClient, token: str, project_id: str, count: int) -> list[str]:
    """`count` API keys of the project, one per subscriber: as many principals as subscribers."""
    auth = {"authorization": f"Bearer {token}"}
    create = "mutation($i: ApiKeyInput!) { createApiKey(input: $i) { secret } }"
    keys = [
        await gql(client, create, {"i": {"projectId": project_id, "label": f"subscriber {n}"}}, **auth)
        for n in range(count)
    ]
    return [f"ApiKey {key['createApiKey']['secret']}" for key in keys]


async def _shared_renders(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    found = {"executed": 0.0, "reused": 0.0}
    for line in text.splitlines():
        if line.startswith("lodge_subscription_shared_renders_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
    return found


async def scenario(base: str, subscribers: int, rate: float, seconds: float, *, distinct: bool = False) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        tenant = await new_tenant(client)
        if distinct:
            authorizations = await _own_keys(client, tenant.token, tenant.project_id, subscribers)
        else:
            authorizations = [f"Bearer {tenant.token}"]
        ctx = mp.get_context("spawn")
        ready, out = ctx.Event(), ctx.Queue()
        ws_url = base.replace("http", "ws") + "/graphql"
        proc = ctx.Process(
            target=_subscriber_process,
            args=(ws_url, authorizations, tenant.project_id, subscribers, seconds, ready, out),
        )
        proc.start()
        key = {"authorization": f"ApiKey {tenant.secret}"}
        while not ready.is_set():
            await client.post(
                "/graphql", json={"query": INGEST_LOG, "variables": {"input": {"log": "warm-up"}}}, headers=key
            )
            await asyncio.sleep(0.2)
        renders_before = await _shared_renders(client)
        sent = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                await client.post(
                    "/graphql", json={"query": INGEST_LOG, "variables": {"input": {"log": f"tail {sent}"}}}, headers=key
                )
                sent += 1
            await asyncio.sleep(max(0.0, sent / rate - (time.perf_counter() - start)))
        received, latencies = await asyncio.get_running_loop().run_in_executor(None, out.get)
        proc.join()
        renders = {k: v - renders_before[k] for k, v in (await _shared_renders(client)).items()}
        expected = sent * subscribers
        ms = [1000 * x for x in latencies]
        principals = len(authorizations)
        return (
            f"{subscribers:5d} subscribers ({principals:4d} principals) x {rate:4.0f} logs/s: "
            f"{received / seconds:7.0f} deliveries/s, renders {renders['executed']:.0f} executed / "
            f"{renders['reused']:.0f} reused for {sent} logs, "
            f"received {received}/{expected}, latency p50 {percentile(ms, 50):6.1f} ms, "
            f"p99 {percentile(ms, 99):6.1f} ms, max {max(ms, default=float('nan')):6.1f} ms"
        )


async def main(seconds: float) -> None:
    print(f"machine: {machine()}")
    async with bench_database() as url, lodge_server(url) as base:
        for subscribers, rate in ((100, 50), (1000, 5)):
            print(await scenario(base, subscribers, rate, seconds), flush=True)
        print(await scenario(base, 1000, 5, seconds, distinct=True), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    asyncio.run(main(parser.parse_args().seconds))
