"""Gateway flows per second on one worker: startFlow + completeFlow pairs from 100 concurrent clients.

Run by hand: `uv run python -m bench.gateway [--seconds 10]`. Prints the oversell count, which
must be 0: the final available count has to equal the initial one minus every successful flow.
Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import httpx

from bench.common import _dsn, bench_database, gql, lodge_server, machine, new_tenant

START = "mutation($s: String!) { startFlow(service: $s) { reservation { id } } }"
COMPLETE = "mutation($r: ID!, $ok: Boolean!) { completeFlow(reservationId: $r, success: $ok) { availableRequests } }"


async def setup(client: httpx.AsyncClient, url: str, available: int) -> tuple[str, str, str]:
    tenant = await new_tenant(client)
    # The benchmark's own superuser, made through the database as `lodge create-user --admin` does.
    conn = await asyncpg.connect(_dsn(url))
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


async def main(seconds: float, clients: int) -> None:
    available = 10_000_000
    async with bench_database() as url, lodge_server(url) as base:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            secret, env, _ = await setup(client, url, available)
            key = {"authorization": f"ApiKey {secret}"}
            flows = spent = refused = 0
            deadline = time.perf_counter() + seconds

            async def worker(n: int) -> None:
                nonlocal flows, spent, refused
                success = True
                while time.perf_counter() < deadline:
                    r = (
                        await client.post("/graphql", json={"query": START, "variables": {"s": "bench"}}, headers=key)
                    ).json()
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
            await asyncio.gather(*(worker(n) for n in range(clients)))
            elapsed = time.perf_counter() - start
        conn = await asyncpg.connect(_dsn(url))
        try:
            row = await conn.fetchrow(
                "SELECT available_requests, reserved_requests FROM environment_services WHERE environment_id = $1",
                uuid.UUID(env),
            )
        finally:
            await conn.close()
    oversell = (available - spent) - row["available_requests"]
    print(f"machine: {machine()}")
    print(
        f"{flows / elapsed:7.0f} flows/s ({2 * flows / elapsed:.0f} mutations/s), {flows} flows in {elapsed:.1f}s, "
        f"{clients} clients; refused {refused}; oversell {oversell}; reserved left {row['reserved_requests']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients))
