"""Shared by the benchmarks, the fuzzer and the drills: the machine, a tenant, GraphQL calls, percentiles.
Starting servers and databases is bench/launch.py's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


@dataclass
class Tenant:
    token: str
    project_id: str
    secret: str


async def gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    data: dict[str, Any] = body["data"]
    return data


async def new_tenant(client: httpx.AsyncClient) -> Tenant:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    data = await gql(
        client,
        "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }",
        {"i": {"email": email, "password": "benchmark password"}},
    )
    token = data["register"]["accessToken"]
    auth = {"authorization": f"Bearer {token}"}
    created = await gql(client, 'mutation { createProject(input: {name: "bench"}) { id } }', None, **auth)
    project = created["createProject"]["id"]
    key = await gql(
        client,
        "mutation($i: ApiKeyInput!) { createApiKey(input: $i) { secret } }",
        {"i": {"projectId": project, "label": "bench"}},
        **auth,
    )
    return Tenant(token=token, project_id=project, secret=key["createApiKey"]["secret"])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# wrk's done() for a script whose response() counts `failures` and keeps `first_failure` per
# thread: prints the total and a sample, which bench.floor.parse reads.
LUA_DONE = [
    "function done(summary, latency, requests)",
    "  local total, sample = 0, ''",
    "  for _, thread in ipairs(threads) do",
    "    total = total + thread:get('failures')",
    "    if sample == '' then sample = thread:get('first_failure') end",
    "  end",
    "  io.write(string.format('floor-failures: %d\\n', total))",
    "  if sample ~= '' then io.write('floor-sample: ' .. sample .. '\\n') end",
    "end",
]


async def wait_for_graphql(
    base: str, proc: subprocess.Popen[bytes], *, seconds: float, failed: Callable[[], str]
) -> None:
    """Until `base` answers `{ __typename }`; RuntimeError(failed()) if `proc` exits or time runs out."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.post("/graphql", json={"query": "{ __typename }"})
                if response.status_code == 200:
                    return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(failed())
            await asyncio.sleep(0.2)
