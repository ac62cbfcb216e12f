"""Gateway accounting under concurrency: holds never oversell, a reservation is spent once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from app.gateway import service as gateway
from tests.support import LiveServer, new_admin, new_api_key, new_project, new_user

START = "mutation($s: String!, $a: Int, $t: Int) { startFlow(service: $s, amount: $a, ttlSeconds: $t) { requestLog { id } reservation { id amount } } }"
COMPLETE = "mutation($r: ID!, $ok: Boolean!) { completeFlow(reservationId: $r, success: $ok) { availableRequests reservedRequests } }"
RECORD = 'mutation($s: String!, $p: ID) { recordRequest(service: $s, endpoint: "/v1/pay", startPoint: $p) { id status startPoint { id } } }'
QUOTA = """query($e: ID!) { requestLogs(environmentId: $e, first: 0) { totalCount } }"""


@dataclass
class Gateway:
    admin: str
    owner: str
    project_id: str
    environment_id: str
    service_id: str
    service: str
    key: str


async def new_gateway(server: LiveServer, available: int = 100) -> Gateway:
    admin, _ = await new_admin(server, ("gateway:admin",))
    owner = await new_user(server)
    project_id = await new_project(server, owner)
    name = f"payments-{uuid.uuid4().hex[:8]}"
    service_id = (
        await server.data("mutation($n: String!) { createService(input: {name: $n}) { id } }", {"n": name}, token=admin)
    )["createService"]["id"]
    await server.data(
        "mutation($p: ID!, $s: ID!) { addProjectService(projectId: $p, serviceId: $s) { id services { name } } }",
        {"p": project_id, "s": service_id},
        token=admin,
    )
    env = await server.data(
        'mutation($p: ID!) { createEnvironment(projectId: $p, name: "production") { id } }',
        {"p": project_id},
        token=owner,
    )
    environment_id = env["createEnvironment"]["id"]
    await server.data(
        "mutation($e: ID!, $s: ID!, $n: Int!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: $n) { availableRequests } }",
        {"e": environment_id, "s": service_id, "n": available},
        token=admin,
    )
    _, key = await new_api_key(server, owner, project_id, environmentId=environment_id)
    return Gateway(admin, owner, project_id, environment_id, service_id, name, key)


async def quota(server: LiveServer, g: Gateway) -> dict[str, Any]:
    data = await server.data(
        "query($p: ID!) { project(id: $p) { environments { services { availableRequests reservedRequests } } } }",
        {"p": g.project_id},
        token=g.owner,
    )
    result: dict[str, Any] = data["project"]["environments"][0]["services"][0]
    return result


async def reservations(server: LiveServer, g: Gateway) -> int:
    async with server.deps.db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM reservations WHERE environment_id = :e"), {"e": g.environment_id}
        )
    return int(count or 0)


async def test_500_concurrent_flows_never_oversell(server: LiveServer) -> None:
    g = await new_gateway(server, available=100)
    results = await asyncio.gather(*(server.gql(START, {"s": g.service}, api_key=g.key) for _ in range(500)))
    codes = Counter("ok" if not r.get("errors") else r["errors"][0]["extensions"]["code"] for r in results)
    assert codes == {"ok": 100, "QUOTA_EXHAUSTED": 400}
    assert await quota(server, g) == {"availableRequests": 100, "reservedRequests": 100}

    held = [r["data"]["startFlow"]["reservation"]["id"] for r in results if not r.get("errors")]
    await asyncio.gather(*(server.data(COMPLETE, {"r": rid, "ok": True}, api_key=g.key) for rid in held))
    assert await quota(server, g) == {"availableRequests": 0, "reservedRequests": 0}
    assert await reservations(server, g) == 0


async def test_a_reservation_is_spent_once(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    rid = (await server.data(START, {"s": g.service, "a": 3}, api_key=g.key))["startFlow"]["reservation"]["id"]
    results = await asyncio.gather(*(server.gql(COMPLETE, {"r": rid, "ok": True}, api_key=g.key) for _ in range(200)))
    codes = Counter("ok" if not r.get("errors") else r["errors"][0]["extensions"]["code"] for r in results)
    assert codes == {"ok": 1, "NOT_FOUND": 199}
    assert await quota(server, g) == {"availableRequests": 7, "reservedRequests": 0}


async def test_mixed_outcomes_end_at_initial_minus_successes(server: LiveServer) -> None:
    g = await new_gateway(server, available=1000)
    started = await asyncio.gather(
        *(server.data(START, {"s": g.service, "a": 1 + n % 4}, api_key=g.key) for n in range(120))
    )
    flows = [(s["startFlow"]["reservation"]["id"], s["startFlow"]["reservation"]["amount"]) for s in started]
    outcomes = [(rid, amount, n % 3 != 0) for n, (rid, amount) in enumerate(flows)]
    await asyncio.gather(*(server.data(COMPLETE, {"r": rid, "ok": ok}, api_key=g.key) for rid, _, ok in outcomes))
    spent = sum(amount for _, amount, ok in outcomes if ok)
    assert await quota(server, g) == {"availableRequests": 1000 - spent, "reservedRequests": 0}


async def test_expired_holds_are_released_once_by_concurrent_sweepers(server: LiveServer) -> None:
    g = await new_gateway(server, available=50)
    for _ in range(20):
        await server.data(START, {"s": g.service, "a": 2}, api_key=g.key)
    assert await quota(server, g) == {"availableRequests": 50, "reservedRequests": 40}
    async with server.deps.db.session() as session:
        await session.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE environment_id = :e"),
            {"e": g.environment_id},
        )
        await session.commit()

    async def sweep() -> int:
        async with server.deps.db.autocommit() as conn:
            return await gateway.release_expired(conn, batch=7)

    released = 0
    while True:
        counts = await asyncio.gather(sweep(), sweep(), sweep())
        released += sum(counts)
        if not any(counts):
            break
    assert released == 20
    assert await quota(server, g) == {"availableRequests": 50, "reservedRequests": 0}
    assert await reservations(server, g) == 0


async def test_flows_record_their_steps_in_order(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    start = (await server.data(START, {"s": g.service, "a": 3}, api_key=g.key))["startFlow"]
    start_id = start["requestLog"]["id"]
    steps = [
        (await server.data(RECORD, {"s": g.service, "p": start_id}, api_key=g.key))["recordRequest"] for _ in range(3)
    ]
    assert all(step["startPoint"]["id"] == start_id for step in steps)
    flow = await server.data(
        "query($p: ID!) { requestLogs(startPoint: $p) { nodes { id status steps { id } } } }",
        {"p": start_id},
        api_key=g.key,
    )
    nodes = flow["requestLogs"]["nodes"]
    assert [n["id"] for n in nodes] == [start_id] + [s["id"] for s in steps]
    assert [s["id"] for s in nodes[0]["steps"]] == [s["id"] for s in steps]
    # Steps of a flow are covered by its hold; a request outside a flow spends one.
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 3}
    await server.data(RECORD, {"s": g.service, "p": None}, api_key=g.key)
    assert await quota(server, g) == {"availableRequests": 9, "reservedRequests": 3}
    await server.data(COMPLETE, {"r": start["reservation"]["id"], "ok": True}, api_key=g.key)
    assert await quota(server, g) == {"availableRequests": 6, "reservedRequests": 0}


async def flow_logs(server: LiveServer, start_id: str, outcome: str = "accepted") -> int:
    """The flow's logged requests (its first and its steps) of one outcome (refused ones are logged too)."""
    async with server.deps.db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM request_logs WHERE (start_point = :p OR id = :p) AND outcome = :o"),
            {"p": start_id, "o": outcome},
        )
    return int(count or 0)


