"""Apollo Client's persisted-query link, the real one (@apollo/client 3.x in node), against a live
server: a hash the server does not know is PERSISTED_QUERY_NOT_FOUND, the link sends the query with
its hash, the server remembers it, and the next request by hash alone is answered. Over GET
(`useGETForHashedQueries`) and POST alike.

The npm packages are installed once into `.lodge/node-tools/` (git-ignored) at the pinned versions;
tests/api/clients/apollo_apq.mjs drives the client and reports every request it made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import LiveServer, need, new_user

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".lodge" / "node-tools"
SCRIPT = Path(__file__).resolve().parent / "clients" / "apollo_apq.mjs"
PACKAGES = {"@apollo/client": "3.14.1", "graphql": "16.15.0"}
TIMEOUT = 120.0


def installed(package: str) -> str | None:
    manifest = TOOLS / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


async def run(*command: str, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """A child process, awaited without blocking the event loop the live server runs on."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return int(process.returncode or 0), out.decode(), err.decode()


async def apollo_tools() -> None:
    need(shutil.which("node") is not None and shutil.which("npm") is not None, "node and npm are not installed")
    if all(installed(package) == version for package, version in PACKAGES.items()):
        return
    TOOLS.mkdir(parents=True, exist_ok=True)
    pinned = [f"{package}@{version}" for package, version in PACKAGES.items()]
    code, out, err = await run(
        "npm", "install", "--prefix", str(TOOLS), "--save-exact", "--no-audit", "--no-fund", *pinned
    )
    if code != 0:
        pytest.fail(f"npm install {' '.join(pinned)} into {TOOLS} failed:\n{out}\n{err}")


async def apollo(server: LiveServer, method: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    code, out, err = await run(
        "node", str(SCRIPT), str(TOOLS), f"{server.url}/graphql", method, query, json.dumps(variables)
    )
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def sent(exchange: dict[str, Any]) -> dict[str, Any]:
    """What a request carried, whether in a POST body or a GET's query string."""
    if exchange["method"] == "POST":
        body: dict[str, Any] = exchange["body"]
        return body
    params = {key: values[0] for key, values in parse_qs(urlsplit(exchange["url"]).query).items()}
    return {key: json.loads(value) if key in ("variables", "extensions") else value for key, value in params.items()}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_apollo_persisted_query_link_misses_registers_then_hits(server: LiveServer, method: str) -> None:
    await apollo_tools()
    name = f"apollo-{uuid.uuid4().hex[:12]}"
    token = await new_user(server)
    await server.data("mutation($n: String!) { createVendor(input: {name: $n}) { id } }", {"n": name}, token=token)
    # A document this server has never seen: its own operation name.
    operation = f"Apollo{method}{uuid.uuid4().hex[:8]}"
    query = (
        f"query {operation}($search: String) {{ vendors(search: $search, first: 5) {{ totalCount nodes {{ name }} }} }}"
    )

    report = await apollo(server, method, query, {"search": name})

    expected = {
        "vendors": {
            "__typename": "VendorConnection",
            "totalCount": 1,
            "nodes": [{"__typename": "Vendor", "name": name}],
        }
    }
    assert [result["data"] for result in report["results"]] == [expected, expected], report
    miss, retry, hit = report["exchanges"]  # exactly three requests for two runs
    # 1. The hash alone (by GET when so configured), named: not found, in the shape Apollo retries on.
    first = sent(miss)
    assert miss["method"] == method and "query" not in first and first["operationName"] == operation
    digest = first["extensions"]["persistedQuery"]["sha256Hash"]
    assert miss["status"] == 200, miss
    error = miss["response"]["errors"][0]
    assert error["message"] == "PersistedQueryNotFound" and error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    # 2. The link retried with the full query and the same hash (always by POST): answered.
    second = sent(retry)
    assert retry["method"] == "POST" and retry["status"] == 200
    assert second["extensions"]["persistedQuery"]["sha256Hash"] == digest
    assert hashlib.sha256(second["query"].encode()).hexdigest() == digest
    assert "errors" not in retry["response"]
    # 3. The second run: the hash alone again, and now the server knows it.
    third = sent(hit)
    assert hit["method"] == method and "query" not in third and hit["status"] == 200
    assert third["extensions"]["persistedQuery"]["sha256Hash"] == digest
    assert "errors" not in hit["response"] and hit["response"]["data"] == expected
