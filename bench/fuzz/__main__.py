"""`python -m bench.fuzz`: the command line, and one run from start to end (a throwaway database, `lodge serve`
from `--rev`, seeding, fuzzing, health at the end, the report). What it sends and checks: bench/fuzz/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import graphql
import httpx
from graphql import GraphQLSchema

from bench import fuzz
from bench.fuzz.database import Database
from bench.fuzz.fuzzer import Fuzzer, run_examples
from bench.fuzz.oracle import REQUEST_TIMEOUT, Case, Problem
from bench.fuzz.report import attach_tracebacks, iter_problem_json, summarize
from bench.launch import ROOT, LodgeProcess, bench_database, export, free_port, git, plain_dsn, server_env


def server_code(rev: str, out: Path) -> tuple[Path, str]:
    """The code the server runs: a revision exported with `git archive` (the checkout may be in the middle of
    someone's edit), or with `worktree` the checkout as it is."""
    if rev == "worktree":
        return ROOT, f"working tree at {git('describe', '--always', '--dirty')}"
    tree = out / "code"
    commit = export(rev, tree)
    return tree, f"commit {commit[:12]} ({git('log', '-1', '--format=%s', commit)[:80]})"


def server(database_url: str, log_path: Path, redis_url: str, code: Path) -> LodgeProcess:
    """`lodge serve` in its own process; its log (tracebacks of unexpected errors) goes to `log_path`."""
    env = server_env(
        database_url,
        redis_url,
        LOG_LEVEL="WARNING",
        LODGE_LOG_FORMAT="json",
        LODGE_ACCESS_TOKEN_TTL="86400",
        # The sweepers write on their own schedule, which would look like partial writes.
        LODGE_SESSION_SWEEP_SECONDS="86400",
        LODGE_RESERVATION_SWEEP_SECONDS="86400",
        LODGE_RETENTION_SWEEP_SECONDS="86400",
        LODGE_LEASE_SWEEP_SECONDS="86400",
    )
    return LodgeProcess(code, free_port(), env, log=log_path)


async def introspect(client: httpx.AsyncClient) -> GraphQLSchema:
    response = await client.post("/graphql", json={"query": graphql.get_introspection_query()})
    sdl = graphql.print_schema(graphql.build_client_schema(response.json()["data"]))
    return graphql.build_schema(sdl)  # from SDL, so argument defaults carry AST nodes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=(fuzz.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--progress", type=int, default=500, help="print a line every N documents (0: never)")
    parser.add_argument("--rev", default="HEAD", help="git revision the server runs, or `worktree` for the checkout")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    out = ROOT / "bench" / ".results" / f"fuzz-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "server.log"
    code, described = server_code(args.rev, out)
    print(f"seed {seed}; server runs {described}; server log and problems in {out}", flush=True)
    loop = asyncio.new_event_loop()
    try:
        summary = drill(loop, args.examples, seed, args.redis, log_path, code, args.progress)
        summary = f"server code: {described}\n{summary}"
        (out / "summary.txt").write_text(summary + "\n")
    finally:
        loop.close()
    print(summary)


async def _setup(
    stack: contextlib.AsyncExitStack, redis_url: str, log_path: Path, code: Path
) -> tuple[LodgeProcess, Any, Any]:
    url = await stack.enter_async_context(bench_database())
    lodge = await stack.enter_async_context(server(url, log_path, redis_url, code).running())
    conn = await asyncpg.connect(plain_dsn(url))
    stack.push_async_callback(conn.close)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    client = await stack.enter_async_context(
        httpx.AsyncClient(base_url=lodge.base, timeout=REQUEST_TIMEOUT, limits=limits)
    )
    return lodge, conn, client


def drill(
    loop: asyncio.AbstractEventLoop, examples: int, seed: int, redis_url: str, log_path: Path, code: Path, progress: int
) -> str:
    """Set up, fuzz (hypothesis drives the loop example by example), check health, tear down."""
    stack = contextlib.AsyncExitStack()
    try:
        lodge, conn, client = loop.run_until_complete(_setup(stack, redis_url, log_path, code))
        db = Database(conn)
        loop.run_until_complete(db.prepare())
        schema = loop.run_until_complete(introspect(client))
        fuzzer = Fuzzer(lodge.base, client, db, schema)
        loop.run_until_complete(fuzzer.seeder.seed())
        run_examples(fuzzer, loop, examples, seed, progress)
        healthz = loop.run_until_complete(client.get("/healthz"))
        readyz = loop.run_until_complete(client.get("/readyz"))
        alive = lodge.alive()
        healthy = (
            f"/healthz {healthz.status_code}, /readyz {readyz.status_code}, process {'alive' if alive else 'DEAD'}"
        )
        if healthz.status_code != 200 or not alive:
            fuzzer.problems.append(
                Problem(
                    "unhealthy", "server unhealthy at the end", Case(-1, "-", "-", "", {}, False, "-", []), "", healthy
                )
            )
    finally:
        loop.run_until_complete(stack.aclose())
    fuzzer.problems, unattributed = attach_tracebacks(fuzzer.problems, log_path)
    (log_path.parent / "problems.json").write_text(
        json.dumps(list(iter_problem_json(fuzzer.problems)), indent=1, default=str)
    )
    summary = summarize(fuzzer.stats, fuzzer.mutation_names, fuzzer.problems, unattributed, healthy, seed, examples)
    return summary


if __name__ == "__main__":
    main()
