"""The `lodge` command as a newcomer runs it: zero-config serve on the embedded PostgreSQL, and friends."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support import GraphQLWS, LiveServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "BROADCAST_URL", "SECRET_KEY", "LODGE_"))
    }
    return {**env, "LODGE_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", **extra}


def lodge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


async def test_serve_with_no_configuration(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path / "lodge")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--demo",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = ""
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while "GraphiQL at" not in output:
                line = await proc.stdout.readline()
                assert line, f"lodge serve exited early:\n{output}"
                output += line.decode()
        secret = re.search(r"API key\s+(\S+)", output)
        assert secret, output
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            page = await http.get("/graphql", headers={"accept": "text/html"})
            assert "graphiql" in page.text.lower()

            # The printed demo key works, and the demo logs are there.
            ingest = await http.post("/ingest", content='{"log": "hello"}', headers={"x-api-key": secret.group(1)})
            assert ingest.json()["accepted"] == 1

            # create-user works beside the running server, on the same embedded database.
            created = await asyncio.to_thread(
                lodge, "create-user", "--email", "ops@example.com", "--password", "a long enough password", env=env
            )
            assert created.returncode == 0, created.stderr
            login = await http.post(
                "/graphql",
                json={
                    "query": 'mutation { login(email: "ops@example.com", password: "a long enough password") { user { email } } }'
                },
            )
            assert login.json()["data"]["login"]["user"]["email"] == "ops@example.com"
            demo = await http.post(
                "/graphql",
                json={
                    "query": 'mutation { login(email: "demo@lodge.dev", password: "lodge-demo-password") { accessToken } }'
                },
            )
            token = demo.json()["data"]["login"]["accessToken"]
            logs = await http.post(
                "/graphql",
                json={"query": "{ projects { nodes { logs { totalCount } } } }"},
                headers={"authorization": f"Bearer {token}"},
            )
            assert logs.json()["data"]["projects"]["nodes"][0]["logs"]["totalCount"] == 6
            # The demo vendors, each with its trail of positions (the owner's to read), newest first.
            trails = await http.post(
                "/graphql",
                json={
                    "query": "{ me { vendors { nodes { name lat long locations(first: 50) { totalCount nodes { lat long timestamp } } } } } }"
                },
                headers={"authorization": f"Bearer {token}"},
            )
            demo_vendors = trails.json()["data"]["me"]["vendors"]["nodes"]
            assert len(demo_vendors) == 5
            for vendor in demo_vendors:
                trail = vendor["locations"]
                assert trail["totalCount"] == 12
                assert (trail["nodes"][0]["lat"], trail["nodes"][0]["long"]) == (vendor["lat"], vendor["long"])
                stamps = [node["timestamp"] for node in trail["nodes"]]
                assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 12
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # what docker stop and Kubernetes send
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    # The embedded PostgreSQL stopped with Lodge, after it, and its data stays for the next start.
    assert not (tmp_path / "lodge" / "postgres" / "postmaster.pid").exists()
    assert (tmp_path / "lodge" / "postgres" / "PG_VERSION").exists()


def test_several_workers_need_a_shared_bus(tmp_path: Path) -> None:
    result = lodge("serve", "--workers", "2", env=_env(tmp_path, BROADCAST_URL="memory://"))
    assert result.returncode == 2 and "redis" in result.stderr


def test_export_schema_matches_the_checked_in_file(tmp_path: Path) -> None:
    result = lodge("export-schema", env=_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout == (ROOT / "schema.graphql").read_text()


async def test_create_user_admin_makes_a_superuser(tmp_path: Path, database_url: str, server: LiveServer) -> None:
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    env = _env(tmp_path, DATABASE_URL=database_url)
    result = await asyncio.to_thread(
        lodge, "create-user", "--email", email, "--password", "a long enough password", "--admin", env=env
    )
    assert result.returncode == 0, result.stderr
    token = (
        await server.data(
            'mutation($e: String!) { login(email: $e, password: "a long enough password") { accessToken } }',
            {"e": email},
        )
    )["login"]["accessToken"]
    role = await server.data(
        'mutation { createRole(input: {name: "%s", permissions: ["*"]}) { id } }' % email, token=token
    )
    assert role["createRole"]["id"]
    again = await asyncio.to_thread(
        lodge, "create-user", "--email", email, "--password", "a long enough password", env=env
    )
    assert again.returncode == 1 and "CONFLICT" in again.stderr


def test_create_user_on_a_fresh_data_directory_migrates_first(tmp_path: Path) -> None:
    # Before any `serve`: the embedded PostgreSQL starts empty, so create-user migrates as serve does.
    env = _env(tmp_path / "lodge")
    before = lodge("migrate", "current", env=env)
    assert before.returncode == 0 and "no migrations applied" in before.stdout, before.stderr
    result = lodge(
        "create-user", "--email", "first@example.com", "--password", "a long enough password", "--admin", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "created superuser" in result.stdout and "Traceback" not in result.stderr
    after = lodge("migrate", "current", env=env)
    assert after.returncode == 0 and "the newest" in after.stdout and "run `lodge migrate`" not in after.stdout


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (("create-user", "--email", "a@example.com", "--password", "a long enough password"),
         {"DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/lodge"}, "cannot reach the database"),
        (("migrate",), {"DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/lodge"}, "cannot reach the database"),
        (("migrate", "current"), {"LODGE_DB_POOL_SIZE": "many"}, "invalid configuration: LODGE_DB_POOL_SIZE"),
        (("persisted-operations", "--dir", "/nonexistent/documents"), {}, "is not a directory"),
        (("export-schema", "-o", "/nonexistent/dir/schema.graphql"), {}, "No such file or directory"),
    ],
)  # fmt: skip
def test_a_failing_command_prints_one_clear_line(
    tmp_path: Path, args: tuple[str, ...], extra: dict[str, str], expected: str
) -> None:
    result = lodge(*args, env=_env(tmp_path / "lodge", **extra))
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"lodge {args[0]}: ") and expected in lines[0], result.stderr


async def test_sigterm_finishes_requests_in_flight_and_closes_websockets(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = _env(
        tmp_path / "lodge",
        DATABASE_URL=database_url,
        SECRET_KEY="a-real-secret-for-the-shutdown-test-" + uuid.uuid4().hex,
        LODGE_SHUTDOWN_GRACE_SECONDS="15",
        LODGE_MIGRATE_ON_START="false",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        async with GraphQLWS.connect(f"ws://127.0.0.1:{port}/graphql") as ws:
            await ws.subscribe(
                "subscription { vendorLocationUpdated(minLat: 0, maxLat: 1, minLong: 0, maxLong: 1) { lat } }"
            )
            # A request in flight: its headers sent before SIGTERM, its body after. It is in flight
            # once the server asks for the body (100 Continue): a request whose headers the server
            # had not read yet would be an idle connection, closed at once.
            body = b'{"query": "{ __typename }"}'
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /graphql HTTP/1.1\r\nHost: lodge\r\nContent-Type: application/json\r\n"
                + f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            await writer.drain()
            async with asyncio.timeout(20):
                interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100"), interim
            proc.send_signal(signal.SIGTERM)
            # Websockets are closed with 1012 (service restart): clients reconnect elsewhere.
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                async with asyncio.timeout(20):
                    while True:
                        await ws.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            writer.write(body)
            await writer.drain()
            async with asyncio.timeout(20):
                response = await reader.read()
            writer.close()
            head, _, payload = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), response
            assert b'"__typename":"Query"' in payload.replace(b" ", b"")
        # New connections are refused once it stops accepting; it exits cleanly.
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
