"""Ingest throughput on one worker: `ingestLogs` batches of 1000, `POST /ingest`, single `ingestLog`.

Run by hand: `uv run python -m bench.ingest [--seconds 10]`. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import httpx

from bench.common import machine, new_tenant
from bench.launch import bench_database, lodge_server

INGEST_LOGS = "mutation($inputs: [LogInput!]!) { ingestLogs(inputs: $inputs) { accepted } }"
INGEST_LOG = "mutation($input: LogInput!) { ingestLog(input: $input) { id } }"


def batch(n: int, tag: str) -> list[dict[str, object]]:
    return [
        {"log": f"{tag} request served in {i % 250} ms", "level": "INFO", "attributes": {"route": "/checkout", "i": i}}
        for i in range(n)
    ]


async def run_for(seconds: float, concurrency: int, work: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            n = await work()  # not `done += await work()`: that reads `done` before awaiting
            done += n

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


async def main(seconds: float) -> None:
    async with bench_database() as url, lodge_server(url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tenant = await new_tenant(client)
            key = {"authorization": f"ApiKey {tenant.secret}"}
            payload = {"query": INGEST_LOGS, "variables": {"inputs": batch(1000, "gql")}}
            ndjson = "\n".join(json.dumps(item) for item in batch(1000, "ndjson"))

            async def graphql_batch() -> int:
                r = await client.post("/graphql", json=payload, headers=key)
                return int(r.json()["data"]["ingestLogs"]["accepted"])

            async def ndjson_batch() -> int:
                r = await client.post("/ingest", content=ndjson, headers=key)
                return int(r.json()["accepted"])

            async def single() -> int:
                r = await client.post(
                    "/graphql", json={"query": INGEST_LOG, "variables": {"input": {"log": "one"}}}, headers=key
                )
                assert "errors" not in r.json()
                return 1

            await graphql_batch()  # warm up
            print(f"machine: {machine()}")
            for name, work, concurrency in (
                ("ingestLogs x1000", graphql_batch, 4),
                ("POST /ingest x1000", ndjson_batch, 4),
                ("ingestLog (single)", single, 32),
            ):
                count, elapsed = await run_for(seconds, concurrency, work)
                print(
                    f"{name:22s} {count / elapsed:10.0f} logs/s   ({count} logs in {elapsed:.1f}s, {concurrency} concurrent clients)"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    asyncio.run(main(parser.parse_args().seconds))
