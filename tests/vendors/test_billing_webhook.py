"""Billing status from the provider's signed webhook (POST /webhooks/billing): signatures and their
age checked, each event applied once, late events changing nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from app.settings import Settings
from app.vendors.webhook import sign
from tests.support import LiveServer, live_server, new_admin, new_user

SECRET = "whsec_" + uuid.uuid4().hex
MINE = "{ billingSubscriptions { nodes { id status productId externalId endDate } } }"


@pytest.fixture(scope="module")
async def billing_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings.model_copy(update={"billing_webhook_secret": SECRET}), database_url) as live:
        yield live


def event(
    external_id: str, status: str = "active", *, created: int | None = None, event_id: str | None = None, **data: Any
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "subscription.updated",
        "created": created or int(time.time()),
        "data": {
            "provider": "stripe",
            "externalId": external_id,
            "productId": "pro",
            "status": status,
            "startDate": "2026-12-01T00:00:00Z",
            "endDate": None,
            **data,
        },
    }


async def post(
    server: LiveServer,
    body: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    at: int | None = None,
    header: str | bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signature = header if header is not None else sign(secret, raw, at or int(time.time()))
    value = signature if isinstance(signature, bytes) else signature.encode()  # a test may send non-ASCII
    headers = {b"lodge-signature": value, b"content-type": b"application/json"}
    response = await server.http.post("/webhooks/billing", content=raw, headers=headers)
    return response.status_code, response.json()


async def test_events_set_the_status_once_and_in_order(billing_server: LiveServer) -> None:
    server = billing_server
    user = await new_user(server)
    user_id = (await server.data("{ me { id } }", token=user))["me"]["id"]
    external = f"sub_{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    first = event(external, "active", created=now, userId=user_id)
    status, body = await post(server, first)
    assert status == 200 and body["applied"] is True
    mine = (await server.data(MINE, token=user))["billingSubscriptions"]["nodes"]
    assert [(n["status"], n["externalId"]) for n in mine] == [("active", external)]

    # The same event again changes nothing and says so.
    assert await post(server, first) == (200, {"received": True, "duplicate": True})
    # A later event cancels; an older one arriving after it changes nothing.
    status, body = await post(server, event(external, "cancelled", created=now + 10))
    assert status == 200 and body["applied"] is True
    status, body = await post(server, event(external, "active", created=now + 5))
    assert status == 200 and body["applied"] is False
    mine = (await server.data(MINE, token=user))["billingSubscriptions"]["nodes"]
    assert [n["status"] for n in mine] == ["cancelled"]
    async with server.deps.db.session() as session:
        rows = await session.scalar(
            text("SELECT count(*) FROM audit_logs WHERE action = 'subscription.webhook' AND resource_id = :id"),
            {"id": mine[0]["id"]},
        )
    assert rows == 3  # the duplicate wrote nothing


async def test_a_user_is_found_by_clerk_id_and_must_exist(billing_server: LiveServer) -> None:
    server = billing_server
    clerk = f"user_{uuid.uuid4().hex}"
    upsert = "mutation($c: String!) { upsertClerkUser(input: {clerkId: $c}) { id } }"
    admin, _ = await new_admin(server, ("users:admin",))
    user_id = (await server.data(upsert, {"c": clerk}, token=admin))["upsertClerkUser"]["id"]
    external = f"sub_{uuid.uuid4().hex[:10]}"
    status, body = await post(server, event(external, clerkId=clerk))
    assert status == 200 and body["applied"] is True
    async with server.deps.db.session() as session:
        owner = await session.scalar(
            text("SELECT user_id::text FROM subscriptions WHERE external_id = :e"), {"e": external}
        )
    assert owner == user_id

    # Nobody to give it to: refused, and not remembered (the same event, corrected, is taken).
    lost = event(f"sub_{uuid.uuid4().hex[:10]}", userId=str(uuid.uuid4()))
    status, body = await post(server, lost)
    assert status == 400 and body["error"]["code"] == "BAD_USER_INPUT"
    lost["data"]["userId"] = user_id
    assert (await post(server, lost))[1]["applied"] is True


async def test_unsigned_stale_or_malformed_events_are_refused(billing_server: LiveServer, server: LiveServer) -> None:
    external = f"sub_{uuid.uuid4().hex[:10]}"
    good = event(external, userId=str(uuid.uuid4()))
    raw = json.dumps(good).encode()
    now = int(time.time())
    refusals = {
        "no header": await post(billing_server, good, header=""),
        "another secret": await post(billing_server, good, secret="whsec_other"),
        "too old": await post(billing_server, good, at=now - 3600),
        "from the future": await post(billing_server, good, at=now + 3600),
        "tampered body": await post(
            billing_server, raw.replace(b'"active"', b'"expired"'), header=sign(SECRET, raw, now)
        ),
        "no v1": await post(billing_server, good, header=f"t={now}"),
        "not ASCII digits": await post(billing_server, good, header="t=²,v1=00".encode("latin-1")),
    }
    for reason, (status, body) in refusals.items():
        assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED"), reason
    bad_bodies = {
        "not json": b"{nope",
        "no data": json.dumps({"id": "e", "type": "subscription.updated", "created": now}).encode(),
        "unknown status": json.dumps(event(external, "paused")).encode(),
        "unknown type": json.dumps({**good, "type": "invoice.paid"}).encode(),
        "no created": json.dumps({**good, "created": "yesterday"}).encode(),
        "bad date": json.dumps(event(external, startDate="soon")).encode(),
        "a date past the year 9999": json.dumps(event(external, startDate="9999-12-31T23:59:59-23:59")).encode(),
        "created past the year 9999": json.dumps(event(external, created=10**13)).encode(),
    }
    for reason, raw_body in bad_bodies.items():
        status, body = await post(billing_server, raw_body)
        assert (status, body["error"]["code"]) == (400, "BAD_USER_INPUT"), reason
    big = b"x" * (300 * 1024)
    status, body = await post(billing_server, big)
    assert status == 413
    # Nothing of these was applied; and a server with no secret has no webhook.
    async with billing_server.deps.db.session() as session:
        assert (
            await session.scalar(text("SELECT count(*) FROM subscriptions WHERE external_id = :e"), {"e": external})
            == 0
        )
    assert (await post(server, good))[0] == 404


async def test_concurrent_deliveries_of_one_event_apply_it_once(billing_server: LiveServer) -> None:
    server = billing_server
    user = await new_user(server)
    user_id = (await server.data("{ me { id } }", token=user))["me"]["id"]
    once = event(f"sub_{uuid.uuid4().hex[:10]}", userId=user_id)
    results = await asyncio.gather(*(post(server, once) for _ in range(10)))
    assert Counter("duplicate" if body.get("duplicate") else body.get("applied") for _, body in results) == {
        True: 1,
        "duplicate": 9,
    }
    assert len((await server.data(MINE, token=user))["billingSubscriptions"]["nodes"]) == 1
