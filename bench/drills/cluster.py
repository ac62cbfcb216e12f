"""The drills' own servers: a PostgreSQL cluster (initdb into a temporary directory), a Redis and
`lodge serve` (bench/launch.py) against them, on free ports away from the machine's shared servers;
`cluster()` starts them and removes everything afterwards."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.launch import ROOT, LodgeProcess, create_database, export, free_port, git, server_env

PG_BIN = Path(os.environ.get("DRILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "lodge"  # Lodge's own database; the drill's monitoring connects to `postgres`
TIMEOUT = 10.0  # a client waiting longer than this counts the request as hung


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Postgres:
    """A PostgreSQL cluster of our own: initdb into `root`, trust auth, loopback only."""

    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.data = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.logfile = root / "postgres.log"

    def _run(self, *argv: str) -> str:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "60", "start")

    def _stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self._stop, mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL Lodge takes."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def version(self) -> str:
        return self._run("postgres", "--version").strip()


class Redis:
    """`redis-server` of our own, in the foreground, no persistence."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.logfile = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--dir", str(self.root)]
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start (see {self.logfile})")

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # in case it is paused
        self.proc.terminate()  # SIGTERM: Redis closes every client connection and exits
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def pause(self, frozen: bool) -> None:
        """SIGSTOP / SIGCONT: connections stay open and nothing answers, as in a network partition."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def version() -> str:
        return subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()


class Lodge(LodgeProcess):
    """`lodge serve` (bench/launch.py), logging to `root`/lodge.log, and what the soak samples of its
    process in /proc."""

    def __init__(self, root: Path, port: int, source: Path) -> None:
        self.logfile = root / "lodge.log"
        # 40 s to stop: uvicorn lets requests in flight finish first.
        super().__init__(source, port, log=self.logfile, ready_seconds=90, stop_seconds=40)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def fd_count(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def sockets(self, peers: dict[int, str]) -> Counter[str]:
        """The process's sockets by what they connect to: `peers` (remote port -> name), `clients`
        (accepted on Lodge's port), `listening`, `other` (unix sockets and the rest)."""
        tcp: dict[str, tuple[int, int, str]] = {}  # inode -> (local port, remote port, state)
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]:
                    parts = line.split()
                    local, remote = (int(a.rsplit(":", 1)[1], 16) for a in parts[1:3])
                    tcp[parts[9]] = (local, remote, parts[3])
        kinds: Counter[str] = Counter()
        for entry in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(entry)
                if not link.startswith("socket:["):
                    continue
                local, remote, state = tcp.get(link[8:-1], (0, 0, ""))
                if state == "0A":
                    kinds["listening"] += 1
                elif remote in peers:
                    kinds[peers[remote]] += 1
                elif local == self.port:
                    kinds["clients"] += 1
                else:
                    kinds["other"] += 1
        return kinds

    def log_lines(self) -> list[str]:
        return self.logfile.read_text(errors="replace").splitlines() if self.logfile.exists() else []


@dataclass
class Cluster:
    root: Path
    pg: Postgres
    redis: Redis
    lodge: Lodge
    source: str
    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        """Seconds since the drill's clock started (reset with `start_clock`)."""
        return time.monotonic() - self.t0

    def start_clock(self) -> None:
        self.t0 = time.monotonic()

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.lodge.base, timeout=TIMEOUT, **kwargs)

    async def db(self, database: str = DATABASE) -> Any:
        return await asyncpg.connect(self.pg.dsn(database), timeout=10)


@contextlib.asynccontextmanager
async def cluster(args: argparse.Namespace, *, log_level: str = "INFO") -> AsyncIterator[Cluster]:
    """Our own PostgreSQL and Redis, and Lodge against them; all stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"lodge-drill-{args.drill}-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    source = root / "src" if args.ref else ROOT
    c = Cluster(
        root=root,
        pg=Postgres(root, free_port(55432)),
        redis=Redis(root, free_port(56379)),
        lodge=Lodge(root, free_port(58765), source),
        source=describe_source(args.ref),
    )
    failed = True
    try:
        if args.ref:
            await asyncio.to_thread(export, args.ref, source)
        await asyncio.to_thread(c.pg.init)
        await c.pg.start()
        database_url = await create_database(c.pg.url(), DATABASE)
        await c.redis.start()
        c.lodge.env = server_env(
            database_url,
            c.redis.url,
            LODGE_DATA_DIR=str(root / "lodge-data"),
            LOG_LEVEL=log_level,
            # Tokens must outlive the soak; nothing else differs from the defaults.
            LODGE_ACCESS_TOKEN_TTL="86400",
        )
        await c.lodge.start()
        say(f"postgres :{c.pg.port}, redis :{c.redis.port}, lodge :{c.lodge.port} (pid {c.lodge.pid}) in {root}")
        yield c
        failed = False
    finally:
        if failed:
            for path in (c.lodge.logfile, c.pg.logfile, c.redis.logfile):
                if path.exists():
                    tail = path.read_text(errors="replace").splitlines()[-25:]
                    print(f"--- last lines of {path.name} ---", *tail, sep="\n", file=sys.stderr)
        for step in (c.lodge.stop, c.redis.stop):
            with contextlib.suppress(Exception):
                await step()
        if c.pg.running():
            with contextlib.suppress(Exception):
                await c.pg.stop("immediate")
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def describe_source(ref: str | None) -> str:
    if ref:
        return f"`git archive {ref}` ({git('rev-parse', '--short', ref, check=False)})"
    dirty = git("status", "--porcelain", "--", "app", "migrations", check=False)
    return f"working tree at {git('rev-parse', '--short', 'HEAD', check=False)}" + (
        " + uncommitted changes in app/" if dirty else ""
    )
