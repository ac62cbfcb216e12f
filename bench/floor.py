"""The per-request floor of the pipeline on one worker (issue 15): the cheapest request of each kind,
driven by wrk so that the client costs little next to the server.

Run by hand: `uv run python -m bench.floor [--seconds 10] [--only ROW] [--profile] [--workers 1,2]`.
Needs wrk (Debian's `wrk` package: `apt-get install -y wrk`). `--workers 1,2` measures every row
against `lodge serve --workers 1` and then `--workers 2` (on a Redis bus, `--redis`), in one run,
and prints each figure and the ratio. Rows:

- typename:      `{ __typename }`, no auth
- me:            `{ me { id email } }` with a JWT (one user read)
- createProject: with a JWT, a distinct name per request (one insert and its audit row)
- ingestLog:     one log through GraphQL with an API key
- ingest:        `POST /ingest`, one NDJSON line, with an API key

Each row gets a warm-up run, then a measured one. Every response is checked (status 200 and the
expected answer in the body, from a Lua `response` hook): a row with a failed request is an error,
not a figure. `--profile` attaches `py-spy record` to the server for each measured run and writes
bench/.results/floor-<row>-<time>.svg (.json for speedscope, .txt for raw collapsed stacks); py-spy pauses the server to
sample it, so the figures of a profiled run are not for the record. Record results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import LUA_DONE, machine, new_tenant
from bench.launch import ROOT, bench_database, lodge_process, plain_dsn

RESULTS = ROOT / "bench" / ".results"
NAME = "@@name@@"  # where createProject's body takes the per-request name

ME = "{ me { id email } }"
CREATE_PROJECT = "mutation($i: ProjectInput!) { createProject(input: $i) { id } }"
INGEST_LOG = "mutation($input: LogInput!) { ingestLog(input: $input) { id } }"
LINE = {"log": "floor request served in 12 ms", "level": "INFO", "attributes": {"route": "/checkout"}}
ROWS = ("typename", "me", "createProject", "ingestLog", "ingest")


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    path: str
    body: str  # NAME, if present, is replaced per request by a distinct project name
    headers: dict[str, str]
    expect: str  # in every good response's body (orjson writes JSON without spaces)


def rows(token: str, secret: str) -> list[Row]:
    def graphql(query: str, variables: dict[str, object] | None = None) -> str:
        return json.dumps({"query": query, "variables": variables or {}}, separators=(",", ":"))

    graphql_json = {"Content-Type": "application/json"}
    jwt = {**graphql_json, "Authorization": f"Bearer {token}"}
    key = {"Authorization": f"ApiKey {secret}"}
    return [
        Row(
            "typename",
            "`{ __typename }`, no auth",
            "/graphql",
            graphql("{ __typename }"),
            graphql_json,
            '"__typename":"Query"',
        ),
        Row("me", "`{ me { id email } }`, JWT", "/graphql", graphql(ME), jwt, '"email":"'),
        Row(
            "createProject",
            "`createProject`, JWT (insert + audit row)",
            "/graphql",
            graphql(CREATE_PROJECT, {"i": {"name": NAME}}),
            jwt,
            '"createProject":{"id":"',
        ),
        Row(
            "ingestLog",
            "`ingestLog` (single), API key",
            "/graphql",
            graphql(INGEST_LOG, {"input": {"log": "floor request served in 12 ms", "level": "INFO"}}),
            {**graphql_json, **key},
            '"ingestLog":{"id":"',
        ),
        Row(
            "ingest",
            "`POST /ingest`, one NDJSON line, API key",
            "/ingest",
            json.dumps(LINE) + "\n",
            {**key, "Content-Type": "application/x-ndjson"},
            '"accepted":1',
        ),
    ]


def lua_string(text: str) -> str:
    if "]==]" in text or text.startswith("\n"):
        raise ValueError(f"cannot quote {text!r} as a Lua long string")
    return f"[==[{text}]==]"


def lua_script(row: Row, tag: str) -> str:
    """wrk's script for one run: the request, a check of every response, the failures in `done`."""
    lines = ["wrk.method = 'POST'"]
    # A space after `[`: `[[` would open a Lua long string.
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in row.headers.items()]
    if NAME in row.body:
        before, after = row.body.split(NAME)
        # Globals per thread: `tid` comes from setup(), so names are distinct across threads and runs.
        lines += [
            f"local before, after, tag = {lua_string(before)}, {lua_string(after)}, {lua_string(tag)}",
            "counter = 0",
            "function request()",
            "  counter = counter + 1",
            "  return wrk.format(nil, nil, nil, before .. 'floor ' .. tag .. ' ' .. tid .. '-' .. counter .. after)",
            "end",
        ]
    else:
        lines.append(f"wrk.body = {lua_string(row.body)}")
    lines += [
        f"local expect = {lua_string(row.expect)}",
        "local threads = {}",
        "function setup(thread)",
        "  table.insert(threads, thread)",
        "  thread:set('tid', #threads)",
        "end",
        "failures, first_failure = 0, ''",
        "function response(status, headers, body)",
        "  if status ~= 200 or body == nil or not string.find(body, expect, 1, true) then",
        "    failures = failures + 1",
        "    if first_failure == '' then first_failure = status .. ' ' .. string.sub(body or '', 1, 400) end",
        "  end",
        "end",
        *LUA_DONE,
    ]
    return "\n".join(lines) + "\n"


