"""Compiled reads of the logs, gateway and audit domains answer byte for byte as the resolvers do
(issue 16; tests/api/test_compiled.py explains the harness).

What compiles: Query.client(id), Query.clients (gateway:admin) with Client, Project, ApiKey,
Environment, EnvironmentService and Service below them; Query.auditLogs (audit:read) with AuditLog
but its `timestamp` and `ipAddress`. What keeps the resolvers: Query.project, Query.projects,
Query.logs, Query.requestLogs, Query.auditLogStats, Project.logs, AuditLog.timestamp/ipAddress.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse, print_ast
from sqlalchemy import null

from app.audit import models as audit
from app.gateway import models as gateway
from app.logs import models as logs
from tests.api.compiled_support import compare, walk
from tests.support import LiveServer, counted, ingest, new_admin, new_api_key, new_project, new_user

# Names that exercise every escape orjson and to_json must agree on.
NAMES = ['Quote "q" and \\ back', "tab\tnew\nline\x01\x1f", "café é ü", "sep\u2028\u2029", "astral 🍕𝄞", "", "  "]
DETAILS: list[Any] = [
    {"a": [1, 2.5, {"b": None}], "é": "sep\u2028", "q": 'x"\\y'},
    {},
    [],
    {"x": 0.1, "y": 1e-07, "z": 100.0, "big": 12345678901234567890, "neg": -0.0},
    None,  # the JSON null
    "just a string",
    {"deep": {"er": {"est": [[], {}, [True, False]]}}},
]
BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GRAPHQL = Path(__file__).resolve().parents[2] / "graphql"

# Addresses as PostgreSQL and Python print them alike, and two they do not (a mask, a dotted tail).
IPS = ["127.0.0.1", "10.1.2.3/24", "::1", "2001:db8::ff00:42:8329", "::ffff:1.2.3.4", "2001:0:0:1::1", "fe80::1:0:0:1"]


class World:
    """A fixed set of rows and the callers who look at them."""

    def __init__(self) -> None:
        self.marker = "zl" + uuid.uuid4().hex[:6]
        self.viewers: dict[str, dict[str, str]] = {}
        self.owner = ""
        self.other = ""
        self.clients: list[str] = []
        self.projects: list[str] = []
        self.key_project = ""


@pytest.fixture(scope="module")
async def world(server: LiveServer) -> World:
    w = World()
    owner_token = await new_user(server)
    w.owner = (await server.data("{ me { id } }", token=owner_token))["me"]["id"]
    other_token = await new_user(server)
    w.other = (await server.data("{ me { id } }", token=other_token))["me"]["id"]
    gateway_token, _ = await new_admin(server, ("gateway:admin",))
    admin_token, _ = await new_admin(server, ("*",))
    auditor_token, _ = await new_admin(server, ("audit:read",))
    projects_token, _ = await new_admin(server, ("projects:admin",))
    w.key_project = await new_project(server, owner_token, name="keyed")
    _, secret = await new_api_key(server, owner_token, w.key_project)
    w.viewers = {
        "anonymous": {},
        "owner": {"authorization": f"Bearer {owner_token}"},
        "other": {"authorization": f"Bearer {other_token}"},
        "gateway": {"authorization": f"Bearer {gateway_token}"},
        "admin": {"authorization": f"Bearer {admin_token}"},
        "auditor": {"authorization": f"Bearer {auditor_token}"},
        "projects": {"authorization": f"Bearer {projects_token}"},
        "apikey": {"authorization": f"ApiKey {secret}"},
        "badtoken": {"authorization": "Bearer not-a-token"},
    }
    m = w.marker
    async with server.deps.db.session() as session:
        services = []
        for i in range(4):
            service = gateway.Service(
                name=f"{m} {NAMES[i]} {i}",
                description=None if i % 2 else NAMES[(i + 3) % len(NAMES)],
                created_at=BASE + timedelta(microseconds=0 if i % 2 else 654321),
            )
            session.add(service)
            services.append(service)
        for i in range(6):  # the last one has no project
            client = gateway.Client(
                name=f"{NAMES[i % len(NAMES)]} {m}",
                email=None if i % 3 == 0 else f"{m}+{i}@exämple.com",
                # Two clients share an instant: the id breaks the tie in the order and the cursor.
                created_at=BASE + timedelta(seconds=i // 2, microseconds=0 if i % 2 else 500),
            )
            session.add(client)
            await session.flush()
            w.clients.append(str(client.id))
        await session.flush()
        for i in range(9):
            owner = w.owner if i % 3 else w.other
            project = logs.Project(
                name=f"{NAMES[(i + 2) % len(NAMES)]} #{i}",
                description=None if i % 2 else NAMES[i % len(NAMES)],
                owner_id=uuid.UUID(owner),
                client_id=None if i == 8 else uuid.UUID(w.clients[i % 5]),
                created_at=BASE + timedelta(minutes=i // 2, microseconds=0 if i % 4 else 123456),
            )
            session.add(project)
            await session.flush()
            w.projects.append(str(project.id))
            offered = services[: i % 4]  # 0 to 3 services
            for service in offered:
                session.add(gateway.ProjectService(project_id=project.id, service_id=service.id))
            await session.flush()
            project_keys = [
                logs.ApiKey(
                    project_id=project.id,
                    label=NAMES[(i + j) % len(NAMES)] or "-",
                    description=None if j else "whole project é",
                    prefix=f"lodge_{j}{i}",
                    key_hash=uuid.uuid4().hex,
                    created_at=BASE + timedelta(seconds=j, microseconds=j * 7),
                    last_used_at=None if j else BASE + timedelta(days=1),
                    expires_at=BASE + timedelta(days=400) if j == 1 else None,
                    revoked_at=BASE + timedelta(hours=1, microseconds=1) if j == 2 else None,
                )
                for j in range(i % 3)
            ]
            session.add_all(project_keys)
            for e in range(i % 4):  # 0 to 3 environments
                environment = gateway.Environment(
                    project_id=project.id,
                    name=NAMES[(e + i) % len(NAMES)] + f" {e}",
                    created_at=BASE + timedelta(seconds=e // 2, microseconds=e),
                )
                session.add(environment)
                await session.flush()
                for k in range(e):
                    session.add(
                        logs.ApiKey(
                            project_id=project.id,
                            environment_id=environment.id,
                            label=f"env key {k} {NAMES[k]}",
                            prefix=f"lodge_e{k}",
                            key_hash=uuid.uuid4().hex,
                            created_at=BASE,  # one instant: the id orders them
                        )
                    )
                for s, service in enumerate(offered[:e]):
                    session.add(
                        gateway.EnvironmentService(
                            environment_id=environment.id,
                            service_id=service.id,
                            project_id=project.id,
                            available_requests=[0, 7, 2147483647][s % 3],
                            reserved_requests=[0, 3, 5][s % 3],
                            created_at=BASE + timedelta(seconds=s % 2),
                        )
                    )
        for i in range(14):
            session.add(
                audit.AuditLog(
                    user_id=uuid.UUID([w.owner, w.other][i % 2]) if i % 3 else None,
                    action=f"{m}.{['create', 'update', NAMES[0]][i % 3]}",
                    resource_type=m if i % 5 else None,
                    resource_id=NAMES[i % len(NAMES)] if i % 4 else None,
                    details=null() if i == 3 else DETAILS[i % len(DETAILS)],
                    ip_address=IPS[i % len(IPS)],
                    user_agent=None if i % 2 else NAMES[(i + 1) % len(NAMES)],
                    session_id=None if i % 3 else f"s{i}",
                    request_id=f"r{i}" if i % 2 else None,
                    success=i % 4 != 1,
                    error_message=NAMES[i % len(NAMES)] if i % 4 == 1 else None,
                    # Pairs share an instant: the id breaks the tie.
                    created_at=BASE + timedelta(seconds=i // 2, microseconds=0 if i % 3 else 999999),
                )
            )
        await session.commit()
    return w


def _operations(name: str) -> dict[str, str]:
    """The query operations of graphql/<name>.graphql, each as a document of its own."""
    document = parse((GRAPHQL / name).read_text())
    return {
        d.name.value: print_ast(d)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode) and d.operation.value == "query" and d.name is not None
    }


CLIENT = "id name email createdAt updatedAt"
PROJECT = "id name description createdAt updatedAt"
API_KEY = "id label description prefix createdAt lastUsedAt expiresAt revokedAt"
ENVIRONMENT = "id name createdAt updatedAt"
SERVICE = "id name description createdAt updatedAt"


def client_selections() -> list[str]:
    """Selections of one Client: each field alone, all of them, aliases, fragments, __typename,
    and every relation below it."""
    out = [*CLIENT.split(), f"{CLIENT} __typename", "a: id b: email a2: id", "...C", "... on Client { id email } name"]
    out += [
        f"projects {{ {PROJECT} __typename }}",
        *(f"projects {{ {name} }}" for name in PROJECT.split()),
        "projects { owner { id name username email createdAt __typename } }",
        f"projects {{ apiKeys {{ {API_KEY} __typename environment {{ id name }} project {{ id name }} }} }}",
        f"projects {{ client {{ {CLIENT} projects {{ id }} }} }}",
        f"projects {{ services {{ {SERVICE} __typename }} }}",
        f"projects {{ environments {{ {ENVIRONMENT} __typename project {{ name }} apiKeys {{ id label }} services"
        f" {{ availableRequests reservedRequests __typename environment {{ name }} service {{ {SERVICE} }} }} }} }}",
        "p: projects { n: name e: environments { n: name } }",
    ]
    return out


def _clients(selection: str, arguments: str = "first: 50") -> str:
    fragment = " fragment C on Client { id name email }" if "...C" in selection else ""
    return f"{{ clients({arguments}) {{ totalCount nodes {{ {selection} }} }} }}{fragment}"


async def test_clients_compile_and_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    for viewer in ("gateway", "admin"):
        for selection in client_selections():
            data, ran = await compare(server, resolver_server, _clients(selection), None, world.viewers[viewer])
            assert ran == "compiled", (viewer, selection, ran)
            assert len(data["data"]["clients"]["nodes"]) >= 6
        for part in (
            "edges { cursor node { id } __typename } pageInfo { hasNextPage hasPreviousPage startCursor endCursor"
            " __typename } __typename",
            "totalCount",
            "pageInfo { hasPreviousPage } totalCount",
            "nodes { id } edges { node { name } } pageInfo { endCursor }",
        ):
            query = f"{{ clients(first: 3) {{ {part} }} }}"
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == "compiled", (viewer, part, ran)
        lookup = f"query($id: ID!) {{ client(id: $id) {{ {CLIENT} __typename projects {{ {PROJECT} owner {{ id email }}"
        lookup += f" apiKeys {{ {API_KEY} }} environments {{ {ENVIRONMENT} services {{ availableRequests }} }}"
        lookup += f" services {{ {SERVICE} }} client {{ name }} }} }} }}"
        for client in [*world.clients, str(uuid.uuid4())]:  # an unknown id: null, no error
            _, ran = await compare(server, resolver_server, lookup, {"id": client}, world.viewers[viewer])
            assert ran == "compiled", (viewer, client, ran)


async def test_every_page_of_clients_matches(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    query = (
        "query($n: Int, $after: String) { clients(first: $n, after: $after) { totalCount"
        " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id name"
        " projects { id apiKeys { id } } } } } }"
    )
    for size in (1, 2, 5):
        after = None
        seen: list[str] = []
        while True:
            data, ran = await compare(
                server, resolver_server, query, {"n": size, "after": after}, world.viewers["gateway"]
            )
            assert ran == "compiled"
            page = data["data"]["clients"]
            seen += [edge["node"]["id"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert set(world.clients) <= set(seen)


async def test_who_may_not_read_clients_gets_the_resolvers_errors(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    listing = f"{{ clients(first: 5) {{ totalCount nodes {{ {CLIENT} projects {{ id }} }} }} }}"
    lookup = f'{{ client(id: "{world.clients[1]}") {{ {CLIENT} }} }}'
    for viewer in ("owner", "other", "auditor", "projects", "anonymous", "apikey"):
        for query in (listing, lookup):
            _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
            assert ran == "bail_after", (viewer, query, ran)
    _, ran = await compare(server, resolver_server, listing, None, world.viewers["badtoken"])
    assert ran == "bail_before"
    cases: list[tuple[str, str, str]] = [
        ("{ clients(first: 501) { nodes { id } } }", "gateway", "bail_before"),
        ("{ clients(first: -1) { nodes { id } } }", "gateway", "bail_before"),
        ('{ clients(after: "bm9wZQ") { nodes { id } } }', "gateway", "bail_before"),
        ('{ clients(after: "bm9wZQ") { nodes { id } } }', "other", "bail_before"),  # FORBIDDEN first there
        ('{ client(id: "nope") { id } }', "gateway", "bail_before"),
        ('{ client(id: "nope") { id } }', "owner", "bail_before"),
    ]
    for query, viewer, expected in cases:
        _, ran = await compare(server, resolver_server, query, None, world.viewers[viewer])
        assert ran == expected, (query, viewer, ran)


async def test_what_does_not_compile_keeps_the_resolvers(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("{ requestLogs(first: 5) { totalCount nodes { id } } }", {}),
        ("{ auditLogStats { action count successRate } }", {}),
    ]
    for viewer in ("owner", "other", "admin", "projects", "apikey", "anonymous", "badtoken"):
        for query, variables in cases:
            _, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
            assert ran is None, (viewer, query, ran)


async def test_projects_compile_for_their_owners(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    """project(id) and projects for owners and projects:admin; anyone else gets the resolvers' errors
    (an API key, allowed its own project there, is answered by the resolvers)."""
    lookup = (
        f"query($id: ID!) {{ project(id: $id) {{ {PROJECT} owner {{ name projects(first: 2) {{ totalCount }} }} }} }}"
    )
    listing = (
        "query($n: Int, $a: String) { projects(first: $n, after: $a) { totalCount"
        f" pageInfo {{ hasNextPage hasPreviousPage endCursor }} nodes {{ {PROJECT} }} }} }}"
    )
    signed_in = ("owner", "other", "admin", "projects", "gateway")
    for viewer in (*signed_in, "apikey", "anonymous", "badtoken"):
        for target in (world.projects[4], world.key_project, str(uuid.uuid4()), "nope"):
            _, ran = await compare(server, resolver_server, lookup, {"id": target}, world.viewers[viewer])
            if viewer not in signed_in or target == "nope":
                assert ran == "bail_before", (viewer, target, ran)
            else:
                assert ran in ("compiled", "bail_after"), (viewer, target, ran)
        for variables in ({"n": 2}, {"n": 1}, {}):
            _, ran = await compare(server, resolver_server, listing, variables, world.viewers[viewer])
            assert ran == ("compiled" if viewer in signed_in else "bail_before"), (viewer, ran)


async def test_logs_page_both_ways_for_who_may_read_them(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    """A project's logs, oldest first, forward and backward, with each filter, for its owner, its
    own API key, projects:admin; the resolvers' errors for anyone else."""
    owner_token = world.viewers["owner"]["authorization"].removeprefix("Bearer ")
    _, secret = await new_api_key(server, owner_token, world.key_project)
    texts = [f"{world.marker} {name} {i}" for i, name in enumerate(NAMES * 2) if name.strip()]
    for level, chunk in (("INFO", texts[:7]), ("ERROR", texts[7:11]), ("warn", texts[11:])):
        await ingest(server, secret, chunk, level=level, attributes={"n": 1.5, "s": "é", "k": [None, {}]})
    query = (
        "query($p: ID!, $f: LogFilter, $n: Int, $a: String, $l: Int, $b: String) {"
        " logs(projectId: $p, filter: $f, first: $n, after: $a, last: $l, before: $b) { totalCount"
        " pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
        " edges { cursor node { id log level attributes occurredAt createdAt cursor apiKey { id prefix } project { name } } } } }"
    )
    filters: list[dict[str, Any] | None] = [
        None,
        {"level": "ERROR"},
        {"search": world.marker},
        {"search": "%"},
        {"since": "2000-01-01T00:00:00", "until": "2999-01-01T00:00:00Z"},
    ]
    for viewer in ("owner", "apikey", "projects"):
        for f in filters:
            for backwards in (False, True):
                cursor, pages = None, 0
                while pages < 30:
                    variables: dict[str, Any] = {"p": world.key_project, "f": f}
                    variables.update({"l": 4, "b": cursor} if backwards else {"n": 4, "a": cursor})
                    data, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
                    assert ran == "compiled", (viewer, f, backwards, ran)
                    pages += 1
                    info = data["data"]["logs"]["pageInfo"]
                    if not info["hasPreviousPage" if backwards else "hasNextPage"]:
                        break
                    cursor = info["startCursor" if backwards else "endCursor"]
                if f is None:
                    assert pages >= 3
    nested = "query($id: ID!) { project(id: $id) { name logs(last: 3, filter: {level: WARN}) { totalCount nodes { log level } } } }"
    for viewer in ("owner", "projects", "other", "anonymous", "apikey", "badtoken"):
        _, ran = await compare(server, resolver_server, query, {"p": world.key_project, "n": 2}, world.viewers[viewer])
        assert ran == (
            "compiled"
            if viewer in ("owner", "projects", "apikey")
            else "bail_after"
            if viewer != "badtoken"
            else "bail_before"
        ), (viewer, ran)
        _, ran = await compare(server, resolver_server, nested, {"id": world.key_project}, world.viewers[viewer])
        assert ran is not None, viewer
    for variables in (
        {"p": "nope"},
        {"p": str(uuid.uuid4())},
        {"p": world.key_project, "n": 501},
        {"p": world.key_project, "a": "garbage"},
        {"p": world.key_project, "n": 1, "l": 1},
        {"p": world.key_project, "f": {"apiKeyId": "nope"}},
    ):
        _, ran = await compare(server, resolver_server, query, variables, world.viewers["owner"])
        assert ran in ("bail_before", "bail_after"), (variables, ran)


