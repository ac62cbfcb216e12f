"""Gateway flows per second on one worker: startFlow + completeFlow pairs from 100 concurrent clients.

Run by hand: `uv run python -m bench.gateway [--seconds 10] [--clients 100] [--client wrk|httpx]`.
Prints the oversell count, which must be 0: the final available count has to equal the initial
one minus every successful flow, and the reserved count the holds still open. Record results in
docs/benchmarks.md.

The clients are wrk's connections when wrk is installed (Debian's `wrk` package), as in
bench/floor.py: each connection alternates startFlow and completeFlow of the reservation it just
got (half succeed, half fail), and every answer is checked by the script. `--client httpx` drives
the same pairs from this process with httpx (the figures before issue 15 were taken so); on a small
machine that client costs more CPU per request than the server and caps the figure itself.

startFlow and completeFlow alone in their operation are batched with their concurrent peers
(app/gateway/coalesce.py: one statement per batch on the service's quota row), so over HTTP the
figure is bounded by the per-request cost of the pipeline, not by the row.

`--direct` measures the statements without HTTP: the clients are tasks of this process calling
app.gateway.coalesce.start_flow and complete_flow (batched, as the server does) against the same
kind of database, and the line also gives how many batches ran and their mean size. With
`--single` they call the one-statement-per-call functions instead (app.gateway.service.start_flow,
complete_flow), each on an autocommit connection of its own: the row's ceiling without batching.
Try `--direct --clients 1000`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.common import gql, machine, new_tenant
from bench.launch import bench_database, lodge_server, plain_dsn

START = "mutation($s: String!) { startFlow(service: $s) { reservation { id } } }"
COMPLETE = "mutation($r: ID!, $ok: Boolean!) { completeFlow(reservationId: $r, success: $ok) { availableRequests } }"


async def setup(client: httpx.AsyncClient, url: str, available: int) -> tuple[str, str, str]:
    tenant = await new_tenant(client)
    # The benchmark's own superuser, made through the database as `lodge create-user --admin` does.
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        user_id = await conn.fetchval(
            "SELECT u.id FROM users u JOIN projects p ON p.owner_id = u.id WHERE p.id = $1",
            uuid.UUID(tenant.project_id),
        )
        role_id = await conn.fetchval("INSERT INTO roles (name, permissions) VALUES ('bench', '[\"*\"]') RETURNING id")
        await conn.execute("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)", user_id, role_id)
    finally:
        await conn.close()
    auth = {"authorization": f"Bearer {tenant.token}"}
    service = (await gql(client, 'mutation { createService(input: {name: "bench"}) { id } }', None, **auth))[
        "createService"
    ]["id"]
    await gql(
        client,
        "mutation($p: ID!, $s: ID!) { addProjectService(projectId: $p, serviceId: $s) { id } }",
        {"p": tenant.project_id, "s": service},
        **auth,
    )
    env = (
        await gql(
            client,
            'mutation($p: ID!) { createEnvironment(projectId: $p, name: "bench") { id } }',
            {"p": tenant.project_id},
            **auth,
        )
    )["createEnvironment"]["id"]
    await gql(
        client,
        "mutation($e: ID!, $s: ID!, $n: Int!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: $n) { availableRequests } }",
        {"e": env, "s": service, "n": available},
        **auth,
    )
    key = await gql(
        client,
        "mutation($i: ApiKeyInput!) { createApiKey(input: $i) { secret } }",
        {"i": {"projectId": tenant.project_id, "environmentId": env, "label": "gateway"}},
        **auth,
    )
    return key["createApiKey"]["secret"], env, service


async def main(seconds: float, clients: int, *, client: str, direct: bool = False, single: bool = False) -> None:
    available = 10_000_000
    async with bench_database() as url:
        async with lodge_server(url) as base:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
                secret, env, _ = await setup(http, url, available)
                spent: int | None = None  # None: counted from what PostgreSQL holds (wrk)
                if direct:
                    how = "direct, one statement per call" if single else "direct, batched"
                elif client == "wrk":
                    how = "over HTTP (wrk)"
                    flows, refused, elapsed = await over_wrk(base, secret, seconds=seconds, clients=clients)
                else:
                    how = "over HTTP (httpx)"
                    flows, spent, refused, elapsed = await over_http(http, secret, seconds=seconds, clients=clients)
        batches = ""
        if direct:
            flows, spent, refused, elapsed, batches = await statements(
                url, secret, seconds=seconds, clients=clients, single=single
            )
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            environment_id = uuid.UUID(env)
            row = await conn.fetchrow(
                "SELECT available_requests, reserved_requests FROM environment_services WHERE environment_id = $1",
                environment_id,
            )
            completed = await conn.fetchval(
                "SELECT count(*) FROM request_logs WHERE environment_id = $1 AND status = 'flow_completed'",
                environment_id,
            )
            holding = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM reservations WHERE environment_id = $1", environment_id
            )
        finally:
            await conn.close()
    if spent is not None and spent != completed:
        raise RuntimeError(f"the clients saw {spent} flows succeed, PostgreSQL logged {completed}")
    oversell = (available - completed) - row["available_requests"]
    if row["reserved_requests"] != holding:
        raise RuntimeError(f"reserved {row['reserved_requests']} but the open reservations hold {holding}")
    print(f"machine: {machine()}")
    print(
        f"{flows / elapsed:7.0f} flows/s ({2 * flows / elapsed:.0f} startFlow+completeFlow/s) {how}, {flows} flows "
        f"in {elapsed:.1f}s, {clients} clients; refused {refused}; oversell {oversell}; "
        f"reserved left {row['reserved_requests']}{batches}"
    )


WRK_SCRIPT = """
wrk.method = 'POST'
wrk.path = '/graphql'
wrk.headers['Content-Type'] = 'application/json'
wrk.headers['Authorization'] = [==[@@key@@]==]
local start = [==[@@start@@]==]
local complete = {[true] = [==[@@ok@@]==], [false] = [==[@@failed@@]==]}
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
-- Per thread: reservations waiting for their completeFlow (a connection that has just got one
-- completes it with its next request), and what the answers said.
held, ok = {}, true
starts, completes, refused, failures, first_failure = 0, 0, 0, 0, ''
function request()
  local rid = table.remove(held)
  if rid == nil then
    return wrk.format(nil, nil, nil, start)
  end
  ok = not ok  -- half succeed, half fail
  return wrk.format(nil, nil, nil, string.gsub(complete[ok], '@@rid@@', rid))
