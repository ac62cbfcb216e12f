"""Vendors: `vendorsNear` over 100,000 vendors, and the nested query "100 vendors with their 10
latest locations" on Lodge and on PostGraphile 4, from the same database in the same run.

Run by hand: `uv run python -m bench.vendors [--vendors 100000] [--seconds 20] [--connections 16]`.
Needs Node.js (PostGraphile 4 is installed with npm under .lodge/bench/ on first use) and wrk
(Debian's `wrk` package) as the load generator, so that the client costs both servers the same.
Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app import migrate
from bench.common import ROOT, _dsn, bench_database, gql, lodge_server, machine

POSTGRAPHILE_DIR = ROOT / ".lodge" / "bench" / "postgraphile4"
WITH_HISTORY = 100  # the newest vendors, each with a history
HISTORY = 30  # positions per vendor with a history

LODGE_NESTED = """
query Nested {
  vendors(first: 100) {
    nodes { id name lat long locations(first: 10) { nodes { id lat long timestamp } } }
  }
}
"""
POSTGRAPHILE_NESTED = """
query Nested {
  allVendors(first: 100, orderBy: [CREATED_AT_DESC, ID_DESC]) {
    nodes { id name lat long locationsByVendorId(first: 10, orderBy: [TIMESTAMP_DESC, ID_DESC]) { nodes { id lat long timestamp } } }
  }
}
"""
NEAR = """
query Near($lat: Float!, $long: Float!) {
  vendorsNear(lat: $lat, long: $long, radiusKm: 5, openOnly: true, first: 20) { distanceKm vendor { id name } }
}
"""
CITIES = [
    (40.71, -74.01),
    (34.05, -118.24),
    (41.88, -87.63),
    (29.76, -95.37),
    (51.51, -0.13),
    (48.86, 2.35),
    (52.52, 13.40),
    (35.68, 139.69),
    (-33.87, 151.21),
    (19.43, -99.13),
    (-23.55, -46.63),
    (28.61, 77.21),
    (1.35, 103.82),
    (55.76, 37.62),
    (-36.85, 174.76),
    (64.15, -21.94),
    (-17.71, 178.07),
    (37.77, -122.42),
]


async def seed(url: str, count: int) -> tuple[uuid.UUID, list[tuple[float, float]]]:
    """`count` vendors, 70% around cities and the rest anywhere on the globe (uniform on the
    sphere); the newest WITH_HISTORY have HISTORY positions each. Returns the owner and some
    points to search around."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(_dsn(url))
    try:
        owner = await conn.fetchval(
            "INSERT INTO users (email, name) VALUES ($1, 'bench owner') RETURNING id",
            f"bench-{uuid.uuid4().hex[:8]}@example.com",
        )
        rows = []
        for index in range(count):
            if rng.random() < 0.7:
                lat0, long0 = rng.choice(CITIES)
                lat = max(-90.0, min(90.0, lat0 + rng.gauss(0, 0.1)))
                long = ((long0 + rng.gauss(0, 0.1) + 180) % 360) - 180
            else:
                lat = math.degrees(math.asin(2 * rng.random() - 1))
                long = rng.uniform(-180, 180)
            created = now - timedelta(seconds=count - index)
            rows.append((uuid.uuid4(), owner, f"vendor {index}", rng.random() < 0.8, lat, long, created, created))
        await conn.copy_records_to_table(
            "vendors",
            records=rows,
            columns=["id", "user_id", "name", "open", "lat", "long", "created_at", "updated_at"],
        )
        history = []
        for vendor_id, _, _, _, lat, long, created, _ in rows[-WITH_HISTORY:]:
            for step in range(HISTORY):
                stamp = created + timedelta(seconds=step)
                history.append((uuid.uuid4(), vendor_id, lat + step * 1e-4, long, stamp))
        await conn.copy_records_to_table(
            "locations", records=history, columns=["id", "vendor_id", "lat", "long", "timestamp"]
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    points = [(lat + rng.gauss(0, 0.05), long + rng.gauss(0, 0.05)) for lat, long in CITIES for _ in range(5)]
    return owner, points


@contextlib.asynccontextmanager
async def postgraphile(url: str, port: int) -> AsyncIterator[str]:
    cli = POSTGRAPHILE_DIR / "node_modules" / "postgraphile" / "cli.js"
    if not cli.exists():
        POSTGRAPHILE_DIR.mkdir(parents=True, exist_ok=True)
        install = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(POSTGRAPHILE_DIR), "postgraphile@4"]
        await asyncio.to_thread(subprocess.run, install, check=True)
    args = ["node", str(cli), "-c", _dsn(url), "-s", "public", "-n", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen([*args, "--disable-query-log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=base) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.post("/graphql", json={"query": "{ __typename }"})
                    if response.status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    errors = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"postgraphile did not start: {errors}")
                await asyncio.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def wrk(url: str, body: dict[str, Any], headers: dict[str, str], *, seconds: int, connections: int) -> dict[str, float]:
    """Requests per second and latency percentiles (ms) from wrk, for one POST body."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
        *(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, f"{url}/graphql"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for p in ("50", "99"):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
        result[f"p{p}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out:
        raise RuntimeError(out)
    return result


def check_nested(nodes: list[dict[str, Any]], histories: str) -> None:
    assert len(nodes) == 100, len(nodes)
    assert all(len(n[histories]["nodes"]) == 10 for n in nodes), "each vendor has 10 positions"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vendors", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    print(machine())
    async with bench_database() as url:
        await migrate.upgrade(url)
        started = time.monotonic()
        owner, points = await seed(url, args.vendors)
        print(f"seeded {args.vendors} vendors in {time.monotonic() - started:.1f} s")
        async with lodge_server(url) as lodge, postgraphile(url, 5678) as pg:
            async with httpx.AsyncClient(base_url=lodge, timeout=60) as client:
                email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
                data = await gql(
                    client,
                    "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }",
                    {"i": {"email": email, "password": "benchmark password"}},
                )
                token, user_id = data["register"]["accessToken"], data["register"]["user"]["id"]
                conn = await asyncpg.connect(_dsn(url))
                await conn.execute("UPDATE vendors SET user_id = $1 WHERE user_id = $2", uuid.UUID(user_id), owner)
                await conn.close()
                auth = {"authorization": f"Bearer {token}"}
                check_nested((await gql(client, LODGE_NESTED, None, **auth))["vendors"]["nodes"], "locations")
                lat, long = points[0]
                near = await gql(client, NEAR, {"lat": lat, "long": long}, **auth)
                print(f"vendorsNear around {lat:.2f},{long:.2f}: {len(near['vendorsNear'])} vendors")
            async with httpx.AsyncClient(base_url=pg, timeout=60) as client:
                body = (await client.post("/graphql", json={"query": POSTGRAPHILE_NESTED})).json()
                check_nested(body["data"]["allVendors"]["nodes"], "locationsByVendorId")

            run = {"seconds": args.seconds, "connections": args.connections}
            results = {
                "Lodge vendorsNear": wrk(lodge, {"query": NEAR, "variables": {"lat": lat, "long": long}}, auth, **run),
                "Lodge nested": wrk(lodge, {"query": LODGE_NESTED}, auth, **run),
                "PostGraphile 4 nested": wrk(pg, {"query": POSTGRAPHILE_NESTED}, {}, **run),
            }
    print(f"\n{args.connections} connections, {args.seconds} s each, {args.vendors} vendors")
    print("| run | requests/s | p50 ms | p99 ms |\n| --- | --- | --- | --- |")
    for name, result in results.items():
        print(f"| {name} | {result['rps']:.0f} | {result['p50']:.1f} | {result['p99']:.1f} |")
    ratio = results["Lodge nested"]["rps"] / results["PostGraphile 4 nested"]["rps"]
    print(f"\nLodge / PostGraphile 4 on the nested query: {ratio:.2f} (target >= 0.5)")


if __name__ == "__main__":
    asyncio.run(main())
