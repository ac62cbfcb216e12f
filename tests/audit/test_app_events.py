"""Apps record their own audit events (issue 17, Communities): `audit:write`, names validated,
never one of Lodge's own actions; the row is a normal, immutable audit row."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.audit.test_audit import audit_rows
from tests.support import LiveServer, new_admin, new_user

RECORD = """mutation($i: AuditEventInput!) {
  recordAuditEvent(input: $i) { action resourceType resourceId details }
}"""


async def test_an_app_records_its_own_event(server: LiveServer) -> None:
    app_token, app_id = await new_admin(server, ("audit:write",))
    reader, _ = await new_admin(server, ("audit:read",))
    action = f"order_{uuid.uuid4().hex[:8]}.refund"
    event = {"action": action, "resourceType": "order", "resourceId": "o-42", "details": {"amount": 12.5}}
    recorded = (await server.data(RECORD, {"i": event}, token=app_token))["recordAuditEvent"]
    assert recorded == event
    rows = await audit_rows(server, reader, action=action)
    assert len(rows) == 1
    row = rows[0]
    assert (row["resourceType"], row["resourceId"], row["details"], row["success"]) == (
        "order",
        "o-42",
        {"amount": 12.5},
        True,
    )
    assert row["user"]["id"] == app_id and row["requestId"] and row["ipAddress"] == "127.0.0.1"
    # Without a resource type, the row says "app".
    bare = f"bot_{uuid.uuid4().hex[:8]}.command_run"
    await server.data(RECORD, {"i": {"action": bare}}, token=app_token)
    assert [r["resourceType"] for r in await audit_rows(server, reader, action=bare)] == ["app"]


async def test_bad_events_are_refused_and_recorded_as_attempts(server: LiveServer) -> None:
    app_token, app_id = await new_admin(server, ("audit:write",))
    reader, _ = await new_admin(server, ("audit:read",))
    someone = await new_user(server)
    async with server.deps.db.session() as session:
        since = await session.scalar(text("SELECT now()"))
    good = {"action": "order.refund"}
    assert await server.error_code(RECORD, {"i": good}) == "UNAUTHENTICATED"
    assert await server.error_code(RECORD, {"i": good}, token=someone) == "FORBIDDEN"
    for bad in (
        {"action": "Order.Refund"},
        {"action": "refund"},
        {"action": "order..refund"},
        {"action": "order.refund; drop"},
        {"action": "user.login"},  # Lodge's own
        {"action": "project.create"},
        {"action": "audit.record"},
        {"action": "order.refund", "resourceType": "Order!"},
        {"action": "order.refund", "details": [1, 2]},
        {"action": "order.refund", "details": {"a": "x" * 2_000_000}},
        {"action": "x" * 10_000 + ".y"},
    ):
        assert await server.error_code(RECORD, {"i": bad}, token=app_token) == "BAD_USER_INPUT", bad
    rows = await audit_rows(server, reader, userId=app_id, since=since.isoformat())
    # Each refusal left only the attempt's row (as every failed mutation does), under Lodge's name.
    assert rows and all(r["action"] == "audit.record" and r["success"] is False for r in rows)
    assert not any(r["action"] in ("user.login", "project.create") for r in rows)
