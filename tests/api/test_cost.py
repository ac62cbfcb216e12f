"""The query cost limit: page sizes times nesting, refused before any resolver runs."""

from __future__ import annotations

from graphql import parse
from sqlalchemy import func, select
from sqlmodel import col

from app.api.cost import UNPAGED_LIST, operation_cost
from app.api.pagination import DEFAULT_PAGE
from app.api.schema import create_schema
from app.communities.service.analyses import MAX_IMAGES, MAX_METRICS
from app.vendors import models
from app.workflows.service.workflows import MAX_EDGES, MAX_NODES
from tests.support import LiveServer, new_user

NESTED = "query($n: Int, $m: Int) { vendors(first: $n) { nodes { locations(first: $m) { nodes { lat } } } } }"


def cost(query: str, variables: dict[str, float] | None = None, name: str | None = None) -> int:
    schema = create_schema()._schema
    return operation_cost(schema, parse(query), name, variables)


def test_cost_multiplies_page_sizes_down_the_tree() -> None:
    assert cost(NESTED, {"n": 100, "m": 10}) == 100 + 100 + 1000 + 1000
    # Whole floats are Ints to graphql-core: they count as such.
    assert cost(NESTED, {"n": 500.0, "m": 500.0}) == cost(NESTED, {"n": 500, "m": 500})
    # Defaults: the variable's default, else the default page size (50).
    assert cost("query($n: Int = 3) { vendors(first: $n) { nodes { id } } }") == 3 + 3
    assert cost("{ vendors { totalCount } }") == 50
    # Fragments count like the fields they hold; leaves and introspection are free.
    fragment = "{ vendors(first: 2) { ...V } } fragment V on VendorConnection { nodes { owner { id } } }"
    assert cost(fragment) == 2 + 2 + 2
    assert cost("{ __schema { types { name fields { name } } } }") == 0


def test_unpaged_lists_count_the_bound_their_service_enforces() -> None:
    assert cost('{ workflow(id: "x") { nodes { key } } }') == 1 + MAX_NODES
    assert cost('{ workflow(id: "x") { edges { source } } }') == 1 + MAX_EDGES
    analysis = '{ clubAnalysis(id: "x") { metrics { name } images { imageUrl } } }'
    assert cost(analysis) == 1 + MAX_METRICS + MAX_IMAGES
    # Versions are paged (newest `last`, default page); each snapshot holds a bounded graph.
    assert cost('{ workflow(id: "x") { versions { version } } }') == 1 + DEFAULT_PAGE
    snapshots = '{ workflow(id: "x") { versions(last: 3) { nodes { key } edges { source } } } }'
    assert cost(snapshots) == 1 + 3 + 3 * MAX_NODES + 3 * MAX_EDGES
    # A list whose service enforces no bound keeps the estimate.
    assert cost("{ roles { id } }") == UNPAGED_LIST


async def test_an_operation_over_the_limit_is_refused_and_runs_nothing(server: LiveServer) -> None:
    body = await server.gql(NESTED, {"n": 500, "m": 500})
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["cost"] == 500 + 500 + 250_000 + 250_000
    assert error["extensions"]["maxCost"] == server.deps.settings.max_query_cost
    assert body.get("data") is None
    # Within the limit, the same document runs.
    assert "errors" not in await server.gql(NESTED, {"n": 5, "m": 5})
    # A mutation refused for its selection writes nothing.
    token = await new_user(server)
    mutation = """mutation { createVendor(input: {name: "CostlyVendor"}) {
      owner { vendors(first: 500) { nodes { locations(first: 500) { nodes { lat } } } } } } }"""
    refused = await server.gql(mutation, token=token)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    async with server.deps.db.session() as session:
        made = await session.scalar(select(func.count()).where(col(models.Vendor.name) == "CostlyVendor"))
    assert made == 0
