"""Shared by the benchmarks: a throwaway database, a `lodge serve` subprocess, a tenant."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def wait_ready(base: str, proc: subprocess.Popen[bytes], hint: str = "") -> None:
    """Until `lodge serve` at `base` says it is ready (60 s at most, or until it exits)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lodge serve did not become ready{hint}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    name = f"lodge_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(_dsn(SERVER_URL))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(_dsn(SERVER_URL))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@contextlib.asynccontextmanager
async def lodge_server(
    database_url: str, *, port: int = 8765, broadcast_url: str = "memory://", **env: str
) -> AsyncIterator[str]:
    """`lodge serve` with one worker in its own process, as in production."""
    async with lodge_process(database_url, port=port, broadcast_url=broadcast_url, **env) as (base, _):
        yield base


@contextlib.asynccontextmanager
async def lodge_process(
    database_url: str,
    *,
    port: int = 8765,
    broadcast_url: str = "memory://",
    serve_args: Sequence[str] = (),
    **env: str,
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`lodge_server`, also handing over the process (one worker: its pid is the server's, for profilers)."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROADCAST_URL": broadcast_url,
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "LODGE_ENV": "production",
        "LOG_LEVEL": "WARNING",
        # Benchmarks measure the server, not its limits (one client address, thousands of calls).
        **{f"LODGE_RATE_LIMIT_{kind}": "0" for kind in ("API_KEY", "USER", "ANONYMOUS")},
        **{f"LODGE_RATE_LIMIT_LOGIN_{kind}_PER_MINUTE": "0" for kind in ("ADDRESS", "EMAIL")},
        **env,
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *serve_args]
    proc = subprocess.Popen(command, cwd=ROOT, env=environment)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


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
