"""Gateway administration: every entity listed and changed, removals that refuse while flows hold
requests, and a request log that records refused requests too."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from tests.gateway.test_api import COMPLETE, RECORD, START, new_gateway, quota
from tests.support import LiveServer, new_user

SERVICES = "query($a: String) { services(first: 1, after: $a) { totalCount nodes { id name } pageInfo { hasNextPage endCursor } } }"
ENVIRONMENTS = "query($p: ID!) { environments(projectId: $p) { totalCount nodes { id name } } }"
QUOTAS = """query($e: ID, $s: ID, $a: String) { environmentServices(environmentId: $e, serviceId: $s, first: 1, after: $a) {
  totalCount nodes { availableRequests reservedRequests environment { id } service { name } } pageInfo { hasNextPage endCursor } } }"""
HOLDS = """query($e: ID, $s: ID, $a: String) { reservations(environmentId: $e, serviceId: $s, first: 1, after: $a) {
  totalCount nodes { id amount service { name } startPoint { id } } pageInfo { hasNextPage endCursor } } }"""
REFUSED = """query($e: ID!) { requestLogs(environmentId: $e, outcome: REFUSED) {
  totalCount nodes { outcome reason status endpoint service { name } startPoint { id } } } }"""
DISABLE = "mutation($e: ID!, $s: ID!) { disableEnvironmentService(environmentId: $e, serviceId: $s) }"
DETACH = "mutation($p: ID!, $s: ID!) { removeProjectService(projectId: $p, serviceId: $s) { services { name } } }"
DELETE_ENVIRONMENT = "mutation($id: ID!) { deleteEnvironment(id: $id) }"
DELETE_SERVICE = "mutation($id: ID!) { deleteService(id: $id) }"


async def _pages(server: LiveServer, query: str, field: str, variables: dict[str, Any], **auth: str) -> list[Any]:
    """Every node, one page at a time."""
    nodes: list[Any] = []
    after = None
    while True:
        page = (await server.data(query, {**variables, "a": after}, **auth))[field]
        nodes += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


async def test_admins_list_services_environments_quotas_and_live_holds(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    services = await _pages(server, SERVICES, "services", {}, token=g.admin)
    assert g.service in [s["name"] for s in services]
    assert await server.error_code(SERVICES, token=g.owner) == "FORBIDDEN"
    assert (await server.data("query($id: ID!) { service(id: $id) { name } }", {"id": g.service_id}, token=g.admin))[
        "service"
    ] == {"name": g.service}

    # A project's environments: its owner and gateway admins; nobody else; NOT_FOUND for no project.
    envs = await server.data(ENVIRONMENTS, {"p": g.project_id}, token=g.owner)
    assert envs["environments"] == {"totalCount": 1, "nodes": [{"id": g.environment_id, "name": "production"}]}
    assert (await server.data(ENVIRONMENTS, {"p": g.project_id}, token=g.admin)) == envs
    stranger = await new_user(server)
    assert await server.error_code(ENVIRONMENTS, {"p": g.project_id}, token=stranger) == "FORBIDDEN"
    assert await server.error_code(ENVIRONMENTS, {"p": str(uuid.uuid4())}, token=g.owner) == "NOT_FOUND"
    assert await server.error_code(ENVIRONMENTS, {"p": g.project_id}) == "UNAUTHENTICATED"

    # Quotas and holds: the owner sees their environment's, an API key its own, an admin any.
    first = await server.data(START, {"s": g.service, "a": 3}, api_key=g.key)
    second = await server.data(START, {"s": g.service, "a": 2}, api_key=g.key)
    expected = {"availableRequests": 10, "reservedRequests": 5, "environment": {"id": g.environment_id}}
    for auth in ({"token": g.owner}, {"api_key": g.key}, {"token": g.admin}):
        quotas = (await server.data(QUOTAS, {"e": g.environment_id}, **auth))["environmentServices"]
        assert quotas["totalCount"] == 1 and quotas["nodes"][0] == {**expected, "service": {"name": g.service}}
        holds = await _pages(server, HOLDS, "reservations", {"e": g.environment_id}, **auth)
        assert [(h["id"], h["amount"]) for h in holds] == [
            (first["startFlow"]["reservation"]["id"], 3),
            (second["startFlow"]["reservation"]["id"], 2),
        ]
        assert holds[0]["startPoint"]["id"] == first["startFlow"]["requestLog"]["id"]
    by_service = await server.data(HOLDS, {"s": g.service_id}, token=g.admin)
    assert by_service["reservations"]["totalCount"] == 2
    # Completed holds are not live any more.
    await server.data(COMPLETE, {"r": first["startFlow"]["reservation"]["id"], "ok": True}, api_key=g.key)
    holds = await _pages(server, HOLDS, "reservations", {"e": g.environment_id}, token=g.owner)
    assert [h["id"] for h in holds] == [second["startFlow"]["reservation"]["id"]]

    other = await new_gateway(server)
    assert await server.error_code(HOLDS, {"e": other.environment_id}, api_key=g.key) == "FORBIDDEN"
    assert await server.error_code(QUOTAS, {"e": other.environment_id}, token=g.owner) == "FORBIDDEN"
    assert await server.error_code(QUOTAS, {"s": str(uuid.uuid4())}, token=g.admin) == "NOT_FOUND"
    assert await server.error_code(HOLDS, {"e": "not-an-id"}, token=g.admin) == "BAD_USER_INPUT"
    assert await server.error_code(QUOTAS, {"a": "garbage"}, token=g.admin) == "BAD_USER_INPUT"
    # Without an environment, the owner sees their own projects' quotas only; an admin pages them all.
    mine = (await server.data(QUOTAS, {}, token=g.owner))["environmentServices"]
    assert mine["totalCount"] == 1
    every = await _pages(server, QUOTAS, "environmentServices", {}, token=g.admin)
    assert {g.environment_id, other.environment_id} <= {q["environment"]["id"] for q in every}


async def test_clients_and_services_are_changed_and_deleted(server: LiveServer) -> None:
    g = await new_gateway(server)
    update = "mutation($id: ID!, $in: ClientUpdate!) { updateClient(id: $id, input: $in) { name email } }"
    client = (
        await server.data(
            'mutation { createClient(input: {name: "Acme", email: "ops@acme.test"}) { id } }', token=g.admin
        )
    )["createClient"]["id"]
    assert (await server.data(update, {"id": client, "in": {"name": "Acme Ltd"}}, token=g.admin))["updateClient"] == {
        "name": "Acme Ltd",
        "email": "ops@acme.test",
    }
    assert (await server.data(update, {"id": client, "in": {"email": None}}, token=g.admin))["updateClient"] == {
        "name": "Acme Ltd",
        "email": None,
    }
    assert await server.error_code(update, {"id": client, "in": {"name": " "}}, token=g.admin) == "BAD_USER_INPUT"
    assert await server.error_code(update, {"id": client, "in": {"name": "x"}}, token=g.owner) == "FORBIDDEN"
    assert await server.error_code(update, {"id": str(uuid.uuid4()), "in": {}}, token=g.admin) == "NOT_FOUND"

    # A client's projects stay when it goes, with no client.
    project = (
        await server.data(
            'mutation($c: ID!) { createProject(input: {name: "billing", clientId: $c}) { id } }',
            {"c": client},
            token=g.admin,
        )
    )["createProject"]["id"]
    delete_client = "mutation($id: ID!) { deleteClient(id: $id) }"
    assert (await server.data(delete_client, {"id": client}, token=g.admin)) == {"deleteClient": True}
    assert await server.error_code(delete_client, {"id": client}, token=g.admin) == "NOT_FOUND"
    assert (await server.data("query($p: ID!) { project(id: $p) { client { id } } }", {"p": project}, token=g.admin))[
        "project"
    ] == {"client": None}

    rename = "mutation($id: ID!, $in: ServiceUpdate!) { updateService(id: $id, input: $in) { name description } }"
    taken = (
        await server.data(
            'mutation { createService(input: {name: "taken-' + g.service + '"}) { id name } }', token=g.admin
        )
    )["createService"]
    assert (
        await server.error_code(rename, {"id": g.service_id, "in": {"name": taken["name"]}}, token=g.admin)
        == "CONFLICT"
    )
    renamed = f"{g.service}-v2"
    changed = await server.data(
        rename, {"id": g.service_id, "in": {"name": renamed, "description": "pay"}}, token=g.admin
    )
    assert changed["updateService"] == {"name": renamed, "description": "pay"}
    # Gateways call it by its new name.
    assert await server.error_code(RECORD, {"s": g.service}, api_key=g.key) == "NOT_FOUND"
    await server.data(RECORD, {"s": renamed}, api_key=g.key)

    assert (await server.data(DELETE_SERVICE, {"id": g.service_id}, token=g.admin)) == {"deleteService": True}
    assert await server.error_code(DELETE_SERVICE, {"id": g.service_id}, token=g.admin) == "NOT_FOUND"
    services = await server.data(
        "query($p: ID!) { project(id: $p) { services { id } } }", {"p": g.project_id}, token=g.owner
    )
    assert services["project"]["services"] == []
    assert (await server.data(QUOTAS, {"e": g.environment_id}, token=g.owner))["environmentServices"]["totalCount"] == 0


async def test_removals_refuse_while_a_flow_holds_requests(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    hold = (await server.data(START, {"s": g.service, "a": 4}, api_key=g.key))["startFlow"]["reservation"]["id"]
    refusals = [
        (DISABLE, {"e": g.environment_id, "s": g.service_id}, g.admin),
        (DETACH, {"p": g.project_id, "s": g.service_id}, g.admin),
        (DELETE_ENVIRONMENT, {"id": g.environment_id}, g.owner),
        (DELETE_SERVICE, {"id": g.service_id}, g.admin),
    ]
    for mutation, variables, token in refusals:
        assert await server.error_code(mutation, variables, token=token) == "CONFLICT"
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 4}
    assert await server.error_code(DISABLE, {"e": g.environment_id, "s": g.service_id}, token=g.owner) == "FORBIDDEN"
    assert await server.error_code(DETACH, {"p": g.project_id, "s": str(uuid.uuid4())}, token=g.admin) == "NOT_FOUND"

    await server.data(COMPLETE, {"r": hold, "ok": True}, api_key=g.key)
    logged = (
        await server.data(
            "query($e: ID!) { requestLogs(environmentId: $e) { totalCount } }", {"e": g.environment_id}, token=g.owner
        )
    )["requestLogs"]["totalCount"]
    assert (await server.data(DISABLE, {"e": g.environment_id, "s": g.service_id}, token=g.admin)) == {
        "disableEnvironmentService": True
    }
    assert await server.error_code(DISABLE, {"e": g.environment_id, "s": g.service_id}, token=g.admin) == "NOT_FOUND"
    # The quota is gone; the log of what was spent stays; a request now is refused, and logged so.
    assert await server.error_code(START, {"s": g.service}, api_key=g.key) == "FORBIDDEN"
    after = await server.data(
        "query($e: ID!) { requestLogs(environmentId: $e) { totalCount } }", {"e": g.environment_id}, token=g.owner
    )
    assert after["requestLogs"]["totalCount"] == logged + 1
    detached = await server.data(DETACH, {"p": g.project_id, "s": g.service_id}, token=g.admin)
    assert detached["removeProjectService"]["services"] == []


async def test_deleting_an_environment_ends_its_keys(server: LiveServer) -> None:
    g = await new_gateway(server)
    await server.data(RECORD, {"s": g.service}, api_key=g.key)
    stranger = await new_user(server)
    assert await server.error_code(DELETE_ENVIRONMENT, {"id": g.environment_id}, token=stranger) == "FORBIDDEN"
    assert (await server.data(DELETE_ENVIRONMENT, {"id": g.environment_id}, token=g.owner)) == {
        "deleteEnvironment": True
    }
    assert await server.error_code(RECORD, {"s": g.service}, api_key=g.key) == "UNAUTHENTICATED"
    assert (await server.data(ENVIRONMENTS, {"p": g.project_id}, token=g.owner))["environments"]["totalCount"] == 0
    assert await server.error_code(DELETE_ENVIRONMENT, {"id": g.environment_id}, token=g.owner) == "NOT_FOUND"
    # The service is still the project's: a new environment may enable it again.
    staging = await server.data(
        'mutation($p: ID!) { createEnvironment(projectId: $p, name: "staging") { id } }',
        {"p": g.project_id},
        token=g.owner,
    )
    enable = "mutation($e: ID!, $s: ID!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: 5) { availableRequests } }"
    enabled = await server.data(enable, {"e": staging["createEnvironment"]["id"], "s": g.service_id}, token=g.admin)
    assert enabled["enableEnvironmentService"] == {"availableRequests": 5}


async def test_refused_requests_are_in_the_log(server: LiveServer) -> None:
    g = await new_gateway(server, available=2)
    await server.data(RECORD, {"s": g.service}, api_key=g.key)
    # The quota, a flow's steps, an environment without the service: each refusal is logged.
    assert await server.error_code(START, {"s": g.service, "a": 5}, api_key=g.key) == "QUOTA_EXHAUSTED"
    flow = (await server.data(START, {"s": g.service, "a": 1}, api_key=g.key))["startFlow"]
    start = flow["requestLog"]["id"]
    await server.data(RECORD, {"s": g.service, "p": start}, api_key=g.key)
    assert await server.error_code(RECORD, {"s": g.service, "p": start}, api_key=g.key) == "QUOTA_EXHAUSTED"
    assert await server.error_code(RECORD, {"s": g.service, "p": "rl_nothing"}, api_key=g.key) == "NOT_FOUND"
    other = await new_gateway(server)
    assert await server.error_code(RECORD, {"s": other.service}, api_key=g.key) == "FORBIDDEN"
    # Not logged: a service that does not exist, and input refused before any request was made.
    assert await server.error_code(RECORD, {"s": "no-such-service"}, api_key=g.key) == "NOT_FOUND"
    assert await server.error_code(START, {"s": g.service, "a": 0}, api_key=g.key) == "BAD_USER_INPUT"

    refused = (await server.data(REFUSED, {"e": g.environment_id}, token=g.owner))["requestLogs"]
    assert [(n["reason"], n["service"]["name"], (n["startPoint"] or {}).get("id")) for n in refused["nodes"]] == [
        ("QUOTA_EXHAUSTED", g.service, None),
        ("QUOTA_EXHAUSTED", g.service, start),
        ("NOT_FOUND", g.service, None),
        ("FORBIDDEN", other.service, None),
    ]
    assert {(n["outcome"], n["status"], n["endpoint"]) for n in refused["nodes"]} == {
        ("REFUSED", "refused", None),
        ("REFUSED", "refused", "/v1/pay"),
    }
    accepted = await server.data(
        "query($e: ID!) { requestLogs(environmentId: $e, outcome: ACCEPTED) { nodes { outcome reason } } }",
        {"e": g.environment_id},
        token=g.owner,
    )
    assert accepted["requestLogs"]["nodes"] == [{"outcome": "ACCEPTED", "reason": None}] * 3
    # The flow's steps include its refused one; the quota was not touched by any refusal.
    steps = await server.data(
        "query($p: ID!) { requestLogs(startPoint: $p) { nodes { id steps { outcome } } } }", {"p": start}, api_key=g.key
    )
    assert steps["requestLogs"]["nodes"][0]["steps"] == [{"outcome": "ACCEPTED"}, {"outcome": "REFUSED"}]
    assert await quota(server, g) == {"availableRequests": 1, "reservedRequests": 1}


async def test_a_removal_racing_flows_never_strands_a_hold(server: LiveServer) -> None:
    """However startFlow and disableEnvironmentService interleave: either the quota went before any
    hold was taken, or it stays with exactly the holds that were granted."""
    for _ in range(3):
        g = await new_gateway(server, available=1000)
        starts = [server.gql(START, {"s": g.service, "a": 1}, api_key=g.key) for _ in range(20)]
        disable = server.gql(DISABLE, {"e": g.environment_id, "s": g.service_id}, token=g.admin)
        *flows, removal = await asyncio.gather(*starts, disable)
        granted = sum(1 for body in flows if not body.get("errors"))
        assert all(body["errors"][0]["extensions"]["code"] == "FORBIDDEN" for body in flows if body.get("errors"))
        async with server.deps.db.session() as session:
            reserved = await session.scalar(
                text("SELECT reserved_requests FROM environment_services WHERE environment_id = :e"),
                {"e": g.environment_id},
            )
            holds = await session.scalar(
                text("SELECT count(*) FROM reservations WHERE environment_id = :e"), {"e": g.environment_id}
            )
        if removal.get("errors"):
            assert removal["errors"][0]["extensions"]["code"] == "CONFLICT"
            assert granted > 0 and reserved == granted and holds == granted
        else:
            assert granted == 0 and reserved is None and holds == 0


async def test_an_expired_hold_does_not_block_a_removal(server: LiveServer) -> None:
    """However many expired holds wait for the sweeper elsewhere, this quota's own are released first."""
    g = await new_gateway(server, available=10)
    await server.data(START, {"s": g.service, "a": 3}, api_key=g.key)
    async with server.deps.db.session() as session:
        await session.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE environment_id = :e"),
            {"e": g.environment_id},
        )
        await session.commit()
    assert await server.data(DISABLE, {"e": g.environment_id, "s": g.service_id}, token=g.admin) == {
        "disableEnvironmentService": True
    }
    async with server.deps.db.session() as session:
        status = await session.scalar(
            text("SELECT status FROM request_logs WHERE environment_id = :e AND status LIKE 'flow%'"),
            {"e": g.environment_id},
        )
    assert status == "flow_expired"