end
function response(status, headers, body)
  local rid = body and string.match(body, '"reservation":{"id":"(rsv_%x+)"}')
  if status == 200 and rid then
    starts = starts + 1
    table.insert(held, rid)
  elseif status == 200 and string.find(body, '{"availableRequests":', 1, true) then
    completes = completes + 1
  elseif status == 200 and string.find(body, '"QUOTA_EXHAUSTED"', 1, true) then
    refused = refused + 1
  else
    failures = failures + 1
    if first_failure == '' then first_failure = status .. ' ' .. string.sub(body or '', 1, 400) end
  end
end
function done(summary, latency, requests)
  local totals, sample = {starts = 0, completes = 0, refused = 0, failures = 0}, ''
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
    if sample == '' then sample = thread:get('first_failure') end
  end
  for name, count in pairs(totals) do io.write(string.format('gateway-%s: %d\\n', name, count)) end
  if sample ~= '' then io.write('gateway-sample: ' .. sample .. '\\n') end
end
"""


async def over_wrk(base: str, secret: str, *, seconds: float, clients: int) -> tuple[int, int, float]:
    """Flows completed per second with wrk's connections as the clients (see the docstring)."""
    import json

    def body(query: str, variables: dict[str, object]) -> str:
        return json.dumps({"query": query, "variables": variables})

    complete = "mutation($r: ID!) { completeFlow(reservationId: $r, success: %s) { availableRequests } }"
    script = (
        WRK_SCRIPT.replace("@@key@@", f"ApiKey {secret}")
        .replace("@@start@@", body(START, {"s": "bench"}))
        .replace("@@ok@@", body(complete % "true", {"r": "@@rid@@"}))
        .replace("@@failed@@", body(complete % "false", {"r": "@@rid@@"}))
    )
    with tempfile.TemporaryDirectory(prefix="lodge-gateway-") as tmp:
        path = Path(tmp) / "flows.lua"
        path.write_text(script)
        args = ["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(path)]
        done = await asyncio.to_thread(subprocess.run, [*args, base + "/graphql"], capture_output=True, text=True)
    out = done.stdout + done.stderr
    counts = {
        name: re.search(rf"^gateway-{name}: (\d+)$", out, re.MULTILINE) for name in ("completes", "refused", "failures")
    }
    took = re.search(r"requests in ([\d.]+)(m?s)", out)
    if done.returncode != 0 or took is None or any(found is None for found in counts.values()):
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}")
    found = {name: int(match.group(1)) for name, match in counts.items() if match is not None}
    if found["failures"]:
        sample = re.search(r"^gateway-sample: (.*)$", out, re.MULTILINE)
        raise RuntimeError(f"{found['failures']} bad answers; first: {sample.group(1) if sample else '?'}")
    if errors := re.search(r"Socket errors: (.*)$", out, re.MULTILINE):
        raise RuntimeError(f"socket errors: {errors.group(1)}")
    elapsed = float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)
    return found["completes"], found["refused"], elapsed