async def test_a_flow_admits_as_many_steps_as_it_holds(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    start = (await server.data(START, {"s": g.service, "a": 2}, api_key=g.key))["startFlow"]
    start_id = start["requestLog"]["id"]
    for _ in range(2):
        await server.data(RECORD, {"s": g.service, "p": start_id}, api_key=g.key)
    assert await server.error_code(RECORD, {"s": g.service, "p": start_id}, api_key=g.key) == "QUOTA_EXHAUSTED"
    assert await flow_logs(server, start_id) == 3
    assert await flow_logs(server, start_id, "refused") == 1
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 2}
    # The server is healthy and the hold is still spent once.
    await server.data(COMPLETE, {"r": start["reservation"]["id"], "ok": True}, api_key=g.key)
    assert await quota(server, g) == {"availableRequests": 8, "reservedRequests": 0}


async def test_concurrent_steps_never_exceed_the_hold(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    start_id = (await server.data(START, {"s": g.service, "a": 5}, api_key=g.key))["startFlow"]["requestLog"]["id"]
    results = await asyncio.gather(
        *(server.gql(RECORD, {"s": g.service, "p": start_id}, api_key=g.key) for _ in range(20))
    )
    codes = Counter("ok" if not r.get("errors") else r["errors"][0]["extensions"]["code"] for r in results)
    assert codes == {"ok": 5, "QUOTA_EXHAUSTED": 15}
    assert await flow_logs(server, start_id) == 6
    assert await flow_logs(server, start_id, "refused") == 15
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 5}