def wrk(script: Path, url: str, *, seconds: float, threads: int, connections: int) -> str:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    done = subprocess.run([*args, "-s", str(script), url], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    # wrk reports a script error on stderr and goes on without the script's hooks.
    return done.stdout + done.stderr


def milliseconds(out: str, percent: str) -> float:
    found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percent}% latency in wrk's output:\n{out}")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found.group(2)]


def parse(row: Row, out: str) -> dict[str, float]:
    failures = re.search(r"^floor-failures: (\d+)$", out, re.MULTILINE)
    if failures is None:
        raise RuntimeError(f"{row.name}: wrk did not run the script's done():\n{out}")
    if int(failures.group(1)):
        sample = re.search(r"^floor-sample: (.*)$", out, re.MULTILINE)
        raise RuntimeError(
            f"{row.name}: {failures.group(1)} responses were not good; first: {sample.group(1) if sample else '?'}"
        )
    if socket := re.search(r"Socket errors: (.*)$", out, re.MULTILINE):
        raise RuntimeError(f"{row.name}: socket errors ({socket.group(1)}): latencies would leave them out")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rps is None or count is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "requests": float(count.group(1)),
        "p50": milliseconds(out, "50"),
        "p99": milliseconds(out, "99"),
    }


def profiler(pid: int, row: Row, seconds: float, fmt: str) -> tuple[subprocess.Popen[bytes], Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[fmt]  # raw: collapsed stacks, for grep
    output = RESULTS / f"floor-{row.name}-{stamp}.{suffix}"
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    args += ["--format", fmt, "--output", str(output)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), output


def run_row(row: Row, base: str, pid: int, args: argparse.Namespace) -> tuple[dict[str, float], Path | None]:
    run = {"threads": args.threads, "connections": args.connections}
    url = base + row.path
    with tempfile.TemporaryDirectory(prefix="lodge-floor-") as tmp:
        warm, measured = Path(tmp) / "warm.lua", Path(tmp) / "measured.lua"
        warm.write_text(lua_script(row, f"w{uuid.uuid4().hex[:6]}"))
        measured.write_text(lua_script(row, f"m{uuid.uuid4().hex[:6]}"))
        if args.warmup > 0:
            parse(row, wrk(warm, url, seconds=args.warmup, **run))
        if not args.profile:
            return parse(row, wrk(measured, url, seconds=args.seconds, **run)), None
        spy, output = profiler(pid, row, args.seconds, args.profile_format)
        try:
            out = wrk(measured, url, seconds=args.seconds, **run)
            spy_out = spy.communicate(timeout=args.seconds + 60)[0].decode(errors="replace")
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
    if spy.returncode != 0 or not output.exists():
        raise RuntimeError(
            f"py-spy failed ({spy.returncode}); it needs ptrace rights on the server "
            f"(root, CAP_SYS_PTRACE or kernel.yama.ptrace_scope=0):\n{spy_out}"
        )
    return parse(row, out), output


async def preflight(client: httpx.AsyncClient, row: Row) -> None:
    """One request as wrk will send it, so that a wrong document fails here and says why."""
    body = row.body.replace(NAME, f"floor preflight {uuid.uuid4().hex[:6]}")
    response = await client.post(row.path, content=body, headers=row.headers)
    if response.status_code != 200 or row.expect not in response.text:
        raise RuntimeError(f"{row.name}: {response.status_code} {response.text[:400]} (expected {row.expect!r})")


async def measure(
    url: str, workers: int, args: argparse.Namespace
) -> tuple[list[tuple[Row, dict[str, float]]], list[Path]]:
    chosen = set(args.only or ROWS)
    results: list[tuple[Row, dict[str, float]]] = []
    profiles: list[Path] = []
    serve: dict[str, Any] = {"serve_args": ["--workers", str(workers)]} if workers > 1 else {}
    if workers > 1 or args.compare_workers:
        # Every count on the same bus when counts are compared: publishing to Redis costs what
        # the in-process bus does not.
        serve["broadcast_url"] = args.redis
    # The JWT has to outlive every row (15 minutes by default).
    async with lodge_process(url, port=args.port, LODGE_ACCESS_TOKEN_TTL="86400", **serve) as (base, proc):
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tenant = await new_tenant(client)
            selected = [row for row in rows(tenant.token, tenant.secret) if row.name in chosen]
            for row in selected:
                await preflight(client, row)
        for row in selected:
            print(
                f"{row.name} ({workers} worker{'s' if workers > 1 else ''}): {args.warmup:g} s warm-up, "
                f"{args.seconds:g} s measured",
                file=sys.stderr,
                flush=True,
            )
            result, profile = await asyncio.to_thread(run_row, row, base, proc.pid, args)
            results.append((row, result))
            if profile:
                profiles.append(profile)
    return results, profiles


async def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.floor needs wrk, the HTTP load generator: apt-get install -y wrk (Debian/Ubuntu)")
    counts = [int(n) for n in args.workers.split(",")]
    args.compare_workers = len(counts) > 1
    if args.profile and any(n > 1 for n in counts):
        raise SystemExit("--profile samples one process: use it with --workers 1")
    by_workers: dict[int, list[tuple[Row, dict[str, float]]]] = {}
    profiles: list[Path] = []
    async with bench_database() as url:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            postgres = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        for workers in counts:
            by_workers[workers], found = await measure(url, workers, args)
            profiles += found
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; PostgreSQL {postgres}")
    print(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.seconds:g} s per row after "
        f"{args.warmup:g} s of warm-up; `lodge serve --workers {args.workers}`, rate limits off, client on the same machine"
    )
    if args.profile:
        print("profiled run: py-spy pauses the server to sample it, these figures are not for the record")
    first = by_workers[counts[0]]
    heads = " | ".join(f"{n} worker{'s' if n > 1 else ''}: req/s, p50, p99 ms" for n in counts)
    ratio = " | ratio" if len(counts) > 1 else ""
    print(f"\n| row | {heads}{ratio} |")
    print("| --- |" + " ---: |" * len(counts) + (" ---: |" if len(counts) > 1 else ""))
    for index, (row, _) in enumerate(first):
        cells = []
        for n in counts:
            result = by_workers[n][index][1]
            cells.append(f"{result['rps']:,.0f}, {result['p50']:.2f}, {result['p99']:.2f}")
        line = f"| {row.label} | " + " | ".join(cells)
        if len(counts) > 1:
            line += f" | {by_workers[counts[-1]][index][1]['rps'] / first[index][1]['rps']:.2f}x"
        print(line + " |")
    for path in profiles:
        print(f"profile: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="measured time per row (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up time per row, not measured (default 2)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", default="1", help="worker counts to measure, comma-separated (default 1)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the bus for more than one worker")
    parser.add_argument("--only", action="append", choices=ROWS, help="run this row only (repeatable)")
    parser.add_argument("--profile", action="store_true", help="py-spy record the server during each measured run")
    parser.add_argument("--profile-format", choices=("flamegraph", "speedscope", "raw"), default="flamegraph")
    asyncio.run(main(parser.parse_args()))