async def over_http(
    client: httpx.AsyncClient, secret: str, *, seconds: float, clients: int
) -> tuple[int, int, int, float]:
    key = {"authorization": f"ApiKey {secret}"}
    flows = spent = refused = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal flows, spent, refused
        success = True
        while time.perf_counter() < deadline:
            r = (await client.post("/graphql", json={"query": START, "variables": {"s": "bench"}}, headers=key)).json()
            if r.get("errors"):
                refused += 1
                continue
            rid = r["data"]["startFlow"]["reservation"]["id"]
            success = not success  # half succeed, half fail
            done = (
                await client.post(
                    "/graphql", json={"query": COMPLETE, "variables": {"r": rid, "ok": success}}, headers=key
                )
            ).json()
            assert not done.get("errors"), done
            flows += 1
            spent += 1 if success else 0

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return flows, spent, refused, time.perf_counter() - start


async def statements(
    url: str, secret: str, *, seconds: float, clients: int, single: bool
) -> tuple[int, int, int, float, str]:
    """startFlow + completeFlow pairs from `clients` tasks of this process, without HTTP."""
    from sqlalchemy.orm import configure_mappers

    from app.api.errors import LodgeError
    from app.db import create_database, import_models
    from app.gateway import coalesce, service
    from app.logs import service as logs_service
    from app.settings import Settings

    import_models()
    configure_mappers()  # as the server's first query does: the models' attributes work
    # The server's pool (20 connections): batches need one per lane, single calls one each.
    db = create_database(url, Settings.model_validate({"environment": "production", "secret_key": uuid.uuid4().hex}))
    lanes = coalesce.Coalescer()
    try:
        async with db.autocommit() as conn:
            key = await logs_service.authenticate_api_key(conn, secret=secret)
        flows = spent = refused = 0
        deadline = time.perf_counter() + seconds

        async def start() -> str:
            if single:
                # The key read once: the server checks it per request (per batch when batched).
                async with db.autocommit() as conn:
                    reservation, _ = await service.start_flow(
                        conn, key=key, service="bench", endpoint=None, amount=1, ttl_seconds=300
                    )
            else:
                reservation, _ = await coalesce.start_flow(
                    db, secret=secret, service="bench", endpoint=None, amount=1, ttl_seconds=300, lanes=lanes
                )
            return reservation.id

        async def complete(rid: str, success: bool) -> None:
            if single:
                async with db.autocommit() as conn:
                    await service.complete_flow(conn, key=key, reservation_id=rid, success=success)
            else:
                await coalesce.complete_flow(db, secret=secret, reservation_id=rid, success=success, lanes=lanes)

        async def worker() -> None:
            nonlocal flows, spent, refused
            success = True
            while time.perf_counter() < deadline:
                try:
                    rid = await start()
                except LodgeError:
                    refused += 1
                    continue
                success = not success  # half succeed, half fail
                await complete(rid, success)
                flows += 1
                spent += 1 if success else 0

        begun = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - begun
    finally:
        await db.dispose()
    stats = lanes.stats
    batches = ""
    if not single and stats.batches:
        batches = (
            f"; {stats.batches} batches ({stats.batches / elapsed:.0f}/s; a key check and one statement each), "
            f"mean batch {stats.items / stats.batches:.1f}, "
            f"largest {stats.largest}, retried {stats.retries}, failed {stats.failed_batches}"
        )
    return flows, spent, refused, elapsed, batches


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--direct", action="store_true", help="call the gateway's functions, without HTTP")
    parser.add_argument("--single", action="store_true", help="with --direct: one statement per call, no batches")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients, client=args.client, direct=args.direct, single=args.single))