async def test_keys_stay_inside_their_environment(server: LiveServer) -> None:
    g = await new_gateway(server)
    other_name = f"search-{uuid.uuid4().hex[:8]}"
    await server.data(
        "mutation($n: String!) { createService(input: {name: $n}) { id } }", {"n": other_name}, token=g.admin
    )
    assert await server.error_code(START, {"s": other_name}, api_key=g.key) == "FORBIDDEN"
    other = await new_gateway(server)
    assert await server.error_code(QUOTA, {"e": other.environment_id}, api_key=g.key) == "FORBIDDEN"
    mine = await server.data("{ requestLogs { totalCount nodes { outcome reason service { name } } } }", api_key=g.key)
    # The refusal is in its own environment's log, and nothing else is.
    assert mine["requestLogs"]["nodes"] == [
        {"outcome": "REFUSED", "reason": "FORBIDDEN", "service": {"name": other_name}}
    ]
    # A key without an environment is no gateway key.
    _, plain = await new_api_key(server, g.owner, g.project_id)
    assert await server.error_code(START, {"s": g.service}, api_key=plain) == "FORBIDDEN"


async def test_the_database_refuses_a_service_of_another_project(server: LiveServer) -> None:
    g = await new_gateway(server)
    foreign = (
        await server.data(
            "mutation($n: String!) { createService(input: {name: $n}) { id } }",
            {"n": f"x-{uuid.uuid4().hex[:8]}"},
            token=g.admin,
        )
    )["createService"]["id"]
    enable = "mutation($e: ID!, $s: ID!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: 5) { availableRequests } }"
    assert await server.error_code(enable, {"e": g.environment_id, "s": foreign}, token=g.admin) == "BAD_USER_INPUT"
    async with server.deps.db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM environment_services WHERE service_id = :s"), {"s": foreign}
        )
    assert count == 0


