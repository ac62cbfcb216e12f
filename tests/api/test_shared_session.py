"""Sibling fields share the operation's session: they take turns, and a cancelled one finishes first."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from sqlalchemy import func, select, text
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


async def test_a_statement_cancelled_before_its_turn_is_closed_not_left_unawaited(server: LiveServer) -> None:
    # A sibling cancelled while another holds the session never runs its statement; its coroutine
    # is closed then, not left for the garbage collector to report as never awaited.
    async with server.deps.db.sessionmaker() as session:
        holder = asyncio.create_task(session.execute(text("SELECT pg_sleep(0.3)")))
        await asyncio.sleep(0)  # the holder takes its turn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            waiting = asyncio.create_task(session.execute(select(func.count()).select_from(audit.AuditLog)))
            await asyncio.sleep(0)  # now waiting for its turn
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await holder
            del waiting
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
        # The session is free again and serves the next statement.
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
