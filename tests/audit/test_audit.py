"""The audit trail: one row per mutation, immutable in PostgreSQL, filtered and counted in SQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import strawberry
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from app.audit import service
from app.audit.recorder import audited, require_audited
from tests.support import INGEST_LOGS as INGEST
from tests.support import LiveServer, ingest, new_admin, new_project, new_tenant, new_user

AUDIT = """query($f: AuditLogFilter, $first: Int, $after: String) {
  auditLogs(filter: $f, first: $first, after: $after) {
    totalCount
    nodes { action resourceType resourceId success errorMessage requestId ipAddress userAgent details user { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def audit_rows(server: LiveServer, admin: str, **filter: Any) -> list[dict[str, Any]]:
    data = await server.data(AUDIT, {"f": filter, "first": 500}, token=admin)
    rows: list[dict[str, Any]] = data["auditLogs"]["nodes"]
    return rows


async def test_a_successful_mutation_leaves_one_row(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    owner = await new_user(server)
    owner_id = (await server.data("{ me { id } }", token=owner))["me"]["id"]
    project_id = await new_project(server, owner)
    rows = await audit_rows(server, admin, userId=owner_id, action="project.create")
    assert len(rows) == 1
    row = rows[0]
    assert row["resourceType"] == "project" and row["resourceId"] == project_id and row["success"] is True
    assert row["user"]["id"] == owner_id and row["ipAddress"] == "127.0.0.1" and row["requestId"]
    assert row["details"] == {"arguments": {"input": {"name": "p", "description": None, "client_id": None}}}


async def test_a_failed_mutation_leaves_its_row_and_nothing_else(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    owner = await new_user(server)
    project_id = await new_project(server, owner, name="original")
    stranger = await new_user(server)
    stranger_id = (await server.data("{ me { id } }", token=stranger))["me"]["id"]
    rename = 'mutation($id: ID!) { updateProject(id: $id, input: {name: "hijacked"}) { name } }'
    assert await server.error_code(rename, {"id": project_id}, token=stranger) == "FORBIDDEN"
    rows = await audit_rows(server, admin, userId=stranger_id, action="project.update")
    assert len(rows) == 1
    assert rows[0]["success"] is False and "permission" in rows[0]["errorMessage"]
    assert rows[0]["resourceId"] == project_id
    name = await server.data("query($id: ID!) { project(id: $id) { name } }", {"id": project_id}, token=owner)
    assert name["project"]["name"] == "original"


async def test_secrets_never_reach_the_audit_trail(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    email = f"audit-{uuid.uuid4().hex[:8]}@example.com"
    await new_user(server, email)
    rows = await audit_rows(server, admin, action="user.register")
    mine = [r for r in rows if r["details"]["arguments"]["input"]["email"] == email]
    assert mine and mine[0]["details"]["arguments"]["input"]["password"] == "[redacted]"


async def test_ingestion_is_audited_without_the_logs(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("audit:read",))
    t = await new_tenant(server)
    ids = await ingest(server, t.secret, [f"line {i}" for i in range(150)])
    rows = await audit_rows(server, admin, action="log.ingest", success=True)
    # Ids are capped: the rest is a count.
    expected = {"submitted": 150, "accepted": 150, "duplicates": 0, "ids": ids[:100], "idsOmitted": 50}
    assert expected in [r["details"] for r in rows]


async def test_ingestion_rows_hold_counts_and_ids_never_log_contents(server: LiveServer) -> None:
    async with server.deps.db.session() as session:
        since = await session.scalar(text("SELECT now()"))
    reader, _ = await new_admin(server, ("audit:read",))
    t = await new_tenant(server)
    marker = f"card-4111-{uuid.uuid4().hex}"
    one = "mutation($i: LogInput!) { ingestLog(input: $i) { id } }"
    single = {"log": f"paid with {marker}", "attributes": {"card": marker}, "idempotencyKey": f"order-{marker}"}
    log_id = (await server.data(one, {"i": single}, api_key=t.secret))["ingestLog"]["id"]
    ids = await ingest(server, t.secret, [f"{marker} a", f"{marker} b"], attributes={"note": marker})
    # A duplicate, and a failed attempt (its attributes are no JSON object): neither shows the log.
    again = await server.data(INGEST, {"inputs": [single, {"log": marker}]}, api_key=t.secret)
    assert again["ingestLogs"]["duplicates"] == 1
    refused = {"log": marker, "attributes": [marker], "idempotencyKey": marker}
    assert await server.error_code(one, {"i": refused}, api_key=t.secret) == "BAD_USER_INPUT"

    rows = await audit_rows(server, reader, action="log.ingest", since=since.isoformat())
    assert marker not in json.dumps(rows)
    details = [r["details"] for r in rows]
    assert {"submitted": 1, "ids": [log_id]} in details
    assert {"submitted": 2, "accepted": 2, "duplicates": 0, "ids": ids} in details
    assert {"submitted": 2, "accepted": 1, "duplicates": 1, "ids": again["ingestLogs"]["ids"]} in details
    assert {"submitted": 1} in [r["details"] for r in rows if not r["success"]]


async def test_post_ingest_is_audited_like_ingest_logs(server: LiveServer) -> None:
    """POST /ingest (the shippers' endpoint) leaves the same row as ingestLogs: counts and ids, no
    contents; a known key's refused batch leaves a failed row; an unknown key leaves none."""
    async with server.deps.db.session() as session:
        since = await session.scalar(text("SELECT now()"))
    reader, _ = await new_admin(server, ("audit:read",))
    t = await new_tenant(server)
    marker = f"secret-{uuid.uuid4().hex}"
    headers = {"x-api-key": t.secret, "user-agent": "vector/0.40"}
    body = "\n".join(json.dumps({"message": f"{marker} {i}", "level": "info"}) for i in range(3))
    ok = await server.http.post("/ingest", content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    bad = await server.http.post("/ingest", content=f'{{"message": "{marker}"', headers=headers)
    assert bad.status_code == 400
    stranger = await server.http.post("/ingest", content=body, headers={"x-api-key": "lodge_nope"})
    assert stranger.status_code == 401

    rows = await audit_rows(server, reader, action="log.ingest", since=since.isoformat())
    assert marker not in json.dumps(rows)
    done = [r for r in rows if r["success"]]
    assert [r["details"] for r in done] == [{"submitted": 3, "accepted": 3, "duplicates": 0, "ids": ok.json()["ids"]}]
    assert done[0]["userAgent"] == "vector/0.40" and done[0]["requestId"] and done[0]["user"] is None
    failed = [r for r in rows if not r["success"]]
    assert len(failed) == 1 and failed[0]["details"] is None and failed[0]["errorMessage"]


async def test_postgres_refuses_to_change_the_trail(server: LiveServer) -> None:
    await new_user(server)
    async with server.deps.db.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM audit_logs")) > 0
    for statement in ("UPDATE audit_logs SET action = 'forged'", "DELETE FROM audit_logs", "TRUNCATE audit_logs"):
        async with server.deps.db.session() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))


async def test_stats_are_grouped_in_sql(server: LiveServer) -> None:
    async with server.deps.db.session() as session:
        since = await session.scalar(text("SELECT now()"))
    admin, _ = await new_admin(server)
    user = await new_user(server)
    other = await new_user(server)
    project_id = await new_project(server, user)
    rename = "mutation($id: ID!, $n: String!) { updateProject(id: $id, input: {name: $n}) { name } }"
    await server.data(rename, {"id": project_id, "n": "ok"}, token=user)
    await server.gql(rename, {"id": project_id, "n": "no"}, token=other)
    stats = await server.data(
        "query($s: DateTime) { auditLogStats(since: $s) { action count successRate } }",
        {"s": since.isoformat()},
        token=admin,
    )
    by_action = {s["action"]: s for s in stats["auditLogStats"]}
    assert by_action["project.update"] == {"action": "project.update", "count": 2, "successRate": 0.5}
    assert by_action["user.register"] == {"action": "user.register", "count": 3, "successRate": 1.0}
    assert by_action["project.create"]["count"] == 1


async def test_keyset_pages_walk_the_trail(server: LiveServer) -> None:
    admin, admin_id = await new_admin(server)
    for n in range(5):
        await new_project(server, admin, name=f"p{n}")
    seen: list[str] = []
    after = None
    while True:
        page = await server.data(
            AUDIT, {"f": {"userId": admin_id, "action": "project.create"}, "first": 2, "after": after}, token=admin
        )
        seen += [n["resourceId"] for n in page["auditLogs"]["nodes"]]
        if not page["auditLogs"]["pageInfo"]["hasNextPage"]:
            break
        after = page["auditLogs"]["pageInfo"]["endCursor"]
    assert len(seen) == 5 == len(set(seen))


@pytest.mark.parametrize(
    ("spec", "index"),
    [
        (service.AuditFilterSpec(user_id=uuid.uuid4()), "ix_audit_logs_user_id_created_at"),
        (service.AuditFilterSpec(action="project.create"), "ix_audit_logs_action_created_at"),
        (service.AuditFilterSpec(resource_type="project", resource_id="x"), "ix_audit_logs_resource_type_resource_id"),
        (service.AuditFilterSpec(), "ix_audit_logs_created_at"),
    ],
)
async def test_audit_queries_use_their_index(server: LiveServer, spec: service.AuditFilterSpec, index: str) -> None:
    query = service.list_query(spec, before=None, limit=50)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with server.deps.db.session() as session:
        # On a small table a sequential scan is cheapest; forbid it to see which index serves the query.
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join((await session.execute(text("EXPLAIN " + sql))).scalars().all())
    assert index in plan, plan


async def test_a_failed_registration_is_recorded_without_the_user_it_undid(server: LiveServer) -> None:
    # The new user exists only inside the transaction that the failure undoes: the audit row of the
    # attempt must not point at them (it would violate the foreign key and be lost).
    request_id = "register-fails-" + uuid.uuid4().hex
    mutation = """mutation($e: String!) { register(input: {email: $e, password: "long enough password"}) {
      user { vendors(after: "bad") { totalCount } } } }"""
    response = await server.http.post(
        "/graphql",
        json={"query": mutation, "variables": {"e": f"undone-{uuid.uuid4().hex}@example.com"}},
        headers={"x-request-id": request_id},
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    async with server.deps.db.session() as session:
        rows = (
            await session.execute(
                text("SELECT action, success, user_id FROM audit_logs WHERE request_id = :r"), {"r": request_id}
            )
        ).all()
    assert [(r.action, r.success, r.user_id) for r in rows] == [("user.register", False, None)]


async def test_an_ingestion_that_stood_is_audited_as_done_though_a_nested_field_failed(server: LiveServer) -> None:
    """Ingestion commits on its own connection: a nested field failing afterwards does not undo it,
    so its audit row says it happened (not "rolled back with the operation")."""
    async with server.deps.db.session() as session:
        since = await session.scalar(text("SELECT now()"))
    reader, _ = await new_admin(server, ("audit:read",))
    t = await new_tenant(server)
    nested = "mutation($i: LogInput!) { ingestLog(input: $i) { id project { logs(first: 100000) { nodes { id } } } } }"
    answer = await server.gql(nested, {"i": {"log": "stored whatever follows"}}, api_key=t.secret)
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    stored = await server.data(
        "query($p: ID!) { logs(projectId: $p, first: 10) { nodes { log } } }", {"p": t.project_id}, token=t.token
    )
    assert [n["log"] for n in stored["logs"]["nodes"]] == ["stored whatever follows"]
    rows = await audit_rows(server, reader, action="log.ingest", since=since.isoformat())
    assert [(r["success"], r["details"].get("submitted")) for r in rows] == [(True, 1)]


async def test_an_update_keeps_what_it_changed(server: LiveServer) -> None:
    auditor, _ = await new_admin(server, ("audit:read",))
    owner = await new_user(server)
    project_id = await new_project(server, owner, name="before")
    update = "mutation($id: ID!, $in: ProjectUpdate!) { updateProject(id: $id, input: $in) { name } }"
    await server.data(update, {"id": project_id, "in": {"name": "after", "description": None}}, token=owner)
    rows = await audit_rows(server, auditor, action="project.update", resourceId=project_id)
    # Only what changed: the description was null and stays null.
    assert rows[0]["success"] is True
    assert rows[0]["details"]["changes"] == {"name": {"before": "before", "after": "after"}}
    # A refused update records no changes.
    await server.gql(update, {"id": project_id, "in": {"logRetentionDays": 0}}, token=owner)
    rows = await audit_rows(server, auditor, action="project.update", resourceId=project_id)
    failed = [row for row in rows if not row["success"]]
    assert failed and "changes" not in (failed[0]["details"] or {})
    # updateMe too (a password, were it changed, is never in details).
    me = await server.data("{ me { id } }", token=owner)
    await server.gql('mutation { updateMe(input: {name: "Ada"}) { name } }', token=owner)
    rows = await audit_rows(server, auditor, action="user.update", resourceId=me["me"]["id"])
    assert rows and rows[0]["details"]["changes"]["name"]["after"] == "Ada"


async def test_a_refused_mutation_with_a_nul_in_its_id_keeps_its_audit_row(server: LiveServer) -> None:
    """Found by bench/fuzz/: an inline id holding U+0000 (variables are refused up front, literals
    are not) made the failed attempt's audit INSERT fail, and the attempt left no row."""
    user = await new_user(server)
    count = "SELECT count(*) FROM audit_logs WHERE action = 'user.reactivate' AND NOT success AND resource_id = 'ab'"
    async with server.deps.db.session() as session:
        before = await session.scalar(text(count))
    assert await server.error_code('mutation { reactivateUser(id: "a\\u0000b") { id } }', token=user) == "FORBIDDEN"
    async with server.deps.db.session() as session:
        assert await session.scalar(text(count)) == (before or 0) + 1


def test_a_mutation_without_an_audit_row_is_refused_at_build() -> None:
    @strawberry.type
    class Mutation:
        @strawberry.mutation(extensions=[audited()])
        def close_ticket(self) -> bool:
            return True

        @strawberry.mutation
        def open_ticket(self) -> bool:
            return True

    with pytest.raises(TypeError, match="open_ticket"):
        require_audited(Mutation)
    # The audited one is named after its field.
    closing = Mutation.__strawberry_definition__.fields[0].extensions[0]  # type: ignore[attr-defined]
    assert closing.action == "ticket.close"