async def test_admin_rules_and_bad_input(server: LiveServer) -> None:
    g = await new_gateway(server)
    enable = "mutation($e: ID!, $s: ID!, $n: Int!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: $n) { availableRequests } }"
    # The owner manages environments and keys, but grants no quota to itself.
    assert (
        await server.error_code(enable, {"e": g.environment_id, "s": g.service_id, "n": 10**6}, token=g.owner)
        == "FORBIDDEN"
    )
    adjust = "mutation($e: ID!, $s: ID!, $d: Int!) { adjustAvailableRequests(environmentId: $e, serviceId: $s, delta: $d) { availableRequests } }"
    assert (await server.data(adjust, {"e": g.environment_id, "s": g.service_id, "d": -40}, token=g.admin))[
        "adjustAvailableRequests"
    ]["availableRequests"] == 60
    await server.data(START, {"s": g.service, "a": 50}, api_key=g.key)
    assert (
        await server.error_code(adjust, {"e": g.environment_id, "s": g.service_id, "d": -20}, token=g.admin)
        == "BAD_USER_INPUT"
    )

    assert await server.error_code(START, {"s": g.service, "a": 0}, api_key=g.key) == "BAD_USER_INPUT"
    assert await server.error_code(START, {"s": g.service, "a": -3}, api_key=g.key) == "BAD_USER_INPUT"
    assert await server.error_code(START, {"s": g.service, "t": 0}, api_key=g.key) == "BAD_USER_INPUT"
    assert await server.error_code(START, {"s": g.service, "t": 10**7}, api_key=g.key) == "BAD_USER_INPUT"
    assert await server.error_code(START, {"s": "no-such-service"}, api_key=g.key) == "NOT_FOUND"
    assert await server.error_code(START, {"s": g.service, "a": 11}, api_key=g.key) == "QUOTA_EXHAUSTED"
    key_id = await server.data("{ requestLogs(first: 1) { nodes { apiKey { id } } } }", api_key=g.key)
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"
    await server.data(revoke, {"id": key_id["requestLogs"]["nodes"][0]["apiKey"]["id"]}, token=g.owner)
    assert await server.error_code(START, {"s": g.service}, api_key=g.key) == "UNAUTHENTICATED"
    assert await quota(server, g) == {"availableRequests": 60, "reservedRequests": 50}

    dup = 'mutation($p: ID!) { createEnvironment(projectId: $p, name: "production") { id } }'
    assert await server.error_code(dup, {"p": g.project_id}, token=g.owner) == "CONFLICT"
    async with server.deps.db.session() as session:
        try:
            await session.execute(
                text("UPDATE environments SET name = 'renamed' WHERE id = :e"), {"e": g.environment_id}
            )
            raise AssertionError("an environment was renamed")
        except Exception as exc:
            assert "cannot be changed" in str(exc)


