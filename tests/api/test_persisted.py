"""Persisted operations: the documents of graphql/ by hash, APQ, and the registered-only mode."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from app.api.persisted import Registry
from app.vendors import models
from tests.conftest import make_settings
from tests.support import PASSWORD, GraphQLWS, LiveServer, live_server, unique_email

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Registry.from_directory(ROOT / "graphql")
VENDORS = next(digest for digest, name in REGISTRY.names.items() if name == "Vendors")


def by_hash(digest: str, query: str | None = None, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    if query is not None:
        body["query"] = query
    if variables is not None:
        body["variables"] = variables
    return body


async def post(server: LiveServer, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await server.http.post("/graphql", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_registered_documents_run_by_hash_and_apq_registers_new_ones(server: LiveServer) -> None:
    assert "data" in await post(server, by_hash(VENDORS)) and "errors" not in await post(server, by_hash(VENDORS))
    query = "query Mine { vendors(first: 1) { totalCount } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    unknown = await post(server, by_hash(digest))
    assert code(unknown) == "PERSISTED_QUERY_NOT_FOUND" and unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    registered = await post(server, by_hash(digest, query))
    assert "errors" not in registered
    assert (await post(server, by_hash(digest)))["data"] == registered["data"]
    assert code(await post(server, by_hash("0" * 64, query))) == "BAD_USER_INPUT"  # hash does not match
    assert code(await post(server, by_hash("not-a-hash"))) == "BAD_USER_INPUT"


async def test_only_registered_operations_run_when_so_configured(database_url: str) -> None:
    async with live_server(make_settings(persisted_only=True), database_url) as server:
        register = next(digest for digest, name in REGISTRY.names.items() if name == "Register")
        signed_up = await post(
            server, by_hash(register, variables={"input": {"email": unique_email(), "password": PASSWORD}})
        )
        token = signed_up["data"]["register"]["accessToken"]
        assert "errors" not in await post(server, by_hash(VENDORS))
        # The same document in full, formatted differently, is recognised.
        text = REGISTRY.documents[VENDORS]
        assert "errors" not in await post(server, {"query": " ".join(text.split())})
        refused = await post(server, {"query": "{ vendors(first: 1) { totalCount } }"})
        assert code(refused) == "FORBIDDEN" and refused.get("data") is None
        # APQ cannot register new documents here.
        query = "query Sneaky { vendors { totalCount } }"
        digest = hashlib.sha256(query.encode()).hexdigest()
        assert code(await post(server, by_hash(digest, query))) == "FORBIDDEN"
        assert code(await post(server, by_hash(digest))) == "PERSISTED_QUERY_NOT_FOUND"
        # A refused mutation writes nothing.
        mutation = 'mutation { createVendor(input: {name: "Unregistered"}) { id } }'
        assert code(await post(server, {"query": mutation}, token)) == "FORBIDDEN"
        async with server.deps.db.session() as session:
            made = await session.scalar(select(func.count()).where(col(models.Vendor.name) == "Unregistered"))
        assert made == 0
        # Websockets too: an unregistered subscription is refused, a registered one runs.
        async with GraphQLWS.connect(server.ws_url) as ws:
            await ws.subscribe('subscription { vendorLocationUpdated(vendorId: "x") { lat } }')
            message = await ws.receive()
            errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
            assert errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_apq_with_an_operation_name_over_post_and_get(server: LiveServer) -> None:
    """Apollo's link names the operation in every request: a miss is still PERSISTED_QUERY_NOT_FOUND
    (not HTTP 400 "Unknown operation named"), and a hash sent by GET is an operation, not a request
    for GraphiQL's page (the link sends `Accept: */*`)."""
    query = "query Named($first: Int) { vendors(first: $first) { totalCount } }"
    query += f" # {uuid.uuid4().hex}"  # a document this server has not seen
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})
    params = {"operationName": "Named", "variables": '{"first": 1}', "extensions": extensions}
    by_get = await server.http.get("/graphql", params=params, headers={"accept": "*/*"})
    assert by_get.status_code == 200 and by_get.headers["content-type"].startswith("application/json")
    assert code(by_get.json()) == "PERSISTED_QUERY_NOT_FOUND"
    named = {**by_hash(digest, variables={"first": 1}), "operationName": "Named"}
    assert code(await post(server, named)) == "PERSISTED_QUERY_NOT_FOUND"
    # The wrong hash for a query, named: said plainly.
    mismatch = await post(server, {**by_hash("0" * 64, query), "operationName": "Named"})
    assert code(mismatch) == "BAD_USER_INPUT" and "does not match" in mismatch["errors"][0]["message"]
    registered = await post(server, {**by_hash(digest, query, {"first": 1}), "operationName": "Named"})
    assert "errors" not in registered
    hit = await server.http.get("/graphql", params=params, headers={"accept": "*/*"})
    assert hit.status_code == 200 and hit.json() == registered
    # A browser asking for the page still gets GraphiQL.
    page = await server.http.get("/graphql", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