async def test_the_query_documents(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    operations = {**_operations("logs.graphql"), **_operations("gateway.graphql"), **_operations("audit.graphql")}
    assert set(operations) == {
        *("Projects", "Logs", "Flow", "Clients", "AuditLogs", "AuditLogStats"),
        *("LiveHolds", "Quotas", "RefusedRequests"),
    }
    variables: dict[str, dict[str, Any]] = {
        "Projects": {"first": 3},
        "Logs": {"projectId": world.key_project, "first": 5},
        "Flow": {"startPoint": "rl_nothing"},
        "Clients": {"first": 50},
        "LiveHolds": {"first": 5},
        "Quotas": {"first": 5},
        "RefusedRequests": {"first": 5},
        "AuditLogs": {"filter": {"action": f"{world.marker}.create"}, "first": 5},
        "AuditLogStats": {},
    }
    for viewer, name in [(v, n) for v in world.viewers for n in operations]:
        _, ran = await compare(server, resolver_server, operations[name], variables[name], world.viewers[viewer])
        if name == "Projects":
            signed_in = viewer not in ("anonymous", "apikey", "badtoken")
            assert ran == ("compiled" if signed_in else "bail_before"), (viewer, name, ran)
        elif name == "AuditLogs":
            if viewer in ("admin", "auditor"):
                assert ran in ("compiled", "bail_after"), (viewer, name, ran)
            else:
                assert ran == ("bail_before" if viewer == "badtoken" else "bail_after"), (viewer, name, ran)
        elif name == "Logs":  # the project's owner and its own key: compiled; anyone else: the resolver's errors
            assert ran == ("compiled" if viewer in ("owner", "apikey", "admin", "projects") else ran), (viewer, ran)
            assert ran is not None, (viewer, name)
        elif name != "Clients":  # the others keep their resolvers (see the module's docstring)
            assert ran is None, (viewer, name, ran)
        elif viewer in ("gateway", "admin"):
            assert ran == "compiled", (viewer, name, ran)
        else:
            assert ran == ("bail_before" if viewer == "badtoken" else "bail_after"), (viewer, name, ran)


AUDIT = "id action resourceType resourceId success errorMessage userAgent requestId sessionId details"


def audit_selections() -> list[str]:
    return [
        *(f"nodes {{ {name} }}" for name in AUDIT.split()),
        f"nodes {{ {AUDIT} __typename }} totalCount __typename",
        "nodes { a: id b: action a2: id user { id name email __typename } }",
        "nodes { ... on AuditLog { id details } ...A }",
        "edges { cursor node { id user { id } } __typename } pageInfo { hasNextPage hasPreviousPage startCursor"
        " endCursor __typename }",
        "totalCount",
        "pageInfo { startCursor } totalCount",
    ]


def _audit(selection: str) -> str:
    fragment = " fragment A on AuditLog { action success }" if "...A" in selection else ""
    return f"query($f: AuditLogFilter, $n: Int, $a: String) {{ auditLogs(filter: $f, first: $n, after: $a) {{ {selection} }} }}{fragment}"


async def test_audit_logs_compile_and_match(server: LiveServer, resolver_server: LiveServer, world: World) -> None:
    m = world.marker
    mine = {"resourceType": m}
    for viewer in ("auditor", "admin"):
        for selection in audit_selections():
            for variables in ({"f": {"action": f"{m}.create"}, "n": 50}, {"n": 5}, {"f": mine, "n": 50}):
                _, ran = await compare(server, resolver_server, _audit(selection), variables, world.viewers[viewer])
                assert ran == "compiled", (viewer, selection, variables, ran)
    filters: list[dict[str, Any] | None] = [
        None,
        {},
        {"userId": world.owner},
        {"userId": world.other, "action": f"{m}.update"},
        {"userId": "", "action": f"{m}.{NAMES[0]}"},  # an empty id filters nothing, as in the resolver
        {**mine, "success": False},
        {**mine, "success": True},
        {**mine, "resourceId": NAMES[1]},
        {"resourceType": m, "since": (BASE + timedelta(seconds=2)).isoformat()},
        {**mine, "since": (BASE + timedelta(seconds=3, microseconds=999999)).isoformat()},  # a row's own instant
        {**mine, "until": (BASE + timedelta(seconds=3, microseconds=999999)).isoformat()},
        {**mine, "since": "2026-03-01T13:00:01+01:00", "until": "2026-03-01T12:00:05"},
        {"action": "nothing at all"},
        {"resourceType": ""},
    ]
    query = _audit(f"totalCount pageInfo {{ hasNextPage endCursor }} nodes {{ {AUDIT} user {{ id }} }}")
    for f in filters:
        _, ran = await compare(server, resolver_server, query, {"f": f, "n": 20}, world.viewers["auditor"])
        assert ran == "compiled", (f, ran)
    pages = _audit("pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } }")
    for size in (1, 3):
        runs = await walk(server, resolver_server, pages, {"f": mine, "n": size}, world.viewers["auditor"], "auditLogs")
        assert set(runs) == {"compiled"}
        assert len(runs) > 3


async def test_audit_logs_refusals_and_python_fields(
    server: LiveServer, resolver_server: LiveServer, world: World
) -> None:
    query = _audit("totalCount nodes { id action }")
    for viewer in ("owner", "gateway", "projects", "anonymous", "apikey"):
        _, ran = await compare(server, resolver_server, query, {"n": 5}, world.viewers[viewer])
        assert ran == "bail_after", (viewer, ran)
    _, ran = await compare(server, resolver_server, query, {"n": 5}, world.viewers["badtoken"])
    assert ran == "bail_before"
    for variables in (
        {"f": {"userId": "nope"}},
        {"n": 501},
        {"a": "garbage"},
        {"a": "dmVuZG9yOm5vcGU"},
    ):
        for viewer in ("auditor", "owner"):
            _, ran = await compare(server, resolver_server, query, variables, world.viewers[viewer])
            assert ran == "bail_before", (variables, viewer, ran)
    # A page holding an address Python prints otherwise (a mask, a dotted IPv6 tail) bails; one page
    # per row shows each address compiled or bailed, identical either way.
    query = "query($f: AuditLogFilter, $a: String) { auditLogs(filter: $f, first: 1, after: $a) { nodes { ipAddress } pageInfo { hasNextPage endCursor } } }"
    filtered = {"f": {"resourceType": world.marker}}
    assert set(await walk(server, resolver_server, query, filtered, world.viewers["auditor"], "auditLogs")) == {
        "compiled",
        "bail_after",
    }


async def test_one_statement_for_a_client_and_all_below(server: LiveServer, world: World) -> None:
    token = world.viewers["gateway"]["authorization"].removeprefix("Bearer ")
    query = (
        f"query($id: ID!) {{ client(id: $id) {{ {CLIENT} projects {{ {PROJECT} owner {{ name }}"
        f" apiKeys {{ {API_KEY} environment {{ name }} }} services {{ name }} environments {{ name apiKeys {{ id }}"
        " services { availableRequests service { name } } } } } }"
    )
    variables = {"id": world.clients[3]}
    await server.data(query, variables, token=token)  # the caller is known from here on
    data, statements = await counted(server, query, variables, token)
    projects = data["client"]["projects"]
    assert [p["id"] for p in projects] == [world.projects[3]]
    assert projects[0]["environments"][2]["services"][1]["availableRequests"] == 7
    assert statements == 1