async def test_clients_page_by_keyset(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("gateway:admin",))
    names = [f"client-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for name in names:
        await server.data("mutation($n: String!) { createClient(input: {name: $n}) { id } }", {"n": name}, token=admin)
    seen: list[str] = []
    after = None
    while True:
        page = await server.data(
            "query($a: String) { clients(first: 2, after: $a) { nodes { name } pageInfo { hasNextPage endCursor } } }",
            {"a": after},
            token=admin,
        )
        seen += [n["name"] for n in page["clients"]["nodes"]]
        if not page["clients"]["pageInfo"]["hasNextPage"]:
            break
        after = page["clients"]["pageInfo"]["endCursor"]
    assert [n for n in seen if n in names] == names
    owner = await new_user(server)
    assert await server.error_code("{ clients { totalCount } }", token=owner) == "FORBIDDEN"


async def test_steps_need_a_live_flow_of_their_service(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    plain = (await server.data(RECORD, {"s": g.service, "p": None}, api_key=g.key))["recordRequest"]["id"]
    assert await server.error_code(RECORD, {"s": g.service, "p": plain}, api_key=g.key) == "NOT_FOUND"
    flow = (await server.data(START, {"s": g.service}, api_key=g.key))["startFlow"]
    await server.data(COMPLETE, {"r": flow["reservation"]["id"], "ok": False}, api_key=g.key)
    assert (
        await server.error_code(RECORD, {"s": g.service, "p": flow["requestLog"]["id"]}, api_key=g.key) == "NOT_FOUND"
    )
    assert await quota(server, g) == {"availableRequests": 9, "reservedRequests": 0}


async def test_an_expired_hold_cannot_be_completed(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    rid = (await server.data(START, {"s": g.service, "a": 4}, api_key=g.key))["startFlow"]["reservation"]["id"]
    async with server.deps.db.session() as session:
        await session.execute(
            text("UPDATE reservations SET expires_at = now() - interval '1 second' WHERE id = :r"), {"r": rid}
        )
        await session.commit()
    assert await server.error_code(COMPLETE, {"r": rid, "ok": True}, api_key=g.key) == "NOT_FOUND"
    async with server.deps.db.autocommit() as conn:
        assert await gateway.release_all_expired(conn) >= 1
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 0}


async def test_an_environment_key_stays_in_its_environment(server: LiveServer) -> None:
    g = await new_gateway(server)
    sibling = await server.data(
        'mutation($p: ID!) { createEnvironment(projectId: $p, name: "staging") { id } }',
        {"p": g.project_id},
        token=g.owner,
    )
    sibling_id = sibling["createEnvironment"]["id"]
    mint = "mutation($i: ApiKeyInput!) { createApiKey(input: $i) { secret } }"
    stolen = {"i": {"projectId": g.project_id, "environmentId": sibling_id, "label": "x"}}
    assert await server.error_code(mint, stolen, api_key=g.key) == "UNAUTHENTICATED"
    await server.data(RECORD, {"s": g.service, "p": None}, api_key=g.key)
    nested = await server.data(
        "{ requestLogs { nodes { environment { project { environments { id } apiKeys { id } } } } } }", api_key=g.key
    )
    project = nested["requestLogs"]["nodes"][0]["environment"]["project"]
    assert [e["id"] for e in project["environments"]] == [g.environment_id]
    assert len(project["apiKeys"]) == 1


async def test_quota_arithmetic_stays_in_range(server: LiveServer) -> None:
    g = await new_gateway(server, available=10)
    adjust = "mutation($e: ID!, $s: ID!, $d: Int!) { adjustAvailableRequests(environmentId: $e, serviceId: $s, delta: $d) { availableRequests } }"
    assert (
        await server.error_code(adjust, {"e": g.environment_id, "s": g.service_id, "d": 2**31 - 1}, token=g.admin)
        == "BAD_USER_INPUT"
    )
    assert await quota(server, g) == {"availableRequests": 10, "reservedRequests": 0}


async def test_clients_group_projects_for_gateway_admins_only(server: LiveServer) -> None:
    g = await new_gateway(server)
    client_id = (await server.data('mutation { createClient(input: {name: "Acme"}) { id } }', token=g.admin))[
        "createClient"
    ]["id"]
    attach = "mutation($id: ID!, $c: ID) { updateProject(id: $id, input: {clientId: $c}) { client { name } } }"
    assert await server.error_code(attach, {"id": g.project_id, "c": client_id}, token=g.owner) == "FORBIDDEN"
    root, _ = await new_admin(server)
    attached = await server.data(attach, {"id": g.project_id, "c": client_id}, token=root)
    assert attached["updateProject"]["client"]["name"] == "Acme"
    listed = await server.data(
        "query($id: ID!) { client(id: $id) { projects { id } } }", {"id": client_id}, token=g.admin
    )
    assert [p["id"] for p in listed["client"]["projects"]] == [g.project_id]
    peek = "query($id: ID!) { project(id: $id) { client { projects { id } } } }"
    assert await server.error_code(peek, {"id": g.project_id}, token=g.owner) == "FORBIDDEN"


async def test_a_project_is_created_with_its_client(server: LiveServer) -> None:
    """createProject(clientId:) stores the project and its client in one statement; a client the
    caller may not attach is refused and nothing is created."""
    g = await new_gateway(server)
    client_id = (await server.data('mutation { createClient(input: {name: "Initech"}) { id } }', token=g.admin))[
        "createClient"
    ]["id"]
    create = 'mutation($c: ID) { createProject(input: {name: "with client", clientId: $c}) { name client { name } } }'
    root, _ = await new_admin(server)
    created = await server.data(create, {"c": client_id}, token=root)
    assert created["createProject"] == {"name": "with client", "client": {"name": "Initech"}}
    owner_projects = "{ me { projects(first: 50) { nodes { name } } } }"
    before = await server.data(owner_projects, token=g.owner)
    assert await server.error_code(create, {"c": client_id}, token=g.owner) == "FORBIDDEN"
    assert await server.data(owner_projects, token=g.owner) == before
