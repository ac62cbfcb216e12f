"""What the benchmarks, the fuzzer and the drills run Lodge with: a free port, a throwaway database,
and `lodge serve` in a process of its own, from the checkout or from a commit's snapshot.

A snapshot is read from git's objects (`git archive`), so a run stays on one commit while someone
edits the checkout. The server is `python -m app.cli serve` run directly (not through `uv run`),
so its pid is the server's: profilers and the drills' process samples look at the right process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
# The machine's shared PostgreSQL, Redis and development server: never taken for a server of ours.
SHARED_PORTS = frozenset({5432, 6379, 8000})


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free, else any free port (never one of SHARED_PORTS)."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen = int(s.getsockname()[1])
            if chosen not in SHARED_PORTS:
                return chosen
    raise RuntimeError("no free port")


def plain_dsn(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+asyncpg://...`) as the plain DSN asyncpg and libpq take."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server of `server_url`; returns the new database's URL."""
    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def bench_database(server_url: str = SERVER_URL) -> AsyncIterator[str]:
    """A database of its own on the PostgreSQL at BENCH_DATABASE_URL, dropped afterwards."""
    name = f"lodge_bench_{uuid.uuid4().hex[:8]}"
    url = await create_database(server_url, name)
    try:
        yield url
    finally:
        await drop_database(server_url, name)


def git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=check).stdout.strip()


def export(ref: str, dest: Path) -> str:
    """A clean copy of commit `ref` in `dest` (created here), read from git's objects: the checkout
    and its index are left alone. Returns the commit's full id."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def server_env(database_url: str, broadcast_url: str, **extra: str) -> dict[str, str]:
    """The settings every launcher gives `lodge serve`: its database, its bus, a secret of its own
    (production refuses a placeholder) and LODGE_ENV=production; `extra` adds or overrides."""
    return {
        "DATABASE_URL": database_url,
        "BROADCAST_URL": broadcast_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "LODGE_ENV": "production",
        **extra,
    }


class LodgeProcess:
    """`lodge serve` as a process of its own, run from `source` (the checkout, or a directory
    `export` filled) with `env` over this process's environment. Its output is appended to `log`
    (a restarted server keeps one log) or, without one, goes to this process's. It can be stopped
    and started again; `start` returns once `/readyz` answers 200."""

    def __init__(
        self,
        source: Path,
        port: int,
        env: Mapping[str, str] | None = None,
        *,
        log: Path | None = None,
        serve_args: Sequence[str] = (),
        ready_seconds: float = 60,
        stop_seconds: float = 20,
    ) -> None:
        self.source = source
        self.port = port
        self.env = dict(env or {})
        self.log = log
        self.serve_args = list(serve_args)
        self.ready_seconds = ready_seconds
        self.stop_seconds = stop_seconds  # uvicorn lets requests in flight finish first
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        argv = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        environment = {**os.environ, **self.env}
        if self.log is None:
            self.proc = subprocess.Popen([*argv, *self.serve_args], cwd=self.source, env=environment)
        else:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [*argv, *self.serve_args], cwd=self.source, env=environment, stdout=out, stderr=subprocess.STDOUT
                )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_seconds
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/readyz")).status_code == 200:
                        return
                if not self.alive() or time.monotonic() > deadline:
                    hint = f" (see {self.log})" if self.log else ""
                    raise RuntimeError(f"lodge serve did not become ready{hint}")
                await asyncio.sleep(0.1)

    def _stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.proc.wait(self.stop_seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LodgeProcess]:
        """Started, and stopped afterwards (also when it never became ready)."""
        try:
            await self.start()
            yield self
        finally:
            await self.stop()


@contextlib.asynccontextmanager
async def lodge_process(
    database_url: str,
    *,
    port: int = 8765,
    broadcast_url: str = "memory://",
    serve_args: Sequence[str] = (),
    **env: str,
) -> AsyncIterator[tuple[str, LodgeProcess]]:
    """The benchmarks' server: `lodge serve` from the checkout, rate limits off, WARNING logs on
    this process's output; `env` adds settings. Hands over the process (one worker: its pid is the
    server's, for profilers)."""
    settings = server_env(
        database_url,
        broadcast_url,
        LOG_LEVEL="WARNING",
        # Benchmarks measure the server, not its limits (one client address, thousands of calls).
        **{f"LODGE_RATE_LIMIT_{kind}": "0" for kind in ("API_KEY", "USER", "ANONYMOUS")},
        **{f"LODGE_RATE_LIMIT_LOGIN_{kind}_PER_MINUTE": "0" for kind in ("ADDRESS", "EMAIL")},
        **env,
    )
    server = LodgeProcess(ROOT, port, settings, serve_args=serve_args)
    async with server.running():
        yield server.base, server


@contextlib.asynccontextmanager
async def lodge_server(
    database_url: str, *, port: int = 8765, broadcast_url: str = "memory://", **env: str
) -> AsyncIterator[str]:
    """`lodge_process`, when only the address is wanted."""
    async with lodge_process(database_url, port=port, broadcast_url=broadcast_url, **env) as (base, _):
        yield base
