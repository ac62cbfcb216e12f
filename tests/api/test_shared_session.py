"""Sibling fields share the operation's session: they take turns, and a cancelled one finishes first."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import col

from app.audit import models as audit
from tests.support import LiveServer, new_user


async def test_sibling_root_fields_that_read_the_session_directly(server: LiveServer) -> None:
    token = await new_user(server)
    vendor = (await server.data('mutation { createVendor(input: {name: "Twin"}) { id } }', token=token))["createVendor"]
    query = "query($v: ID!) { a: vendor(id: $v) { id } b: vendor(id: $v) { name } me { id } }"
    for _ in range(5):
        body = await server.gql(query, {"v": vendor["id"]}, token=token)
        assert "errors" not in body, body["errors"]
        assert body["data"]["a"]["id"] == vendor["id"] and body["data"]["b"]["name"] == "Twin"


async def test_a_field_cancelled_mid_statement_leaves_the_failure_recorded(server: LiveServer) -> None:
    # messages(last: 501) fails at once; graphql-core cancels its sibling `user`, which may be in
    # the middle of a statement. The operation still rolls back cleanly and records its failure.
    token = await new_user(server)
    mutation = 'mutation { createConversation(title: "x") { user { email } messages(last: 501) { totalCount } } }'
    for _ in range(3):
        body = await server.gql(mutation, token=token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
        assert body.get("data") is None
    me = (await server.data("{ me { id } }", token=token))["me"]["id"]
    async with server.deps.db.session() as session:
        failures = await session.scalar(
            select(func.count()).where(
                col(audit.AuditLog.user_id) == me,
                col(audit.AuditLog.action) == "conversation.create",
                col(audit.AuditLog.success).is_(False),
            )
        )
    assert failures == 3
    assert (await server.http.get("/readyz")).status_code == 200
